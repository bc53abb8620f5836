"""The CLI client (``kdweb``, here ``python -m kdweb_client``) against a real server: daphne serving the API,
a real Celery worker training the run. Submit a YAML engine config, watch it to the end, download its student.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from rest_framework.authtoken.models import Token

from jobs.models import Run
from tests.jobs.conftest import REPO, daphne, process_env

pytestmark = pytest.mark.django_db(transaction=True)


def kdweb(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdweb_client", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_submit_watch_download(celery_worker_process, owner, tiny_teacher, tiny_dataset, assets, tmp_path):
    worker = celery_worker_process
    config = {  # what `python -m distill run` takes: the sources find the registered teacher and data set
        "kind": "kd_feature",
        "name": "from-the-cli",
        "teacher": {"source": tiny_teacher.source},
        "student": {"layers": 2, "layer_map": "uniform"},
        "data": {
            "source": str(assets["reviews"]),
            "text_column": "review",
            "label_column": "sentiment",
            "max_length": 24,
        },
        "optim": {"max_steps": 6, "batch_size": 8},
        "latency_repeats": 1,
        "output_dir": "runs/ignored-by-the-server",
    }
    config_path = tmp_path / "kd.yaml"
    config_path.write_text(yaml.safe_dump(config))
    with daphne(process_env(worker.data_dir), worker.data_dir / "daphne-client.log") as url:
        env = {"KDWEB_URL": url, "KDWEB_TOKEN": Token.objects.create(user=owner).key}

        bad = kdweb("submit", str(config_path), "--set", "student.layer_map=[[1, 2], [2, 9]]", env=env, cwd=tmp_path)
        assert bad.returncode == 2, bad.stderr
        assert "student.layer_map[1]: teacher layer 9 out of range 0..4" in bad.stderr
        assert not Run.objects.exists()

        submitted = kdweb("submit", str(config_path), "--queue", worker.queue, env=env, cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        run = Run.objects.get(pk=int(submitted.stdout))
        assert (run.name, run.teacher, run.dataset, run.queue) == (
            "from-the-cli",
            tiny_teacher,
            tiny_dataset,
            worker.queue,
        )
        assert run.config["optim"]["max_steps"] == 6

        watched = kdweb("watch", str(run.pk), "--interval", "0.3", env=env, cwd=tmp_path)
        assert watched.returncode == 0, f"{watched.stderr}\n{worker.log()}"
        assert f"run {run.pk} succeeded at step 6 / 6" in watched.stderr
        assert "6/6" in watched.stderr and "total=" in watched.stderr  # the bar, with the loss terms
        assert re.search(r"student on validation: .*accuracy [0-9.]+.*; [0-9,]+ parameters", watched.stderr)

        downloaded = kdweb("download", str(run.pk), "-o", "out", env=env, cwd=tmp_path)
        assert downloaded.returncode == 0, downloaded.stderr
        (zip_path,) = [Path(line) for line in downloaded.stdout.splitlines()]
        assert (tmp_path / zip_path).parent == tmp_path / "out"
        assert "config.json" in zipfile.ZipFile(tmp_path / zip_path).namelist()

        missing = kdweb("watch", "999999", env=env, cwd=tmp_path)
        assert (missing.returncode, missing.stderr.strip()) == (2, "detail: No Run matches the given query.")
        anonymous = kdweb("download", str(run.pk), env={**env, "KDWEB_TOKEN": "wrong"}, cwd=tmp_path)
        assert (anonymous.returncode, anonymous.stderr.strip()) == (2, "detail: Invalid token.")
