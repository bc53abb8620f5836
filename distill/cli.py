"""``python -m distill``: run, inspect, layermap, evaluate, prepare and cache from the command line.

A bad config or input exits with status 2 and prints each ``field: reason`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from distill.callbacks import FINISH_PHASES, Callback, Control, TrainState
from distill.config import (
    ConfigError,
    DataConfig,
    GenerationConfig,
    StudentConfig,
    format_location,
    load_config,
)
from distill.layer_map import describe, resolve_layer_map

if TYPE_CHECKING:
    from distill.side_by_side import SideBySide

EXIT_CONFIG = 2
DEFAULT_MAX_LENGTH = 128
Section = TypeVar("Section", bound=BaseModel)


def _eta_text(state: TrainState) -> str:
    return tqdm.format_interval(state.eta_s) if state.eta_s is not None else "?"


class ProgressBar(Callback):
    """A tqdm bar of the steps, showing every loss term, the latest validation score and the run's ETA (the
    finish included); then one bar per finish phase (evaluating, measuring, exporting) with its units, its
    share and the run's ETA."""

    def __init__(self, file: Any = None) -> None:
        self.bar: tqdm | None = None
        self.file = file  # tqdm's default (stderr) when None
        self.phase = ""

    def on_train_begin(self, state: TrainState, control: Control) -> None:
        self.bar = tqdm(total=state.total_steps, initial=state.step, unit="step", dynamic_ncols=True, file=self.file)

    def on_step_end(self, state: TrainState, control: Control, logs: dict[str, float]) -> None:
        terms = {k.removeprefix("loss/"): f"{v:.3f}" for k, v in logs.items() if k.startswith("loss/")}
        if "accuracy" in state.metrics:
            terms["val_acc"] = f"{state.metrics['accuracy']:.3f}"
        if "perplexity" in state.metrics:
            terms["val_ppl"] = f"{state.metrics['perplexity']:.2f}"
        terms["run_eta"] = _eta_text(state)
        self.bar.set_postfix(terms, refresh=False)
        self.bar.update(1)

    def on_phase(self, state: TrainState, control: Control, phase: str, done: int, total: int) -> None:
        if phase not in FINISH_PHASES:
            return
        if phase != self.phase:  # the steps' bar (or the previous phase's) is done: a bar for this phase
            self.bar.close()
            self.bar = tqdm(total=total, desc=phase, unit="unit", dynamic_ncols=True, file=self.file)
            self.phase = phase
        self.bar.n = done
        self.bar.set_postfix({"run_eta": _eta_text(state)}, refresh=False)
        self.bar.refresh()

    def on_train_end(self, state: TrainState, control: Control, result: Any) -> None:
        self.bar.close()

    def on_exception(self, state: TrainState, exc: BaseException) -> None:
        if self.bar is not None:
            self.bar.close()


def _options(model: type[Section], flags: dict[str, str], **values: Any) -> Section:
    """Build a config section from command-line options; a bad value is a ConfigError naming its option."""
    try:
        return model(**values)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            field = format_location(tuple(err["loc"]))
            errors.append((flags.get(field, field), err["msg"].removeprefix("Value error, ")))
        raise ConfigError(errors) from None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set or ())
    from distill.distributed import end, is_main
    from distill.trainer import train  # the heavy imports, once the config is known to be valid

    result = train(cfg, [ProgressBar()], resume=args.resume)
    main = is_main()
    end()
    if not main:  # launched on several processes: the main one reports for the run
        return 0
    if result.stopped:
        print(f"stopped at step {result.state.step}; resume with --resume")
        return 0
    print(json.dumps({"metrics": result.metrics, "export_dir": str(result.export_dir)}, indent=1))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from distill.teachers import inspect_teacher

    arch = inspect_teacher(args.source)
    if args.json:
        print(json.dumps(arch.as_dict(), indent=1))
        return 0
    print(
        f"{args.source}: {arch.model_type}, {arch.layers} layers x {arch.hidden_size} hidden, "
        f"{arch.heads} heads ({arch.kv_heads} kv), intermediate {arch.intermediate_size}, "
        f"vocab {arch.vocab_size:,}, {arch.params:,} parameters"
    )
    print(f"task head: {', '.join(arch.labels) if arch.labels else 'none (fine-tune it first)'}")
    return 0


