"""Built-in job handlers and their payload validators, run directly: no worker, and no database (tests/db/test_handlers.py has the runs that read their job row)."""

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.test import override_settings

from jobs.errors import JobTimeout, PayloadError, PermanentError, UnknownJobType
from jobs.handlers.web import MAX_REDIRECTS, UnreachableDestination, is_refused_address
from jobs.registry import JobContext, get_handler, validate_payload
from tests.examples import examples

# The programs the tests run, and the examples' /bin/echo.
shell_enabled = override_settings(
    JOBS_ENABLE_SHELL_COMMANDS=True,
    JOBS_SHELL_ALLOWED_COMMANDS=(sys.executable, "/bin/echo", "ls", "/nonexistent/no-such-program"),
)
private_allowed = override_settings(JOBS_SCRAPE_ALLOW_PRIVATE=True)
private_refused = override_settings(JOBS_SCRAPE_ALLOW_PRIVATE=False)


def run(type_name, payload, **context):
    """Validate `payload` for `type_name`, run the handler on it and return the result."""
    payload = validate_payload(type_name, payload)
    job = JobContext(**{"job_id": 1, "type": type_name, "payload": payload, "attempt": 1, **context})
    return get_handler(type_name).func(job)


def field_errors(type_name, payload):
    """Return the field errors `payload` fails validation with."""
    with pytest.raises(PayloadError) as excinfo:
        validate_payload(type_name, payload)
    return excinfo.value.errors


@shell_enabled
def test_every_builtin_handler_has_a_one_line_description():
    """Describe every built-in type in one line, for pickers."""
    names = [
        "reverse_string", "uppercase_text", "fibonacci_calc", "sleep", "fail",
        "send_email", "process_video", "scrape_website", "run_command",
    ]  # fmt: skip
    for name in names:
        description = get_handler(name).description
        assert description and "\n" not in description, name


# Text


def test_reverse_string_reverses_text():
    """Return the text reversed."""
    assert run("reverse_string", {"text": "hello world"}) == "dlrow olleh"


def test_uppercase_text_uppercases_text():
    """Return the text in upper case."""
    assert run("uppercase_text", {"text": "hello world"}) == "HELLO WORLD"


@pytest.mark.parametrize(("type_name", "expected"), [("reverse_string", "dlrow olleh"), ("uppercase_text", "HELLO WORLD")])
def test_text_types_accept_a_bare_string(type_name, expected):
    """Normalize a bare string payload to {"text": ...}."""
    assert validate_payload(type_name, "hello world") == {"text": "hello world"}
    assert run(type_name, "hello world") == expected


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({}, {"text": ["This field is required."]}),
        (None, {"text": ["This field is required."]}),
        ({"text": 5}, {"text": ["Must be a string."]}),
        (5, {"text": ["Must be a string."]}),
        (True, {"text": ["Must be a string."]}),
        ({"text": "x" * 10_001}, {"text": ["Must be at most 10000 characters."]}),
        ({"text": "hi", "txt": "typo"}, {"txt": ["Unknown field."]}),
        (["hello"], {"payload": ["Must be a JSON object."]}),
    ],
)
def test_text_payload_errors_name_the_field(payload, errors):
    """Refuse a bad text payload with a message on the offending field."""
    assert field_errors("reverse_string", payload) == errors


def test_text_accepts_the_maximum_length():
    """Accept text exactly at the length cap."""
    assert len(run("uppercase_text", "x" * 10_000)) == 10_000


# Fibonacci


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 1), (2, 1), (3, 2), (10, 55), (50, 12586269025)])
def test_fibonacci_returns_the_nth_number(n, expected):
    """Return F(n), with F(0) = 0 and F(1) = 1."""
    assert run("fibonacci_calc", {"n": n}) == expected


def test_fibonacci_computes_the_upper_bound_without_recursion():
    """Compute F(1000), far past the recursion limit a naive version would hit."""
    result = run("fibonacci_calc", 1000)
    assert result == run("fibonacci_calc", 999) + run("fibonacci_calc", 998)
    assert str(result).startswith("4346655768693745643")


def test_fibonacci_accepts_a_bare_int():
    """Normalize a bare int payload to {"n": ...}."""
    assert validate_payload("fibonacci_calc", 10) == {"n": 10}


@pytest.mark.parametrize("n", [-1, 1001, True, False, 10.0, "10", None])
def test_fibonacci_refuses_n_out_of_bounds_or_not_an_int(n):
    """Refuse n outside 0..1000, booleans, floats and strings."""
    assert field_errors("fibonacci_calc", {"n": n}) == {"n": ["Must be an integer between 0 and 1000."]}


# sleep and fail


