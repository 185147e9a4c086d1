"""The worker's completer and slots in-process, on the real database: what a handler returns is
made storable, a value the database refuses fails only its own job, and a slot that dies is replaced."""

import json

import pytest

from jobs.storable import storable_json, storable_text


def test_storable_text_replaces_nul_and_lone_surrogates():
    assert storable_text("a\x00b\ud800c\udfff😀") == "a\ufffdb\ufffdc\ufffd😀"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ({"a\x00": ["b\ud800", {"c": "\x00"}]}, {"a\ufffd": ["b\ufffd", {"c": "\ufffd"}]}),
        # A backslash followed by "u0000" is text, not a NUL.
        ("\\u0000 and \\\x00", "\\u0000 and \\\ufffd"),
        ([1, 2.5, None, True], [1, 2.5, None, True]),
    ],
)
def test_storable_json_fixes_keys_and_values_at_any_depth(value, expected):
    stored, size = storable_json(value)
    assert stored == expected
    assert size == len(json.dumps(expected, ensure_ascii=False).encode())


@pytest.mark.parametrize("value", [float("nan"), {1, 2}, 10**5000], ids=["nan", "set", "huge-int"])
def test_storable_json_refuses_what_is_no_json(value):
    with pytest.raises((ValueError, TypeError)):
        storable_json(value)
