"""Deployment files: docker-compose, the Dockerfile, monitoring provisioning, and the production settings."""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it; apt-get install docker-compose)"
)
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "skipjack.json"


def compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run docker-compose on the repository's file, with none of the caller's compose settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "SECRET_KEY"))}
    return subprocess.run(
        [COMPOSE, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), *args],
        cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60,
    )


@needs_compose
@pytest.mark.parametrize("profile", [[], ["--profile", "monitoring"]])
def test_compose_file_is_valid(profile):
    """Pass `docker-compose config -q`, with and without the monitoring profile, and no .env file."""
    result = compose(*profile, "config", "-q")
    assert result.returncode == 0, result.stderr


@needs_compose
def test_every_service_has_a_healthcheck_and_workers_can_scale():
    """Give each service a health check; keep the worker free of names and ports that would stop --scale."""
    result = compose("--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]

    assert set(services) == {"postgres", "redis", "web", "worker", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:3] == ["python", "manage.py", "runworker"]
    assert "worker_health" in worker["healthcheck"]["test"]
    assert "/readyz/" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["worker"]["image"] == services["web"]["image"]
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]


def test_dockerfile_is_multi_stage_non_root_and_collects_static_files():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) == 2 and all(image.endswith("-slim") for image in stages)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "collectstatic --noinput" in dockerfile
    assert "DJANGO_SETTINGS_MODULE=queueproject.settings_production" in dockerfile


