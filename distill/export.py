"""Export a trained model as a folder that ``AutoModelForSequenceClassification.from_pretrained`` (or, for
a causal LM, ``AutoModelForCausalLM.from_pretrained``) loads offline.

The folder holds safetensors weights, the config (with the label names), the tokenizer, a model card
(README.md) and ``distill.json`` with the run config and its measurements. Learned projections are not
part of it: only the student is saved.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from distill.config import RunConfig
from distill.metrics import no_tick

CARD_FILE, RUN_FILE = "README.md", "distill.json"


EXPORT_UNITS = 2  # the ticks of ``export_model``: weights saved, tokenizer saved


def export_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path, tick: Callable[[], None] = no_tick
) -> Path:
    """Save weights, config and tokenizer to ``folder``, replacing it whole (never half-written); ``tick``
    after each part (it may raise to stop: ``folder`` is then left as it was)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tick()
    tokenizer.save_pretrained(tmp)
    tick()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


# (metric key, column title) per task
COLUMNS = {
    "classification": (("accuracy", "accuracy"), ("f1", "F1"), ("mcc", "MCC")),
    "causal_lm": (("perplexity", "perplexity"), ("bleu", "BLEU"), ("rouge_l", "ROUGE-L"), ("cer", "CER")),
}


def _metric_rows(task: str, metrics: dict[str, dict[str, Any]], efficiency: dict[str, dict[str, Any]]) -> list[str]:
    columns = [c for c in COLUMNS[task] if any(c[0] in m for m in metrics.values())]
    titles = [title for _, title in columns] + ["parameters", "latency bs1 (ms)", "latency bs32 (ms)"]
    rows = ["| model | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for name, m in metrics.items():
        e = efficiency.get(name, {})
        lat = e.get("latency", {})
        cells = [f"{m.get(key, float('nan')):.4f}" for key, _ in columns] + [
            f"{e.get('params', 0):,}",
            f"{lat.get('bs1', {}).get('median_ms', float('nan')):.1f}",
            f"{lat.get('bs32', {}).get('median_ms', float('nan')):.1f}",
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def write_model_card(
    folder: Path, cfg: RunConfig, metrics: dict[str, dict[str, Any]], efficiency: dict[str, dict[str, Any]]
) -> None:
    """Write the model card and the machine-readable run record next to the weights."""
    record = {"config": cfg.model_dump(mode="json"), "metrics": metrics, "efficiency": efficiency}
    (folder / RUN_FILE).write_text(json.dumps(record, indent=1))
    pipeline = "text-generation" if cfg.task == "causal_lm" else "text-classification"
    front = {"library_name": "transformers", "pipeline_tag": pipeline, "tags": ["distillation", cfg.kind]}
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        f"# {cfg.name}",
        "",
        f"Trained by kdweb's engine: kind `{cfg.kind}`, teacher `{cfg.teacher.source}`, data `{cfg.data.source}`.",
        "",
        f"## Evaluation ({cfg.data.eval_split} split, same split for every model)",
        "",
        *_metric_rows(cfg.task, metrics, efficiency),
        "",
        "## Run configuration",
        "",
        "```yaml",
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).strip(),
        "```",
        "",
    ]
    (folder / CARD_FILE).write_text("\n".join(lines))
