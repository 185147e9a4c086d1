"""Live job events: the coalescing buffer, and the WebSocket consumer on the real Redis channel layer.

The sockets go through the real ASGI application (origin check, session
auth, routing), signed in with a session cookie as a browser is.
"""



from jobs import events
from tests.db.test_consumers import fast_password_hashing  # noqa: F401 - fixtures

# --- The buffer, without Redis ---------------------------------------------------------


def chunk(ids, owners, status, progress=None, created=False) -> events.Chunk:
    return events.Chunk(ids, owners, status, progress, created)


def test_batch_coalesces_changes_per_job():
    """Keep one entry per job: the latest status, and the latest progress."""
    batch = events.Batch()
    batch.add(chunk([1], [7], "queued", 0, created=True))
    batch.add(chunk([1], [7], "running", 0))
    batch.add(chunk([1], [7], None, 40))
    batch.add(chunk([1], [7], None, 60))
    messages = batch.messages(max_jobs=100)
    assert messages["user.7"]["jobs"] == [[1, "running", 60]]
    assert messages["user.7"]["created"] is True
    assert messages["staff"]["jobs"] == [[1, "running", 60]]


def test_batch_sends_one_message_per_owner_and_one_for_staff():
    """Address each owner's changes to that owner's group only, and all of them to staff."""
    batch = events.Batch()
    batch.add(chunk([1, 3], [7, None], "completed", 100))
    batch.add(chunk([2], [8], "dead"))
    messages = batch.messages(max_jobs=100)
    assert set(messages) == {"user.7", "user.8", "staff"}
    assert messages["user.7"]["jobs"] == [[1, "completed", 100]]
    assert messages["user.8"]["jobs"] == [[2, "dead", None]]
    assert messages["user.7"]["created"] is False
    assert [row[0] for row in messages["staff"]["jobs"]] == [1, 2, 3]


def test_batch_writes_only_to_watched_groups():
    """Build messages for the groups an open socket watches, and none for the others."""
    batch = events.Batch()
    batch.add(chunk([1, 2, 3], [1, 2, None], "completed", 100))
    assert set(batch.messages(max_jobs=100, watched={"user.1", "staff"})) == {"user.1", "staff"}
    assert set(batch.messages(max_jobs=100, watched={"user.2"})) == {"user.2"}
    assert batch.messages(max_jobs=100, watched=set()) == {}


def test_batch_says_resync_instead_of_listing_too_many_jobs():
    """Replace a long list of ids with a resync hint, for the owner and for staff, and keep listing for others."""
    batch = events.Batch()
    batch.add(chunk(list(range(150)), [7] * 150, "queued", 0, created=True))
    batch.add(chunk([500], [8], "queued", 0, created=True))
    messages = batch.messages(max_jobs=100)
    assert messages["user.7"]["resync"] is True and messages["user.7"]["jobs"] == []
    assert messages["staff"]["resync"] is True and messages["staff"]["created"] is True
    assert messages["user.8"] == {"type": events.MESSAGE_TYPE, "jobs": [[500, "queued", 0]], "resync": False,
                                  "created": True, "workers": False}


def test_batch_stays_bounded_when_it_overflows(monkeypatch):
    """Stop keeping changes past MAX_BUFFERED_JOBS, and still tell every owner to resync."""
    monkeypatch.setattr(events, "MAX_BUFFERED_JOBS", 10)
    batch = events.Batch()
    for n in range(25):
        batch.add(chunk([n], [n % 3 + 1], "queued", 0, created=True))
    assert batch.chunks == [] and batch.size == 0
    messages = batch.messages(max_jobs=100)
    assert set(messages) == {"user.1", "user.2", "user.3", "staff"}
    assert all(m["resync"] for m in messages.values())


def test_workers_changes_go_to_staff_only():
    """Send worker heartbeats to the staff group alone."""
    batch = events.Batch()
    batch.workers = True
    assert set(batch.messages(max_jobs=100)) == {"staff"}
