"""/healthz/, /readyz/ and the worker's health check, against real PostgreSQL and Redis."""

import pytest
import requests
from django.db import connection
from django.test import Client, override_settings

from jobs import health

UNREACHABLE_DATABASE = "postgres://postgres@127.0.0.1:1/skipjack"


@pytest.fixture(autouse=True)
def forget_migration_check(monkeypatch):
    """Each test checks the migrations afresh instead of trusting an earlier test's result."""
    monkeypatch.setattr(health, "_migrations_applied", False)


def serving(url: str) -> bool:
    try:
        return requests.get(url + "/healthz/", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database(django_assert_num_queries):
    """Answer 200 while the process is up, with no query."""
    with django_assert_num_queries(0):
        response = Client().get("/healthz/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ok_when_every_component_answers():
    """Answer 200 with each component's state when PostgreSQL, Redis and the migrations are fine."""
    response = Client().get("/readyz/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok", "failing": [], "checks": {"database": "ok", "redis": "ok", "migrations": "ok"},
    }


@pytest.mark.django_db
def test_readyz_names_redis_when_it_is_unreachable():
    """Answer 503 naming Redis when nothing listens at REDIS_URL."""
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = Client().get("/readyz/")

    assert response.status_code == 503
    report = response.json()
    assert report["failing"] == ["redis"]
    assert report["checks"]["redis"].startswith("error: ConnectionError")
    assert report["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_names_the_migrations_when_one_is_not_applied():
    """Answer 503 naming the migrations when the database lacks one of them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'jobs' AND name = "
            "(SELECT max(name) FROM django_migrations WHERE app = 'jobs') RETURNING name"
        )
        (latest,) = cursor.fetchone()

    response = Client().get("/readyz/")

    assert response.status_code == 503
    report = response.json()
    assert report["failing"] == ["migrations"]
    assert f"jobs.{latest}" in report["checks"]["migrations"]


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["example.com"], SECURE_SSL_REDIRECT=True)
def test_probes_answer_at_any_address_over_plain_http():
    """Answer probes sent to an internal address over HTTP, which the rest of the site refuses or redirects."""
    client = Client(HTTP_HOST="10.0.0.7:8000")
    assert client.get("/healthz/").status_code == 200
    assert client.get("/readyz/").status_code == 200
    assert client.get("/admin/login/").status_code == 400
    assert Client(HTTP_HOST="example.com").get("/admin/login/").status_code == 301