def test_sleep_sleeps_and_reports_the_seconds():
    """Sleep for the given time and return it."""
    started = time.monotonic()
    assert run("sleep", {"seconds": 0.05}) == {"slept": 0.05}
    assert time.monotonic() - started >= 0.05


def test_sleep_accepts_a_bare_number():
    """Normalize a bare number payload to {"seconds": ...}."""
    assert validate_payload("sleep", 2) == {"seconds": 2}
    assert validate_payload("sleep", 0.5) == {"seconds": 0.5}


def test_sleep_wakes_early_when_the_job_must_stop():
    """Raise JobTimeout soon after stop_requested is set, instead of sleeping on."""
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        run("sleep", {"seconds": 60}, stop_requested=stop)
    assert time.monotonic() - started < 5
    timer.join()


@pytest.mark.parametrize("seconds", [0, -1, 3601, True, "1", float("nan"), float("inf")])
def test_sleep_refuses_seconds_out_of_bounds(seconds):
    """Refuse a sleep that is not above 0 and at most an hour."""
    assert field_errors("sleep", {"seconds": seconds}) == {
        "seconds": ["Must be a number greater than 0 and at most 3600."]
    }


def test_fail_raises_a_retryable_error_by_default():
    """Raise a plain RuntimeError, which the queue retries."""
    with pytest.raises(RuntimeError, match="Failed on purpose.") as excinfo:
        run("fail", {})
    assert not isinstance(excinfo.value, PermanentError)


def test_fail_raises_permanent_error_when_asked():
    """Raise PermanentError with the given message, sending the job straight to the DLQ."""
    with pytest.raises(PermanentError, match="^disk on fire$"):
        run("fail", {"message": "disk on fire", "permanent": True})


def test_fail_fills_in_defaults():
    """Accept an empty payload and fill in the message and permanent flag."""
    assert validate_payload("fail", None) == {"message": "Failed on purpose.", "permanent": False}


def test_fail_payload_errors_name_the_field():
    """Refuse a non-boolean permanent flag, a non-string message and unknown keys."""
    assert field_errors("fail", {"message": 1, "permanent": "yes", "permament": True}) == {
        "message": ["Must be a string."],
        "permanent": ["Must be true or false."],
        "permament": ["Unknown field."],
    }


# send_email


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({}, {f: ["This field is required."] for f in ("to", "subject", "body")}),
        (
            {"to": ["ok@example.com", "nope"], "subject": "Hi", "body": ""},
            {"to": ["'nope' is not a valid email address."]},
        ),
        ({"to": [], "subject": "Hi", "body": ""}, {"to": ["Must not be empty."]}),
        ({"to": 5, "subject": "Hi", "body": ""}, {"to": ["Must be a string or a list of strings."]}),
        (
            {"to": [f"u{i}@example.com" for i in range(51)], "subject": "Hi", "body": ""},
            {"to": ["Must have at most 50 items."]},
        ),
        ({"to": "a@example.com", "subject": " ", "body": ""}, {"subject": ["This field may not be blank."]}),
        (
            {"to": "a@example.com", "subject": "Hi\nBcc: x@example.com", "body": ""},
            {"subject": ["Must not contain line breaks."]},
        ),
    ],
)
def test_send_email_payload_errors_name_the_field(payload, errors):
    """Refuse bad recipients, subjects and missing fields with field-level messages."""
    assert field_errors("send_email", payload) == errors


# process_video


def test_process_video_reports_ascending_progress_up_to_100():
    """Report progress after each step, ending at 100, and return a result derived from the payload."""
    progress = []
    payload = {"url": "https://example.com/cat.mov", "duration": 0.05, "steps": 4}
    result = run("process_video", payload, report_progress=progress.append)
    assert progress == [25, 50, 75, 100]
    assert set(result) == {"frames", "resolution", "output"}
    assert result == run("process_video", payload)


def test_process_video_defaults_to_ten_steps():
    """Report ten progress values when no step count is given."""
    progress = []
    run("process_video", {"duration": 0.01}, report_progress=progress.append)
    assert progress == list(range(10, 101, 10))


def test_process_video_stops_when_the_job_must_stop():
    """Raise JobTimeout at the next step once stop_requested is set."""
    stop = threading.Event()
    stop.set()
    progress = []
    with pytest.raises(JobTimeout):
        run("process_video", {"duration": 60}, stop_requested=stop, report_progress=progress.append)
    assert progress == []


def test_process_video_payload_errors_name_the_field():
    """Refuse bad duration, steps and url values."""
    assert field_errors("process_video", {"url": 5, "duration": 0, "steps": 101, "fps": 30}) == {
        "url": ["Must be a string."],
        "duration": ["Must be a number greater than 0 and at most 600."],
        "steps": ["Must be an integer between 1 and 100."],
        "fps": ["Unknown field."],
    }


