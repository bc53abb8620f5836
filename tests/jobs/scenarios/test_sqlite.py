"""The zero-setup SQLite database under two writers: a transaction that reads, lets another process write, then
writes itself (what sending a run does while the worker claims it) waits its turn instead of failing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

RACE = """
import threading
import django
django.setup()
from django.db import connection, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE race (id INTEGER PRIMARY KEY, sender TEXT, claimer TEXT)")
    cursor.execute("INSERT INTO race (id) VALUES (1)")

read = threading.Event()
claimed = []

def claim():  # the worker: its own connection, writing while the sender's transaction is open
    from django.db import connection as own
    read.wait()
    with own.cursor() as cursor:
        cursor.execute("UPDATE race SET claimer = 'worker' WHERE id = 1")
    claimed.append(True)
    own.close()

worker = threading.Thread(target=claim)
worker.start()
with transaction.atomic():
    with connection.cursor() as cursor:
        cursor.execute("SELECT sender FROM race WHERE id = 1")
        cursor.fetchone()
        read.set()
        worker.join(0.5)  # the claim runs now, or waits for this transaction to end
        cursor.execute("UPDATE race SET sender = 'web' WHERE id = 1")
worker.join(30)
with connection.cursor() as cursor:
    cursor.execute("SELECT sender, claimer FROM race WHERE id = 1")
    print("ROW", *cursor.fetchone(), len(claimed))
"""


def test_a_write_after_a_read_waits_for_the_other_writer(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(KDWEB_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="kdweb.settings")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RACE)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert (tmp_path / "kdweb.sqlite3").exists(), done.stderr
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ROW web worker 1" in done.stdout, done.stdout + done.stderr[-3000:]
