"""run_command's limits: allowed programs only, a clean environment, bounded output, staff to the end.

The handler runs here on the test database, and the whole path runs on real
servers: the API on uvicorn, PostgreSQL, Redis and a worker process.
"""


import pytest
import requests
from django.core.cache import cache

from tests.conftest import wait_for
from tests.db.test_run_command import SECRETS
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


# The whole path, on real servers.


def log_in(base: str, user) -> dict:
    tokens = requests.post(f"{base}/api/auth/token/", json={"username": user.username, "password": "correct-horse-battery"}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    return {"Authorization": f"Bearer {tokens.json()['access']}"}


def job_when(base: str, headers: dict, job_id: int, *statuses: str) -> dict:
    return wait_for(
        lambda: (job := requests.get(f"{base}/api/jobs/{job_id}/", headers=headers, timeout=30).json())["status"] in statuses and job,
        timeout=30, message=f"job {job_id} to be {' or '.join(statuses)}",
    )


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_commands_through_the_api_and_a_worker_keep_every_limit(start_server, start_worker):
    """Refuse a shell, run an allowed program without the worker's secrets, and stop a staff member's commands once demoted."""
    cache.clear()
    # The children keep the test database's and Redis's real URLs; the key is one the command must not see.
    env = {"SECRET_KEY": SECRETS["SECRET_KEY"], "JOBS_ENABLE_SHELL_COMMANDS": "1",
           "JOBS_SHELL_ALLOWED_COMMANDS": "/usr/bin/env,/bin/false"}
    base = start_server(env).wait_until_up().url
    start_worker("--poll-interval", "0.2", env=env)
    member = UserFactory(username="operator", is_staff=True)
    headers = log_in(base, member)

    def submit(payload, **options):
        return requests.post(f"{base}/api/jobs/", headers=headers, timeout=30,
                             json={"type": "run_command", "payload": payload, **options})

    shell = submit({"argv": ["/bin/sh", "-c", "env"]})
    assert shell.status_code == 400 and list(shell.json()["payload"]) == ["argv"], shell.text

    env_job = submit({"argv": ["/usr/bin/env"]})
    assert env_job.status_code == 201, env_job.text
    done = job_when(base, headers, env_job.json()["id"], "completed", "dead")
    assert done["status"] == "completed", done["error"]
    environment = done["result"]["stdout"]
    assert sorted(environment.splitlines()) == ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]
    assert SECRETS["SECRET_KEY"] not in environment

    failed = submit({"argv": ["/bin/false"]}, max_retries=0)
    assert job_when(base, headers, failed.json()["id"], "dead")["status"] == "dead"
    later = submit({"argv": ["/usr/bin/env"]}, delay=3)
    assert later.status_code == 201, later.text

    member.is_staff = False
    member.save()
    retried = requests.post(f"{base}/api/jobs/{failed.json()['id']}/retry/", headers=headers, timeout=30)
    assert retried.status_code == 409, retried.text
    requeued = requests.post(f"{base}/api/dlq/requeue/", headers=headers, json={"job_ids": [failed.json()["id"]]}, timeout=30)
    assert requeued.status_code == 200 and requeued.json()["requeued"] == 0, requeued.text
    ran_late = job_when(base, headers, later.json()["id"], "completed", "dead")
    assert ran_late["status"] == "dead" and "Only staff may submit run_command jobs" in ran_late["error"]
    assert ran_late["result"] is None