def test_prometheus_scrapes_the_web_service_and_grafana_reads_prometheus():
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    web = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "skipjack-web")
    assert web["metrics_path"] == "/metrics"
    assert web["dns_sd_configs"][0]["names"] == ["web"] and web["dns_sd_configs"][0]["port"] == 8000

    datasources = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "skipjack.yml").read_text()
    )["providers"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {datasources[0]["uid"]}
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def test_prometheus_sends_the_web_services_metrics_token():
    """Scrape with a bearer token read from the file the Prometheus service's entrypoint writes METRICS_TOKEN to."""
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    web = next(job for job in prometheus["scrape_configs"] if job["job_name"] == "skipjack-web")
    token_file = web["authorization"]["credentials_file"]
    assert web["authorization"].get("type", "Bearer") == "Bearer"

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    assert service["environment"]["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    shell, flag, script, name = service["entrypoint"]
    assert (shell, flag) == ("/bin/sh", "-c") and token_file in script
    # The script as the container runs it (compose turns $$ into $), on paths of this machine.
    script = script.replace("$$", "$")
    with tempfile.TemporaryDirectory() as scratch:
        written, binary = os.path.join(scratch, "metrics_token"), os.path.join(scratch, "prometheus")
        with open(binary, "w") as fake:
            fake.write('#!/bin/sh\necho "started with $* and $(cat ' + written + ')"\n')
        os.chmod(binary, 0o755)  # noqa: S103 - a stand-in program, run by the test
        local = script.replace(token_file, written).replace("/bin/prometheus", binary)

        def start(token):
            return subprocess.run([shell, flag, local, name, *service["command"]], capture_output=True, text=True,
                                  env={"PATH": os.environ["PATH"], **({"METRICS_TOKEN": token} if token else {})},
                                  timeout=30)

        refused = start(None)
        assert refused.returncode == 1 and "Set METRICS_TOKEN" in refused.stderr
        assert not os.path.exists(written)
        started = start("tok3n-from-env")
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"started with {' '.join(service['command'])} and tok3n-from-env"
        assert os.stat(written).st_mode & 0o077 == 0


@needs_compose
def test_compose_gives_web_and_prometheus_the_same_metrics_token():
    """Pass METRICS_TOKEN from .env or the environment to the web service and to Prometheus alike."""
    result = compose("--profile", "monitoring", "config", env={"METRICS_TOKEN": "shared-token", "SECRET_KEY": "x" * 50})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["web"]["environment"]["METRICS_TOKEN"] == "shared-token"
    assert services["prometheus"]["environment"]["METRICS_TOKEN"] == "shared-token"


def production_env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SKIPJACK_REQUIRE_SECRET_KEY", "LOG_FORMAT")}
    env.update(
        DJANGO_SETTINGS_MODULE="queueproject.settings_production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="jobs.example.com",
        DATABASE_URL=os.environ.get("DATABASE_URL") or "postgres://skipjack@127.0.0.1:5432/skipjack",
        REDIS_URL=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def manage(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_check_deploy_is_clean_with_production_settings():
    """Report no deployment issue from `manage.py check --deploy`: secure cookies, HSTS, HTTPS redirect, DEBUG off."""
    result = manage("check", "--deploy", "--tag", "security", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr

    everything = manage("check", "--deploy", env=production_env())
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert "(security." not in everything.stdout + everything.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"])
def test_production_settings_refuse_to_start_without_their_environment(missing):
    result = manage("check", env=production_env(**{missing: None}))
    assert result.returncode != 0
    assert missing in result.stderr


def test_production_settings_refuse_debug():
    result = manage("check", env=production_env(DEBUG="1"))
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"SECRET_KEY": "change-me"}, "SECRET_KEY must be at least 50 random characters"),
    ({"SECRET_KEY": "ab" * 40}, "SECRET_KEY must be at least 50 random characters"),
    ({"SECRET_KEY": "django-insecure-" + secrets.token_urlsafe(50)}, "SECRET_KEY must be at least 50 random characters"),
    ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must name the site's host names"),
    ({"ALLOWED_HOSTS": "jobs.example.com, *"}, "ALLOWED_HOSTS must name the site's host names"),
])
def test_production_settings_refuse_a_weak_secret_key_and_any_host(overrides, message):
    """Refuse to start with a key Django's deployment check would flag, or with ALLOWED_HOSTS=*."""
    result = manage("check", env=production_env(**overrides))
    assert result.returncode != 0
    assert message in result.stderr


def test_the_images_build_time_settings_pass_the_production_checks():
    """Load the production settings with the variables the Dockerfile gives collectstatic."""
    run = re.search(r"^RUN ((?:\w+=\S+\s+(?:\\\n\s*)?)+)python manage.py collectstatic",
                    (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    build_env = dict(item.split("=", 1) for item in run.group(1).replace("\\", " ").split())
    assert set(build_env) >= {"SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL"}
    result = manage("check", env=production_env(**build_env))
    assert result.returncode == 0, result.stderr


def compose_environment(service: str, **env) -> dict:
    """Return the environment docker-compose gives `service` with its defaults, and `env` set."""
    result = compose("--profile", "monitoring", "config", env=env)
    assert result.returncode == 0, result.stderr
    return {name: str(value) for name, value in yaml.safe_load(result.stdout)["services"][service]["environment"].items()}


def published_on(config: str) -> str:
    """Return the host address `docker-compose config` output publishes the web port on (v1 and v2 syntax; all: 0.0.0.0)."""
    (port,) = yaml.safe_load(config)["services"]["web"]["ports"]
    if isinstance(port, str):
        return port.split(":")[0] if port.count(":") == 2 else "0.0.0.0"  # noqa: S104 - an address compared to, not bound
    return port.get("host_ip", "0.0.0.0")  # noqa: S104 - compose's default, not bound


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@needs_compose
def test_grafana_has_no_default_password_and_refuses_to_start_without_one(tmp_path):
    """Start Grafana's entrypoint only with a GRAFANA_ADMIN_PASSWORD of one's own: not empty, admin or change-me."""
    assert compose_environment("grafana")["GF_SECURITY_ADMIN_PASSWORD"] in ("", "None")
    assert compose_environment("grafana", GRAFANA_ADMIN_PASSWORD="s3cret-pass")["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-pass"
    assert "GRAFANA_ADMIN_PASSWORD=\n" in (ROOT / ".env.example").read_text()

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    shell, flag, script, name = service["entrypoint"]
    # The script as the container runs it (compose turns $$ into $), with a stand-in for the image's /run.sh.
    run_sh = tmp_path / "run.sh"
    run_sh.write_text('#!/bin/sh\necho "grafana started $*"\n')
    run_sh.chmod(0o755)
    local = script.replace("$$", "$").replace("/run.sh", str(run_sh))

    def start(password):
        env = {"PATH": os.environ["PATH"], **({"GF_SECURITY_ADMIN_PASSWORD": password} if password is not None else {})}
        return subprocess.run([shell, flag, local, name, "--homepath=/x"], capture_output=True, text=True, env=env,
                              timeout=30)

    for refused in (None, "", "admin", "change-me"):
        result = start(refused)
        assert result.returncode == 1 and "Set GRAFANA_ADMIN_PASSWORD" in result.stderr, refused
    started = start("s3cret-pass")
    assert started.returncode == 0 and started.stdout.strip() == "grafana started --homepath=/x", started.stderr
