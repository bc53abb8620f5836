"""Which cache a config reads: a change of teacher, data, max_length or mapped layers is a miss; a cache that keeps
more serves a run that reads less; a truncated or corrupted shard is detected and rebuilt; two real processes
asking at once: one builds, the other waits and reads it; and ``distill cache build|ls|rm``."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.config import parse_config
from distill.teacher_cache import build_for_config, list_caches, lookup, plan_for_config, status
from distill.teacher_cache.key import folder_digest
from distill.teacher_cache.store import locked
from tests.conftest import write_model, write_reviews

ROOT = Path(__file__).resolve().parents[2]


def key(config: dict) -> str:
    return plan_for_config(parse_config(config)).plan.key.key


def test_a_change_of_teacher_data_length_or_layers_is_a_miss(base_config, tmp_path):
    manifest = build_for_config(parse_config(base_config))
    assert status(plan_for_config(parse_config(base_config)).plan).key == manifest.key == key(base_config)
    other_teacher = write_model(tmp_path / "other", head=True, seed=1)
    other_data = write_reviews(tmp_path / "other.csv", seed=1)
    changes = [
        {"teacher": {"source": str(other_teacher)}},
        {"data": {**base_config["data"], "source": str(other_data)}},
        {"data": {**base_config["data"], "max_length": 12}},
        {"data": {**base_config["data"], "max_train_samples": 100}},
        {"student": {"layers": 2, "layer_map": [[0, 0], [1, 1], [2, 3]]}},  # teacher layers not kept
        {"student": {"layers": 2, "heads": 2}},  # other head groups
        {"loss": {"teacher_cache_dtype": "float32"}},
    ]
    for change in changes:
        changed = {**base_config, **change}
        assert key(changed) != manifest.key, change
        assert status(plan_for_config(parse_config(changed)).plan) is None, change
    # the same teacher folder with one weight changed in place: a miss (file digests follow size and mtime)
    weights = Path(base_config["teacher"]["source"]) / "model.safetensors"
    teacher_copy = tmp_path / "copy"
    teacher_copy.mkdir()
    for f in Path(base_config["teacher"]["source"]).iterdir():
        (teacher_copy / f.name).write_bytes(f.read_bytes())
    copied = {**base_config, "teacher": {"source": str(teacher_copy)}}
    assert key(copied) == manifest.key  # the key is the content, not the path
    blob = bytearray((teacher_copy / weights.name).read_bytes())
    blob[-1] ^= 1
    (teacher_copy / weights.name).write_bytes(bytes(blob))
    assert key(copied) != manifest.key


def test_a_cache_that_keeps_more_serves_a_run_that_reads_less(base_config):
    planned = plan_for_config(parse_config(base_config))
    full = build_for_config(parse_config(base_config))
    assert 0.9 * full.bytes < planned.disk_bytes <= full.bytes  # the estimate before building: the tensors' bytes
    logits_only = {**base_config, "kind": "kd_logits"}
    assert key(logits_only) != full.key
    assert status(plan_for_config(parse_config(logits_only)).plan).key == full.key
    assert lookup(plan_for_config(parse_config(logits_only)).plan).folder.name == full.key


def test_file_digests_are_memoised_by_size_and_mtime(assets, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"a" * 100)
    first = folder_digest(folder, tmp_path / "root")
    memo = json.loads((tmp_path / "root" / "file-hashes.json").read_text())
    path = str((folder / "w.bin").resolve())
    memo[path][2] = "0" * 64  # a memo entry that still matches size and mtime is trusted
    (tmp_path / "root" / "file-hashes.json").write_text(json.dumps(memo))
    assert folder_digest(folder, tmp_path / "root") != first
    os.utime(folder / "w.bin", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: hashed again
    assert folder_digest(folder, tmp_path / "root") == first


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_shard_is_detected_and_rebuilt(base_config, damage):
    cfg = parse_config(base_config)
    manifest = build_for_config(cfg)
    shard = cfg.teacher_cache_dir / manifest.key / manifest.shards[0].file
    blob = shard.read_bytes()
    shard.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else blob[:-1] + bytes([blob[-1] ^ 1]))
    plan = plan_for_config(cfg).plan
    assert lookup(plan) is None
    rebuilt = build_for_config(cfg)
    assert rebuilt.key == manifest.key and shard.read_bytes() == blob
    assert lookup(plan) is not None


def _read_until(stream, text: str, timeout: float) -> bytes:
    seen, end = b"", time.monotonic() + timeout
    while text.encode() not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {text!r} within {timeout} s: {seen[-500:]!r}")
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            raise AssertionError(f"the process ended before {text!r}: {seen[-500:]!r}")
        seen += chunk
    return seen


def test_two_processes_build_one_cache_one_waits_for_the_other(base_config, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(base_config))
    cfg = parse_config(base_config)
    plan = plan_for_config(cfg).plan
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with locked(plan.root, plan.key.key):  # both get as far as the lock (a build of it under way) first
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "distill", "cache", "build", str(config), "--built-by", name],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=tmp_path,
            )
            for name in ("first", "second")
        ]
        for p in procs:  # missed the cache and found it building: waiting, without loading the teacher
            _read_until(p.stderr, "waiting for another process building this cache", timeout=120)
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    caches = list_caches(plan.root)
    assert [m.key for m in caches] == [plan.key.key]  # one cache, and no half-built folder left
    assert not [p for p in plan.root.iterdir() if ".tmp-" in p.name]
    # each process read the cache the same one built: had both built, each would list its own name
    builders = {out.decode().split("built by ")[1].split()[0] for out, _ in outputs}
    assert builders == {caches[0].built_by} and caches[0].built_by in ("first", "second")


def test_the_cli_builds_lists_and_removes_caches(base_config, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(base_config))
    assert main(["cache", "build", str(config), "--built-by", "me"]) == 0
    root = parse_config(base_config).teacher_cache_dir
    (listed,) = list_caches(root)
    assert listed.built_by == "me" and listed.examples == 192
    capsys.readouterr()
    assert main(["cache", "ls", str(root)]) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line[0] == listed.key and line[2] == "192"
    assert main(["cache", "ls", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["bytes"] == listed.bytes
    assert main(["cache", "rm", "nosuchkey", "--root", str(root)]) == 2
    assert "key: no cache 'nosuchkey'" in capsys.readouterr().err
    assert main(["cache", "rm", listed.key, "--root", str(root)]) == 0
    assert list_caches(root) == []
    config.write_text(yaml.safe_dump({**base_config, "kind": "no_kd"}))
    assert main(["cache", "build", str(config)]) == 2
    assert "kind: a no_kd run" in capsys.readouterr().err


def test_a_causal_lm_cache_builds_from_a_teacher_loaded_for_it(lm_config):
    # a study's first task loads the teacher for the cache alone (not frozen by a trainer): its top-k still builds
    manifest = build_for_config(parse_config(lm_config))
    assert manifest is not None and manifest.key == key(lm_config)
