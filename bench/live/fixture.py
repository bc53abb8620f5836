"""The bench's own database and Redis, Django on them, and the fixture every part uses: a logged-in member of
the team that owns the bench's runs. Light at import (Django comes inside the functions): the viewers'
process imports it too."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/kdweb_bench_live"
REDIS_URL = "redis://127.0.0.1:6379/5"  # db 0 is the tests' and `make up`'s
SERIES = ("loss/task", "loss/output", "loss/feature", "loss/attention", "loss/total", "lr")  # what train() logs
EMIT_SERIES = "bench/emit_s"  # value: time.time() at the end of the step whose flush carries it


def reset_services(database_url: str, redis_url: str) -> None:
    """Drop and create the bench database and empty the bench Redis database: every run starts alike.

    Both are the bench's own; names that look like someone else's are refused before anything is dropped.
    """
    import psycopg
    import redis
    from psycopg import sql

    name = urlparse(database_url).path.lstrip("/")
    if "bench" not in name:
        raise SystemExit(f"error: the bench drops and recreates its database; {name!r} has no 'bench' in its name")
    if urlparse(redis_url).path.strip("/") in ("", "0"):
        raise SystemExit("error: the bench empties its Redis database; use one other than 0 (e.g. /5)")
    with psycopg.connect(database_url, dbname="postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    redis.Redis.from_url(redis_url).flushdb()


def setup_django() -> None:
    """Django with the environment this process was given (the bench's DATABASE_URL and REDIS_URL)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kdweb.settings")
    django.setup()


def create_schema(scratch: Path) -> str:
    """Migrate the fresh database. When jobs' models are ahead of its migrations (a change in progress),
    jobs' tables come from a migration made now from the models, so the bench measures the tree as it is."""
    from django.conf import settings
    from django.core.management import call_command

    try:
        call_command("makemigrations", "jobs", check_changes=True, dry_run=True, verbosity=0)
    except SystemExit:
        package = scratch / "bench_jobs_migrations"
        package.mkdir()
        (package / "__init__.py").touch()
        sys.path.insert(0, str(scratch))
        settings.MIGRATION_MODULES = {"jobs": package.name}
        call_command("makemigrations", "jobs", verbosity=0)
        call_command("migrate", verbosity=0)
        return "models (jobs' models are ahead of its migrations: migrated from a migration made from them)"
    call_command("migrate", verbosity=0)
    return "migrations"


@dataclass
class Fixture:
    """A user logged in through a session, member of the team that owns the bench's runs."""

    user: Any
    team: Any
    teacher: Any
    dataset: Any
    cookie: str


def create_fixture() -> Fixture:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from jobs.models import DatasetSpec, Membership, Teacher, Team

    team = Team.objects.create(name="bench")
    user = get_user_model().objects.create_user(username="bench")
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    teacher = Teacher.objects.create(team=team, name="bench", source="package:bench", architecture={"labels": ["a"]})
    dataset = DatasetSpec.objects.create(team=team, name="bench", source="packaged:bench", labels=["a"])
    client = Client()
    client.force_login(user)  # a real session row, as the login page makes
    return Fixture(user, team, teacher, dataset, client.cookies[settings.SESSION_COOKIE_NAME].value)


def create_run(fx: Fixture, name: str, total_steps: int = 0):
    from jobs.models import Run

    return Run.objects.create(
        team=fx.team,
        name=name,
        kind=Run.Kind.KD_FEATURE,
        teacher=fx.teacher,
        dataset=fx.dataset,
        config={},
        status=Run.Status.RUNNING,
        total_steps=total_steps,
        queue="bench",
        created_by=fx.user,
    )