def cmd_layermap(args: argparse.Namespace) -> int:
    from distill.teachers import inspect_teacher

    arch = inspect_teacher(args.teacher)
    student = _options(
        StudentConfig,
        {"layers": "--student-layers"},
        layers=args.student_layers,
        layer_map=args.strategy,
        map_embeddings=not args.no_embeddings,
    )
    print(f"student {args.student_layers} blocks <- teacher {arch.layers} blocks ({args.strategy}):")
    print(describe(resolve_layer_map(student, arch.layers)))
    return 0


def speed_table(result: SideBySide) -> str:
    """A side-by-side measurement as a table: per model its latency median (p10-p90) and × faster than the
    first model at each batch size, throughput at the largest and peak memory; under it, the conditions."""
    first = result.models[0]
    batches = list(first.latency)
    head = ["model", "params", *(f"{b} ms (p10-p90)" for b in batches), *(f"x faster {b}" for b in batches)]
    head += [f"seq/s {batches[-1]}", "peak MB"]
    rows = [head]
    for m in result.models:
        lat = [m.latency[b] for b in batches]
        rows.append(
            [
                m.name,
                f"{m.params:,}",
                *(f"{t.median_ms:.2f} ({t.p10_ms:.2f}-{t.p90_ms:.2f})" for t in lat),
                *(f"{first.latency[b].median_ms / t.median_ms:.2f}" for b, t in zip(batches, lat, strict=True)),
                f"{lat[-1].throughput:.1f}",
                "-" if m.peak_mb is None else f"{m.peak_mb:.1f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(
        f"side by side on {result.host}, {result.threads} torch thread{'s' if result.threads > 1 else ''}, "
        f"{result.seq_len} tokens, {result.rounds} alternated rounds ({'stable' if result.stable else 'time cap'}), "
        f"{result.seconds:.0f} s; load average {result.load_max:.2f} on {result.cpus} cores, "
        f"other processes {result.foreign_cores:.2f} cores"
    )
    if result.heavy_load:
        lines.append("warning: measured under heavy foreign load: repeat on a quiet machine before relying on it")
    return "\n".join(lines)


def cmd_side_by_side(args: argparse.Namespace) -> int:
    from distill.side_by_side import measure_side_by_side

    if args.data is not None:
        raise ConfigError.one("--data", "evaluates one model; several models are measured side by side, without data")
    if args.threads is not None and args.threads < 1:
        raise ConfigError.one("--threads", f"must be at least 1, got {args.threads}")
    if args.time_cap <= 0:
        raise ConfigError.one("--time-cap", f"must be positive, got {args.time_cap}")
    options = {"models": "model", "teacher.source": "model", "seq_len": "--max-length"}
    try:
        result = measure_side_by_side(
            [(model, model) for model in args.model],
            seq_len=args.max_length,
            threads=args.threads,
            time_cap_s=args.time_cap,
        )
    except ConfigError as exc:
        raise ConfigError((options.get(field, field), message) for field, message in exc.errors) from None
    print(json.dumps(result.as_dict(), indent=1) if args.json else speed_table(result))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if len(args.model) > 1:
        return cmd_side_by_side(args)
    if args.data is None:
        raise ConfigError.one("--data", "required to evaluate one model (several are measured side by side)")
    args.model = args.model[0]
    from distill.data import collate_lm, encode, encode_lm, load_data, load_text_data
    from distill.metrics import efficiency_report, evaluate_classifier, evaluate_lm, generation_metrics, weights_bytes
    from distill.teachers import load_causal_lm, load_classifier, load_tokenizer, resolve_source
    from distill.trainer import eval_loader

    flags = {
        "source": "--data",
        "text_column": "--text-column",
        "label_column": "--label-column",
        "max_length": "--max-length",
    }
    data_cfg = _options(
        DataConfig,
        flags,
        source=args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        max_length=DEFAULT_MAX_LENGTH if args.max_length is None else args.max_length,
    )
    if args.batch_size < 1:
        raise ConfigError.one("--batch-size", f"must be at least 1, got {args.batch_size}")
    lm = args.task == "causal_lm"
    data = load_text_data(data_cfg) if lm else load_data(data_cfg)
    tokenizer = load_tokenizer(args.model)
    model = (
        load_causal_lm(args.model, attentions=False)
        if lm
        else load_classifier(args.model, data.labels, attentions=False)
    )
    # Inputs longer than the model's position table crash its forward pass.
    max_length, positions = data_cfg.max_length, getattr(model.config, "max_position_embeddings", None)
    if positions and max_length > positions:
        if args.max_length is not None:
            raise ConfigError.one("--max-length", f"{max_length} is more than the model's {positions} positions")
        max_length = positions  # the default does not fit this model: use all it has
    pad = tokenizer.pad_token_id
    if lm:  # perplexity and the continuation task with the default generation settings
        loader = eval_loader(encode_lm(data.split(args.split), tokenizer, max_length), args.batch_size, pad, collate_lm)
        gen = GenerationConfig()
        metrics = evaluate_lm(model, loader) | generation_metrics(
            model,
            tokenizer,
            data.split(args.split),
            prompt_tokens=gen.prompt_tokens,
            new_tokens=gen.new_tokens,
            samples=gen.samples,
            metrics=gen.metrics,
            batch_size=args.batch_size,
        )
    else:
        loader = eval_loader(encode(data.split(args.split), tokenizer, max_length), args.batch_size, pad)
        metrics = evaluate_classifier(model, loader, len(data.labels))
    report = {
        "metrics": {"split": args.split, **metrics},
        "efficiency": efficiency_report(model, model.config.vocab_size, seq_len=max_length, causal_lm=lm),
    }
    if Path(location := resolve_source(args.model)).is_dir():  # a hub id has no local folder to measure
        report["efficiency"]["bytes"] = weights_bytes(location)
    print(json.dumps(report, indent=1))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from distill.teachers import prepare

    folder = prepare(args.source, progress=lambda message: print(message, flush=True))
    print(folder)
    return 0


DEFAULT_CACHE_ROOT = "runs/teacher-cache"  # beside the default output folder (RunConfig.teacher_cache_dir)


def cmd_cache_build(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set or ())
    from distill.teacher_cache import build_for_config

    bar = None

    def start(units: int) -> None:
        nonlocal bar
        bar = tqdm(total=units, desc="caching", unit="batch", dynamic_ncols=True)

    def wait() -> None:
        print("waiting for another process building this cache", file=sys.stderr, flush=True)

    manifest = build_for_config(cfg, tick=lambda: bar.update(1), built_by=args.built_by, on_units=start, on_wait=wait)
    if bar is not None:
        bar.close()
    if manifest is None:
        field = "loss.teacher_cache" if cfg.loss.teacher_cache == "off" else "kind"
        raise ConfigError.one(field, f"a {cfg.kind} run with teacher_cache {cfg.loss.teacher_cache} reads no cache")
    print(
        f"{manifest.key}  {manifest.bytes / 1e6:.1f} MB  {manifest.examples} examples  built by {manifest.built_by}"
        f"  in {cfg.teacher_cache_dir}"
    )
    return 0


def cmd_cache_ls(args: argparse.Namespace) -> int:
    from distill.teacher_cache import list_caches

    root = Path(args.root)
    if root.exists() and not root.is_dir():
        raise ConfigError.one("root", f"{root} is not a folder")
    caches = list_caches(root)
    if args.json:
        print(json.dumps([{**asdict(m), "bytes": m.bytes} for m in caches], indent=1))
        return 0
    print(f"{'key':32}  {'MB':>9}  {'examples':>8}  {'created':25}  entries")
    for m in caches:
        print(f"{m.key:32}  {m.bytes / 1e6:9.1f}  {m.examples:8}  {m.created:25}  {' '.join(m.entries)} ({m.dtype})")
    return 0


def cmd_cache_rm(args: argparse.Namespace) -> int:
    from distill.teacher_cache import remove_cache

    if not remove_cache(Path(args.root), args.key):
        raise ConfigError.one("key", f"no cache {args.key!r} in {args.root} (distill cache ls lists them)")
    print(f"removed {args.key}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distill", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a run from a YAML config")
    run.add_argument("config")
    run.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. optim.max_steps=20")
    run.set_defaults(func=cmd_run)
    ins = sub.add_parser("inspect", help="architecture of a teacher source")
    ins.add_argument("source", help="package:<pip-name>, a model folder or a hub id")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=cmd_inspect)
    lm = sub.add_parser("layermap", help="show the layer map a strategy gives")
    lm.add_argument("--teacher", required=True)
    lm.add_argument("--student-layers", type=int, required=True)
    lm.add_argument("--strategy", choices=["uniform", "last"], default="uniform")
    lm.add_argument("--no-embeddings", action="store_true", help="leave out the embedding pair (0, 0)")
    lm.set_defaults(func=cmd_layermap)
    ev = sub.add_parser(
        "evaluate",
        help="evaluate an exported model on a data set, or measure several models' speed side by side",
    )
    ev.add_argument(
        "model",
        nargs="+",
        help="a model folder (e.g. a run's export) or a teacher source; several: their speed side by side, "
        "alternately in this process, × faster against the first",
    )
    ev.add_argument("--data", help="the data set to evaluate one model on")
    ev.add_argument("--split", choices=["train", "validation", "test"], default="test")
    ev.add_argument(
        "--task",
        choices=["classification", "causal_lm"],
        default="classification",
        help="causal_lm: perplexity and continuation scores (BLEU, ROUGE-L, CER) on the split's text",
    )
    ev.add_argument("--text-column", default="text")
    ev.add_argument("--label-column", default="label")
    ev.add_argument(
        "--max-length",
        type=int,
        help=f"tokens per text (default: {DEFAULT_MAX_LENGTH}, or fewer if the model has fewer positions)",
    )
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--threads", type=int, help="torch threads of a side-by-side measurement (default: torch's)")
    ev.add_argument("--time-cap", type=float, default=120.0, help="seconds a side-by-side measurement may take")
    ev.add_argument("--json", action="store_true", help="a side-by-side measurement as JSON")
    ev.set_defaults(func=cmd_evaluate)
    pre = sub.add_parser(
        "prepare", help="make a teacher source ready offline (convert a GGUF package once) and print its folder"
    )
    pre.add_argument("source", help="package:<pip-name>, a model folder or a hub id")
    pre.set_defaults(func=cmd_prepare)
    cache = sub.add_parser("cache", help="teacher-output caches: build one for a config, list them, remove one")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    build = cache_sub.add_parser("build", help="compute a config's teacher outputs once (loss.teacher_cache)")
    build.add_argument("config")
    build.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    build.add_argument("--built-by", default="", help="who the listing says built it (default: this host)")
    build.set_defaults(func=cmd_cache_build)
    ls = cache_sub.add_parser("ls", help="the caches in a folder: key, size, examples, created")
    ls.add_argument("root", nargs="?", default=DEFAULT_CACHE_ROOT)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_cache_ls)
    rm = cache_sub.add_parser("rm", help="remove a cache (waits for a build of it to end)")
    rm.add_argument("key")
    rm.add_argument("--root", default=DEFAULT_CACHE_ROOT)
    rm.set_defaults(func=cmd_cache_rm)
    return p


def main(argv: list[str] | None = None) -> int:
    # Our progress bar is the one to watch: quiet transformers' loading bars and load reports
    # (a fine-tuned head's "missing" weights are expected). Set the variables to see them again.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
