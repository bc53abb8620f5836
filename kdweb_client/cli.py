"""``kdweb submit config.yaml``, ``kdweb watch RUN``, ``kdweb cancel RUN``, ``kdweb resume RUN``, ``kdweb download
RUN``: scripts drive a kdweb server through its REST API (``/api/v1/``), authenticated with the user's token
(``/account/token/``).

The server comes from ``--server`` or ``KDWEB_URL``, the token from ``--token`` or ``KDWEB_TOKEN``. Exit
status: 0 done (``watch``: the run succeeded), 1 the run failed, was cancelled or interrupted, or the server
cannot be reached, 2 the API refused the request (each ``field: message`` printed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from tqdm import tqdm

DEFAULT_SERVER = "http://127.0.0.1:8000"
API = "/api/v1"
# what the server takes from the registered teacher and data set, or decides itself
SERVER_OWNED = ("kind", "name", "teacher", "output_dir")
DATA_FROM_DATASET = ("source", "text_column", "label_column")
STOPPED = {"succeeded": 0, "failed": 1, "cancelled": 1, "interrupted": 1}


class ApiError(Exception):
    """A 4xx answer: ``errors`` maps each field (a config path for the engine's checks) to its messages."""

    def __init__(self, status: int, errors: dict[str, list[str]]):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.errors = errors

    def lines(self) -> list[str]:
        return [f"{field}: {message}" for field, messages in self.errors.items() for message in messages]


def _messages(value: Any) -> list[str]:
    if isinstance(value, list):
        return [m for item in value for m in _messages(item)]
    if isinstance(value, dict):
        return [f"{key}: {m}" for key, item in value.items() for m in _messages(item)]
    return [str(value)]


class Client:
    """The API of one server, as one user (token)."""

    def __init__(self, server: str, token: str, timeout: float = 60.0):
        self.server = server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request to ``path`` (below the server); 4xx answers raise :class:`ApiError`."""
        response = self.session.request(method, self.server + path, timeout=self.timeout, **kwargs)
        if 400 <= response.status_code < 500:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text.strip() or response.reason}
            errors = {k: _messages(v) for k, v in body.items()} if isinstance(body, dict) else {"detail": [str(body)]}
            raise ApiError(response.status_code, errors)
        response.raise_for_status()
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", API + path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", API + path, json=body).json()

    def all(self, path: str, **params: Any) -> list[dict]:
        """Every item of a paginated list."""
        page = self.get(path, limit=500, **params)
        items = list(page["results"])
        while page["next"]:
            page = self.request("GET", page["next"].removeprefix(self.server)).json()
            items += page["results"]
        return items

    def download(self, path: str, target: Path, sha256: str | None = None) -> Path:
        """Stream a file to ``target`` (through a temporary name: no half file is left); check its digest."""
        partial = target.with_name(target.name + ".part")
        digest = hashlib.sha256()
        with self.request("GET", path, stream=True) as response, partial.open("wb") as out:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
                digest.update(chunk)
        if sha256 and digest.hexdigest() != sha256:
            partial.unlink()
            raise ApiError(200, {"sha256": [f"{target.name} arrived corrupted: expected {sha256}"]})
        partial.replace(target)
        return target


# --- submit -----------------------------------------------------------------------------------------------------


def apply_override(config: dict, assignment: str) -> None:
    """``a.b.c=value`` (the value read as YAML), as ``python -m distill run --set`` takes it."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ApiError(0, {"--set": [f"expected key=value, got {assignment!r}"]})
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ApiError(0, {"--set": [f"{key}: {part} is not a section"]})
    node[last] = yaml.safe_load(value)


def run_body(config: dict, *, teacher: int, dataset: int, name: str, queue: str = "") -> dict:
    """The API's run body for an engine config (the YAML of ``python -m distill run``): the teacher's and the
    data's sources are the registered objects', the output folder is the server's."""
    sections = {k: v for k, v in config.items() if k not in SERVER_OWNED}
    if isinstance(sections.get("data"), dict):
        sections["data"] = {k: v for k, v in sections["data"].items() if k not in DATA_FROM_DATASET}
    body = {"teacher": teacher, "dataset": dataset, "kind": config.get("kind", "kd_feature"), "name": name}
    return {**body, "sections": sections, "queue": queue}


def _registered(client: Client, path: str, field: str, wanted: dict[str, Any]) -> int:
    """The id of the one registered teacher or data set whose fields equal ``wanted``."""
    found = [item["id"] for item in client.all(path) if all(item.get(k) == v for k, v in wanted.items())]
    if len(found) != 1:
        what = "no" if not found else "more than one"
        raise ApiError(0, {field: [f"{what} registered {field} with {wanted}: pass --{field} ID"]})
    return found[0]


def submit(client: Client, config_path: Path, args: argparse.Namespace) -> dict:
    """Create a run from a YAML engine config; the teacher and data set by id, or found by their sources."""
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ApiError(0, {"config": [str(exc)]}) from None
    if not isinstance(config, dict):
        raise ApiError(0, {"config": ["expected a mapping of fields"]})
    for assignment in args.set:
        apply_override(config, assignment)
    teacher = args.teacher
    if teacher is None:
        source = (config.get("teacher") or {}).get("source")
        teacher = _registered(client, "/teachers/", "teacher", {"source": source})
    dataset = args.dataset
    if dataset is None:
        data = config.get("data") or {}
        wanted = {k: data[k] for k in DATA_FROM_DATASET if k in data}
        dataset = _registered(client, "/datasets/", "dataset", wanted)
    name = args.name or config.get("name") or config_path.stem
    return client.post("/runs/", run_body(config, teacher=teacher, dataset=dataset, name=name, queue=args.queue))


# --- watch ------------------------------------------------------------------------------------------------------


def _postfix(latest: dict[str, float | None]) -> str:
    return " ".join(f"{name.removeprefix('loss/')}={value:.4g}" for name, value in latest.items() if value is not None)


def watch(client: Client, run_id: int, interval: float = 1.0, out: Any = None) -> int:
    """A live progress bar (steps, ETA, the latest value of each loss term) until the run stops; its exit code."""
    run = client.get(f"/runs/{run_id}/")
    bar = tqdm(total=run["total_steps"] or None, desc=f"{run['name']} [{_state(run)}]", unit="step", file=out)
    latest: dict[str, float | None] = {}
    after = None
    try:
        while True:
            # only the newest points matter here: LTTB keeps the last one of each series
            backfill = client.get(f"/runs/{run_id}/series/", after=after, max_points=2)
            for name, points in sorted(backfill["series"].items()):
                if points and name.startswith(("loss/", "val/")):
                    latest[name] = points[-1][1]
            after = backfill["last_step"]
            bar.total = run["total_steps"] or None
            bar.n = run["step"]
            bar.set_description(f"{run['name']} [{_state(run)}]", refresh=False)
            bar.set_postfix_str(_postfix(latest), refresh=False)
            bar.refresh()
            if run["status"] in STOPPED:
                break
            time.sleep(interval)
            run = client.get(f"/runs/{run_id}/")
    finally:
        bar.close()
    _report(run, out or sys.stderr)
    return STOPPED[run["status"]]


def _state(run: dict) -> str:
    """``status``; for a running run its phase in the finish and the run's ETA, the finish included
    (``running · measuring 40% · ETA 01:20``)."""
    if run["status"] != "running":
        return run["status"]
    parts = ["running"]
    if (phase := run.get("phase")) not in ("", None, "training"):
        parts.append(f"{phase} {run.get('phase_progress', 0):.0%}")
    if run.get("eta_s") is not None:
        parts.append(f"ETA {tqdm.format_interval(run['eta_s'])}")
    return " · ".join(parts)


def _report(run: dict, out: Any) -> None:
    print(f"run {run['id']} {run['status']} at step {run['step']} / {run['total_steps']}", file=out)
    for ev in run["evaluations"]:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in ev["metrics"].items() if isinstance(v, (int, float)))
        print(f"  {ev['role']} on {ev['split']}: {metrics}; {ev['params']:,} parameters", file=out)
    if run["error"]:
        print(run["error"].splitlines()[0], file=out)