# scrape_website


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ],
)
@private_refused
def test_scrape_refuses_loopback_private_and_link_local_destinations(url):
    """Refuse, permanently, a URL whose host is written as a non-public address."""
    with pytest.raises(PermanentError, match="not a public address"):
        run("scrape_website", url)


@pytest.mark.parametrize("url", ["http://localhost:8000/admin/", "http://2130706433/", "http://127.1/"])
@private_refused
def test_scrape_fails_a_name_that_resolves_to_a_non_public_address_as_unreachable(url):
    """Fail a URL whose host name resolves to a non-public address as any unreachable host fails, before connecting."""
    with pytest.raises(UnreachableDestination, match="its host is not public, does not resolve or did not answer"):
        run("scrape_website", url)


@pytest.mark.parametrize(
    "address",
    ["100.64.0.1", "224.0.0.1", "255.255.255.255", "ff02::1", "fe80::1%eth0", "fc00::1", "fec0::1", "::"],
)
def test_scrape_treats_shared_multicast_and_reserved_addresses_as_refused(address):
    """Refuse carrier-grade NAT, multicast, reserved, unique-local and unspecified addresses."""
    assert is_refused_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_scrape_allows_public_addresses(address):
    """Allow public IPv4 and IPv6 addresses, including IPv4-mapped ones."""
    assert not is_refused_address(address)


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ("ftp://example.com/", {"url": ["Must be an http or https URL."]}),
        ("example.com", {"url": ["Must be an http or https URL."]}),
        ("http://", {"url": ["Must include a host."]}),
        ("http://example.com:99999/", {"url": ["Enter a valid URL."]}),
        ({"url": ""}, {"url": ["This field may not be blank."]}),
        ({}, {"url": ["This field is required."]}),
    ],
)
def test_scrape_payload_errors_name_the_field(payload, errors):
    """Refuse non-http(s) URLs, URLs without a host and malformed ports."""
    assert field_errors("scrape_website", payload) == errors


def test_scrape_accepts_a_bare_url():
    """Normalize a bare string payload to {"url": ...}."""
    assert validate_payload("scrape_website", "https://example.com/") == {"url": "https://example.com/"}


PAGE = b"<html><head><title>\n  Hello,  Skipjack &amp; co </title></head><body><title>x</title></body></html>"


