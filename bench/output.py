"""Where a benchmark's numbers go: ``bench/results/<name>.json`` and ``<name>.md``, and the host facts they cite.

Every benchmark ends the same way: the facts of the machine it ran on, its results as JSON (indented, for
diffs), its report as Markdown, and the report printed. The results are committed: a smoke run with other
options than the documented command must not be left in their place.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def host_facts(**versions: str) -> dict[str, Any]:
    """torch's threads and version, any further library ``versions`` given, and the machine's architecture."""
    import torch

    return {"threads": torch.get_num_threads(), "torch": torch.__version__, **versions, "machine": platform.machine()}


def read_results(name: str) -> Any | None:
    """The committed results of benchmark ``name`` (its JSON), or None when there are none yet."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_results(name: str, results: Any, report: str) -> None:
    """Write ``results`` to ``bench/results/<name>.json`` and ``report`` to ``<name>.md``, then print the report."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{name}.md").write_text(report)
    print(report)
