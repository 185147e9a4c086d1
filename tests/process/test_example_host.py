"""examples/hostproject: a Django project of its own, with Skipjack pip-installed into it, end to end.

The README's block of commands for it runs as written, in a fresh clone and
a fresh virtualenv (no download: it reuses the tests' packages): pip
installs the repository, so every module, template, static file and SQL
statement the project uses comes from the installed package, not from this
checkout. The project has its own user model, settings and URLs, and its
own database: its migrations of the jobs app point at its users, not at
this project's.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.conftest import ROOT, database_url_for_tests, free_port, wait_for
from tests.fresh_clone import fresh_clone, reusing_venv
from tests.process.test_readme import HOST_BLOCK, readme_blocks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

PASSWORD = "correct-horse-battery-staple"  # the README's
METRICS_TOKEN = "host-metrics-token-0123456789"


class Host:
    """The example project, copied to a directory of its own, run by the virtualenv Skipjack is installed into."""

    def __init__(self, directory: Path, venv: Path, database_url: str):
        self.directory = directory
        self.python = str(venv / "bin" / "python")
        drop = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")
        self.env = {key: value for key, value in os.environ.items()
                    if key not in drop and not key.startswith(("JOBS_", "SKIPJACK_", "DASHBOARD_", "METRICS_"))}
        self.env.update(DATABASE_URL=database_url, REDIS_URL=settings.REDIS_URL, METRICS_TOKEN=METRICS_TOKEN,
                        PYTHONUNBUFFERED="1", DJANGO_SUPERUSER_PASSWORD=PASSWORD)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, *args], cwd=self.directory, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run("manage.py", *args, timeout=timeout)

    def shell(self, code: str):
        """Run `code` in the project's `manage.py shell`; return the JSON it printed last."""
        done = self.manage("shell", "--no-imports", "-c", code)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def host_database():
    """A database of the test server's for the example project alone; dropped afterwards."""
    name = f"{connection.settings_dict['NAME']}_host_example"
    params = {**connection.get_connection_params(), "dbname": "postgres", "autocommit": True}
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield database_url_for_tests().rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(**params) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def readme_host_block() -> list[str]:
    (block,) = [block for block in readme_blocks() if block[:1] == [HOST_BLOCK]]
    return block


