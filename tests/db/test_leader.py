"""The maintenance leader: one worker at a time runs rescue, expiry and pruning, and another takes over
when it dies. A rescued job backs off like any failure."""

import uuid
from datetime import timedelta

from django.utils import timezone

from jobs.leader import Leadership
from jobs.models import Leadership as LeadershipRow


def test_only_one_of_two_workers_leads_until_its_lease_expires_or_it_lets_go(db):
    first, second = Leadership(uuid.uuid4()), Leadership(uuid.uuid4())
    assert first.held() and not second.held()
    assert first.held() and not second.held(), "renewed, not taken"
    LeadershipRow.objects.update(expires_at=timezone.now() - timedelta(seconds=1))  # the leader froze
    assert second.held()
    assert not first.held(), "a leader that wakes up learns it no longer leads"
    second.release()
    assert first.held()