class _SiteHandler(BaseHTTPRequestHandler):
    """Serve the pages the scrape tests fetch, recording each request."""

    routes = {
        "/page": (200, {"Content-Type": "text/html; charset=utf-8"}, PAGE),
        "/plain": (200, {"Content-Type": "text/plain"}, b"<title>not html</title>"),
        "/big": (200, {"Content-Type": "text/plain"}, b"x" * 5000),
        "/redirect": (302, {"Location": "/page"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
        "/to-private": (302, {"Location": "http://10.0.0.1/"}, b""),
    }

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("User-Agent")))
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    """Serve _SiteHandler on a random local port; yield the server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SiteHandler)
    server.requests = []
    server.base_url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@private_allowed
def test_scrape_fetches_a_page_and_extracts_its_title(site):
    """Return the status, size, content type and first title of a real page."""
    result = run("scrape_website", {"url": f"{site.base_url}/page"})
    assert result == {
        "url": f"{site.base_url}/page",
        "status": 200,
        "bytes": len(PAGE),
        "content_type": "text/html; charset=utf-8",
        "title": "Hello, Skipjack & co",
    }
    [(path, user_agent)] = site.requests
    assert user_agent.startswith("Skipjack/")


@private_allowed
def test_scrape_returns_no_title_for_non_html(site):
    """Return a null title for a response that is not HTML."""
    result = run("scrape_website", f"{site.base_url}/plain")
    assert (result["content_type"], result["title"]) == ("text/plain", None)


@private_allowed
def test_scrape_returns_the_status_of_a_missing_page(site):
    """Return a 404 as a result rather than failing."""
    assert run("scrape_website", f"{site.base_url}/missing")["status"] == 404


@private_allowed
def test_scrape_follows_a_redirect_and_reports_the_final_url(site):
    """Follow a redirect hop and report where it ended."""
    result = run("scrape_website", f"{site.base_url}/redirect")
    assert (result["url"], result["title"]) == (f"{site.base_url}/page", "Hello, Skipjack & co")
    assert [path for path, _ in site.requests] == ["/redirect", "/page"]


@private_allowed
def test_scrape_refuses_endless_redirects(site):
    """Stop after five redirects with a PermanentError."""
    with pytest.raises(PermanentError, match="redirects"):
        run("scrape_website", f"{site.base_url}/loop")
    assert len(site.requests) == MAX_REDIRECTS + 1


@private_allowed
def test_scrape_refuses_a_redirect_to_another_scheme(site):
    """Refuse a redirect to a non-http(s) URL, even with private destinations allowed."""
    with pytest.raises(PermanentError, match="Must be an http or https URL"):
        run("scrape_website", f"{site.base_url}/to-file")


@override_settings(JOBS_SCRAPE_ALLOW_PRIVATE=True, JOBS_SCRAPE_MAX_BYTES=1000)
def test_scrape_refuses_a_response_over_the_size_cap(site):
    """Stop reading past JOBS_SCRAPE_MAX_BYTES and fail permanently."""
    with pytest.raises(PermanentError, match="larger than 1000 bytes"):
        run("scrape_website", f"{site.base_url}/big")


@private_allowed
def test_scrape_stops_reading_when_the_job_must_stop(site):
    """Raise JobTimeout instead of reading the body once stop_requested is set."""
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobTimeout):
        run("scrape_website", f"{site.base_url}/page", stop_requested=stop)


@private_refused
def test_scrape_refuses_a_redirect_to_a_private_address(site):
    """Check every redirect hop: refuse one to a private address even after a public first hop."""
    # Treat only 10/8 as private, so the test server on 127.0.0.1 stands in for a public site.
    with mock.patch("jobs.handlers.web.is_refused_address", lambda address: address.startswith("10.")):
        with pytest.raises(PermanentError, match="10.0.0.1"):
            run("scrape_website", f"{site.base_url}/to-private")
    assert [path for path, _ in site.requests] == ["/to-private"]

# run_command



@override_settings(JOBS_ENABLE_SHELL_COMMANDS=False)
def test_run_command_is_unknown_unless_enabled():
    """Hide run_command from lookup and validation unless JOBS_ENABLE_SHELL_COMMANDS is set."""
    with pytest.raises(UnknownJobType):
        get_handler("run_command")
    with pytest.raises(UnknownJobType):
        validate_payload("run_command", {"argv": ["true"]})


@shell_enabled
def test_run_command_is_staff_only():
    """Mark run_command staff-only, for the submission checks to enforce."""
    assert get_handler("run_command").staff_only


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({}, {"argv": ["This field is required."]}),
        ({"argv": "ls -l"}, {"argv": ["Must be a list of strings."]}),
        ({"argv": ["ls", 1]}, {"argv": ["Must be a list of strings."]}),
        ({"argv": []}, {"argv": ["Must not be empty."]}),
        ({"argv": [""]}, {"argv": ["The program name may not be blank."]}),
        ({"argv": ["ls", "a\0b"]}, {"argv": ["Must not contain NUL characters."]}),
        ({"argv": ["ls"], "timeout": 0}, {"timeout": ["Must be a number greater than 0 and at most 3600."]}),
        ({"argv": ["ls"], "shell": True}, {"shell": ["Unknown field."]}),
    ],
)
@shell_enabled
def test_run_command_payload_errors_name_the_field(payload, errors):
    """Refuse anything but a non-empty list of strings and a bounded timeout."""
    assert field_errors("run_command", payload) == errors


# Every type


@shell_enabled
@pytest.mark.parametrize(
    "type_name, payload",
    [(example.type, example.payload) for example in examples()] + [("fail", {}), ("process_video", {})],
    ids=str,
)
def test_a_validated_payload_validates_to_itself(type_name, payload):
    """Accept what a type's validator returns, unchanged: the API, enqueue and the worker each validate it again."""
    normalized = validate_payload(type_name, payload)
    assert validate_payload(type_name, normalized) == normalized


NUL = "Must not contain NUL characters."


@pytest.mark.parametrize(
    "type_name, payload, errors",
    [
        ("reverse_string", {"text": "a\x00b"}, {"text": [NUL]}),
        ("reverse_string", {"text": "\ud800"}, {"text": ["Must not contain the lone surrogate U+D800."]}),
        ("reverse_string", "a\x00b", {"payload": [NUL]}),
        ("send_email", {"to": ["ada@example.com", "\udfff@example.com"], "subject": "\x00", "body": ""},
         {"to": ["Must not contain the lone surrogate U+DFFF."], "subject": [NUL]}),
        ("record_effect", {"a": {"b": ["c", "d\x00"]}, "fine": "😀 \\u0000"}, {"a": [NUL]}),
        ("record_effect", {"a\x00": 1}, {"payload": ["Field names must not contain NUL characters."]}),
        ("record_effect", {"a": {"\ud83d": 1}}, {"a": ["Field names must not contain the lone surrogate U+D83D."]}),
        ("record_effect", ["\x00"], {"payload": [NUL]}),
    ],
)
def test_text_postgresql_cannot_store_is_refused_naming_the_field(type_name, payload, errors):
    """Refuse NUL and lone surrogates anywhere in a payload, keys included, before the type's own validator runs."""
    assert field_errors(type_name, payload) == errors