# --- download -----------------------------------------------------------------------------------------------------


def download(client: Client, run_id: int, out_dir: Path, kind: str = "student") -> list[Path]:
    """The run's artifacts of ``kind`` (the exported student's zip) into ``out_dir``."""
    run = client.get(f"/runs/{run_id}/")
    artifacts = [a for a in run["artifacts"] if a["kind"] == kind]
    if not artifacts:
        raise ApiError(0, {"run": [f"run {run_id} ({run['status']}) has no {kind} artifact"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    return [client.download(a["download"], out_dir / Path(a["name"]).name, a["sha256"]) for a in artifacts]


# --- the command --------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kdweb", description=__doc__.split("\n\n")[0])
    top.add_argument("--server", default=os.environ.get("KDWEB_URL", DEFAULT_SERVER), help="env KDWEB_URL")
    top.add_argument("--token", default=os.environ.get("KDWEB_TOKEN", ""), help="env KDWEB_TOKEN")
    commands = top.add_subparsers(dest="command", required=True)

    sub = commands.add_parser("submit", help="launch a run from an engine config (YAML); prints its id")
    sub.add_argument("config", type=Path)
    sub.add_argument("--teacher", type=int, help="teacher id (default: the one registered with the config's source)")
    sub.add_argument("--dataset", type=int, help="data set id (default: the one registered with the config's source)")
    sub.add_argument("--name", help="run name (default: the config's name, or the file's)")
    sub.add_argument("--queue", default="", help="worker queue (default: the server's)")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    sub.add_argument("--watch", action="store_true", help="then watch it (exit status as watch)")

    sub = commands.add_parser("watch", help="a live progress bar until the run stops; 0 if it succeeded")
    sub.add_argument("run", type=int)
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between polls")

    sub = commands.add_parser("cancel", help="cancel a run (a running one stops with a checkpoint)")
    sub.add_argument("run", type=int)

    sub = commands.add_parser("resume", help="resume a failed, cancelled or interrupted run from its checkpoint")
    sub.add_argument("run", type=int)
    sub.add_argument("--watch", action="store_true", help="then watch it (exit status as watch)")

    sub = commands.add_parser("download", help="download the run's exported student (zip)")
    sub.add_argument("run", type=int)
    sub.add_argument("-o", "--output", type=Path, default=Path("."), help="folder (default: here)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.token:
        print("token: set KDWEB_TOKEN or --token (your token is on the server's /account/token/ page)", file=sys.stderr)
        return 2
    client = Client(args.server, args.token)
    try:
        if args.command == "submit":
            run = submit(client, args.config, args)
            print(f"run {run['id']} queued on {run['queue']}: {client.server}/runs/{run['id']}/", file=sys.stderr)
            print(run["id"])
            return watch(client, run["id"]) if args.watch else 0
        if args.command == "watch":
            return watch(client, args.run, interval=args.interval)
        if args.command in ("cancel", "resume"):
            run = client.post(f"/runs/{args.run}/{args.command}/")
            print(f"run {run['id']}: {args.command} requested; it is {run['status']}", file=sys.stderr)
            return watch(client, run["id"]) if getattr(args, "watch", False) else 0
        for path in download(client, args.run, args.output):
            print(path)
        return 0
    except ApiError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 2
    except requests.RequestException as exc:
        print(f"error: {client.server}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