def test_a_project_of_its_own_installs_skipjack_and_runs_its_tasks_end_to_end(tmp_path, host_database):
    """The README's commands, then @task functions enqueued, run, read back, and seen on the mounted dashboard."""
    clone = fresh_clone(tmp_path / "skipjack")
    venv = reusing_venv(tmp_path / "venv")
    # The virtualenv's own `pip` command, as pip installs it, running the pip it reuses.
    pip = venv / "bin" / "pip"
    pip.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\n\nfrom pip._internal.cli.main import main\n\n"
                   "sys.exit(main())\n")
    pip.chmod(0o755)
    host = Host(clone / "examples" / "hostproject", venv, host_database)
    block = readme_host_block()
    assert block[:2] == [HOST_BLOCK, "pip install ../.."], block
    # As a terminal runs them, one after the other, in the virtualenv; the test's database instead of the README's.
    script = "\n".join(["set -euo pipefail", *(line for line in block if not line.startswith("export DATABASE_URL="))])
    shell_env = {**host.env, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PIP_NO_INDEX": "1",
                 "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    ran = subprocess.run(["bash", "-c", script], cwd=clone, env=shell_env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Applying jobs.0001_initial" in ran.stdout and "Applying shop.0001_initial" in ran.stdout
    assert "Superuser created successfully." in ran.stdout
    # queue_status's table: the one task enqueued, completed by the burst worker.
    header = next(line.split() for line in ran.stdout.splitlines() if line.startswith("queue "))
    totals = next(line.split() for line in ran.stdout.splitlines() if line.startswith("all "))
    assert dict(zip(header, totals, strict=True))["completed"] == totals[-1] == "1", ran.stdout

    where = host.run("-c", "import importlib.util as u, jobs, dashboard; "
                           "print(jobs.__file__, dashboard.__file__, u.find_spec('queueproject'), u.find_spec('accounts'))")
    assert where.returncode == 0, where.stderr
    jobs_file, dashboard_file, queueproject, accounts = where.stdout.split()
    assert jobs_file.startswith(str(venv)) and "/site-packages/jobs/" in jobs_file  # the installed copy
    assert dashboard_file.startswith(str(venv)) and "/site-packages/dashboard/" in dashboard_file
    assert queueproject == accounts == "None"  # this repository's own project is not installed
    check = host.manage("check")
    assert check.returncode == 0 and "no issues" in check.stdout, check.stdout + check.stderr
    found = host.manage("findstatic", "dashboard/dashboard.css", "dashboard/vendor/htmx-2.0.11.min.js")
    assert found.returncode == 0 and found.stdout.count(f"{venv}/lib/") == 2, found.stdout + found.stderr

    ids = host.shell(
        "import json\n"
        "from shop.models import Customer, Order\n"
        "from shop.tasks import add, refund, send_receipt\n"
        "order = Order.objects.create(customer=Customer.objects.get(username='ada'), total_cents=1250)\n"
        "print(json.dumps({'order': order.pk, 'add': add.enqueue(2, 3).id,\n"
        "                  'receipt': send_receipt.enqueue(order.pk).id, 'refund': refund.enqueue(order.pk).id}))\n"
    )
    worker = host.manage("runworker", "--burst", "--concurrency", "2", timeout=120)
    assert worker.returncode == 0, worker.stdout + worker.stderr

    results = host.shell(
        "import json\n"
        "from shop.models import Order\n"
        "from shop.tasks import add, refund, send_receipt\n"
        f"ids = {ids!r}\n"
        "add_result, receipt, failed = (add.get_result(ids['add']), send_receipt.get_result(ids['receipt']),\n"
        "                               refund.get_result(ids['refund']))\n"
        "print(json.dumps({'add': [add_result.status.name, add_result.return_value],\n"
        "                  'receipt': [receipt.status.name, receipt.return_value, receipt.attempts],\n"
        "                  'refund': [failed.status.name, [e.exception_class_path for e in failed.errors]],\n"
        "                  'sent': Order.objects.get(pk=ids['order']).receipt_sent}))\n"
    )
    assert results["add"] == ["SUCCESSFUL", 5]
    assert results["receipt"] == ["SUCCESSFUL", {"order": ids["order"], "sent": True, "attempt": 1}, 1]
    # Failed once, waiting out its 30 s backoff before the next attempt.
    assert results["refund"] == ["READY", ["builtins.ValueError"]]
    assert results["sent"] is True

    port = free_port()
    server = subprocess.Popen(
        [host.python, "-m", "uvicorn", "hostproject.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log"],
        cwd=host.directory, env=host.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            assert server.poll() is None, "the example project's server exited"
            try:
                return requests.get(f"{base}/accounts/login/", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, timeout=60, interval=0.2, message="the example project's server")
        browser = requests.Session()
        page = browser.get(f"{base}/skipjack/jobs/", timeout=10)
        assert page.url.startswith(f"{base}/accounts/login/?next=/skipjack/jobs/")  # the project's own login
        assert "Log in to the shop" in page.text
        signed_in = browser.post(page.url, timeout=10, data={
            "username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        })
        assert signed_in.status_code == 200 and signed_in.url == f"{base}/skipjack/jobs/", signed_in.text[:2000]
        for name in ("shop.tasks.add", "shop.tasks.send_receipt", "shop.tasks.refund"):
            assert name in signed_in.text
        assert f'href="/skipjack/jobs/{ids["add"]}/"' in signed_in.text
        assert 'action="/skipjack/logout/"' in signed_in.text
        assert 'ws-connect="/skipjack/ws/events/"' in signed_in.text
        detail = browser.get(f"{base}/skipjack/jobs/{ids['refund']}/", timeout=10)
        assert detail.status_code == 200 and "ValueError" in detail.text and "cannot be refunded" in detail.text

        # The project's REST_FRAMEWORK names only its authentication: DRF's defaults would let anyone in
        # (AllowAny) and answer a browser in HTML; the API keeps its own rules.
        api = browser.get(f"{base}/skipjack/api/jobs/", headers={"Accept": "text/html"}, timeout=10)
        assert api.status_code == 200 and api.headers["Content-Type"] == "application/json", api.text
        assert {job["type"]: job["status"] for job in api.json()["results"]} == {
            "shop.tasks.add": "completed", "shop.tasks.send_receipt": "completed", "shop.tasks.refund": "retrying",
        }
        anonymous = requests.get(f"{base}/skipjack/api/jobs/", headers={"Accept": "text/html"}, timeout=10)
        assert anonymous.status_code == 403 and anonymous.json() == {
            "detail": "Authentication credentials were not provided."}

        metrics = requests.get(f"{base}/skipjack/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                               timeout=10)
        assert metrics.status_code == 200 and "skipjack_queue_metrics_up 1.0" in metrics.text
        assert re.search(r'skipjack_jobs\{queue="emails",status="completed"\} 1\.0', metrics.text), metrics.text
        assert requests.get(f"{base}/skipjack/metrics", timeout=10).status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=15)

    serve = host.manage("serve")
    assert serve.returncode == 1
    assert serve.stderr.strip().splitlines()[-1].startswith("CommandError: serve runs Skipjack's own project")


def test_runworker_is_the_queue_s_only_when_jobs_comes_before_channels(tmp_path, host_database):
    """Django runs the first app's command of a name: the check says so, and names the fix, if channels is first."""
    directory = shutil.copytree(ROOT / "examples" / "hostproject", tmp_path / "hostproject")
    settings_file = directory / "hostproject" / "settings.py"
    settings_file.write_text(settings_file.read_text()
                             + '\nINSTALLED_APPS.remove("channels")\nINSTALLED_APPS.insert(0, "channels")\n')
    host = Host(directory, Path(sys.prefix), host_database)
    host.env["PYTHONPATH"] = str(ROOT)  # Skipjack from this checkout: the check is what is tested here
    check = host.manage("check")
    assert check.returncode == 1
    assert ('(jobs.E004) "channels" comes before "jobs" in INSTALLED_APPS, so manage.py runworker would run '
            "Channels' worker.") in check.stderr
    assert 'HINT: Put "jobs" before "channels" in INSTALLED_APPS.' in check.stderr
