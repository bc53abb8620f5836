"""``manage.py watchdog``: mark runs whose worker stopped heartbeating ``interrupted``, and send queued runs
that never reached the broker, periodically.

A worker that dies (SIGKILL, out of memory, a lost host) cannot say so; its run's heartbeat goes stale. A run
queued while the broker was down was committed but never sent. This loop, one per deployment (``make up``
and docker-compose start it), finds both every ``KDWEB_WATCHDOG_EVERY_S`` seconds; ``--once`` suits cron. A
worker restarting under its old name interrupts its own stale runs at start-up too (``jobs.worker.tasks``).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from jobs import services


class Command(BaseCommand):
    help = (
        "Mark running runs without a recent heartbeat as interrupted (they can then be resumed), and send queued "
        "runs whose message never reached the broker."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="check once and exit (for cron)")
        parser.add_argument(
            "--stale-after", type=float, default=settings.KDWEB_STALE_AFTER_S, help="seconds (KDWEB_STALE_AFTER_S)"
        )
        parser.add_argument(
            "--every", type=float, default=settings.KDWEB_WATCHDOG_EVERY_S, help="seconds (KDWEB_WATCHDOG_EVERY_S)"
        )

    def handle(self, *args, once: bool, stale_after: float, every: float, **options) -> None:
        if stale_after <= settings.KDWEB_HEARTBEAT_S:
            raise CommandError(
                f"--stale-after ({stale_after:g} s) must exceed the heartbeat interval "
                f"(KDWEB_HEARTBEAT_S = {settings.KDWEB_HEARTBEAT_S:g} s), or live runs would be interrupted"
            )
        self.stdout.write(
            f"watchdog: runs silent for {stale_after:g} s are marked interrupted; queued runs never sent are sent"
        )
        while True:
            try:
                for run_id in services.runs_interrupt(stale_after_s=stale_after):
                    self.stdout.write(f"run {run_id}: no heartbeat for {stale_after:g} s, marked interrupted")
                for run_id in services.runs_send_unsent():
                    self.stdout.write(f"run {run_id}: sent to the broker")
            except DatabaseError as exc:  # a database restart must not end the watch
                self.stderr.write(f"watchdog: database unavailable ({exc}); retrying")
                connection.close()
            except services.BrokerError as exc:  # nor a broker restart: its runs wait for the next round
                self.stderr.write(f"watchdog: broker unavailable ({exc}); retrying")
            if once:
                return
            time.sleep(every)
