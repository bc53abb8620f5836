"""One explicit training loop on Accelerate for every kind of run.

``teacher_finetune`` trains the teacher (a new classification head on a backbone, or a causal LM on
text); ``no_kd``, ``kd_logits`` and ``kd_feature`` train a student built from that teacher, with the loss
terms their kind switches on. ``task: causal_lm`` changes the data (token windows of text), the
validation (perplexity) and the final evaluation (perplexity and a continuation task), not the loop.
Accelerate supplies devices, mixed precision, gradient accumulation and several processes (DDP), so the loop
reads the same on 1 CPU and on 8 GPUs: under ``torchrun`` each process trains on its share of every batch and
the main one alone reports, builds the cache, validates, checkpoints and finishes (:mod:`distill.distributed`).
A distillation run reads its teacher's outputs from a teacher-output cache (:mod:`distill.teacher_cache`)
when there is one, building it first (the ``caching`` phase) when the run reads its examples more than once;
a run whose outputs are all cached trains without the teacher in memory. Progress leaves through callbacks
only: steps, and the phases (``on_phase``) of the cache build and of the finish, which a stop request ends as
it does training (the run can resume).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
    set_seed,
)
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedModel, get_scheduler

from distill.callbacks import (
    CACHING,
    EVALUATING,
    EXPORTING,
    MEASURING,
    TRAINING,
    VALIDATING,
    Callback,
    CallbackHandler,
    StopRequested,
    TrainState,
)
from distill.checkpoint import has_checkpoint, load_checkpoint, rng_state, save_checkpoint
from distill.config import KD_KINDS, KIND_TERMS, ConfigError, RunConfig
from distill.data import (
    TextClassificationData,
    TextData,
    collate,
    collate_lm,
    encode,
    encode_lm,
    load_data,
    load_text_data,
)
from distill.distiller import Distiller, teacher_forward
from distill.distributed import WAIT_FOR_MAIN, broadcast_flag, check_world_size, gather, mean_over_ranks
from distill.export import EXPORT_UNITS, export_model, write_model_card
from distill.lora import apply_lora, merge_adapter, trainable_parameters
from distill.metrics import (
    LATENCY_BATCH_SIZES,
    Tick,
    efficiency_report,
    evaluate_classifier,
    evaluate_lm,
    generation_metrics,
    latency_warmup,
    no_tick,
    weights_bytes,
)
from distill.students import build_student, student_config, validate_against
from distill.teacher_cache import (
    CachedTeacher,
    CachePlan,
    ensure,
    keep_for,
    lookup,
    plan_cache,
    source_labels,
    wait_and_lookup,
)
from distill.teacher_cache.build import build_units
from distill.teachers import (
    check_tokenizer,
    describe,
    load_config,
    load_teacher,
    load_tokenizer,
    resolve_source,
)
from distill.timing import (
    CPU_FLOPS,
    Eta,
    finish_work,
    non_embedding_count,
    step_flops,
    step_flops_with_validation,
)

log = logging.getLogger("distill")


class EpochBatches(Sampler[list[int]]):
    """A seeded shuffle per epoch that can start mid-epoch (``skip`` batches), so a resumed run sees the same
    batches; process ``rank`` of ``processes`` reads its share of each.

    Every process draws the same order. It is cut into global batches of ``batch_size × processes`` examples and
    process ``rank`` takes every ``processes``-th example of each, from the ``rank``-th: the processes together
    read the batch one process with ``processes`` times the batch size reads. The order is first completed to a
    multiple of ``processes`` with its first examples, so every process reads as many examples in every batch
    (DDP averages their gradients with equal weights) and none reads an empty one."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, processes: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.processes = rank, processes
        self.epoch = self.skip = 0

    def start(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        order = (order * self.processes)[: math.ceil(self.size / self.processes) * self.processes]
        span = self.batch_size * self.processes
        for i in range(self.skip * span, len(order), span):
            yield order[i : i + span][self.rank :: self.processes]

    def __len__(self) -> int:
        return math.ceil(math.ceil(self.size / self.processes) / self.batch_size) - self.skip


@dataclass
class TrainResult:
    """What a run produced. ``metrics`` maps "student"/"teacher" to their evaluation on the same split;
    ``timings`` holds the ``measured`` seconds per optimizer step (``step_s``) and of each finish phase, and their
    ``analytic`` figures (``distill.timing.Eta.end``)."""

    state: TrainState
    stopped: bool
    metrics: dict[str, dict[str, float]]
    efficiency: dict[str, dict[str, Any]]
    export_dir: Path | None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["export_dir"] = str(self.export_dir) if self.export_dir else None
        return out


def eval_loader(
    split: Dataset, batch_size: int, pad_token_id: int, collate_fn: Callable[..., dict[str, torch.Tensor]] = collate
) -> DataLoader:
    """Batches of similar length (padding wastes time), in a fixed order."""
    order = sorted(range(len(split)), key=lambda i: len(split[i]["input_ids"]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return DataLoader(split, batch_sampler=batches, collate_fn=partial(collate_fn, pad_token_id=pad_token_id))


Data = TextClassificationData | TextData


def load_task_data(cfg: RunConfig) -> Data:
    """Labelled splits for classification, text splits for a causal LM."""
    return load_text_data(cfg.data) if cfg.task == "causal_lm" else load_data(cfg.data)


def encode_split(cfg: RunConfig, data: Data, name: str, tokenizer: Any) -> Dataset:
    """One split tokenized for the task: texts (truncated) for classification, token windows for a causal LM."""
    if cfg.task == "causal_lm":
        return encode_lm(data.split(name), tokenizer, cfg.data.max_length)
    return encode(data.split(name), tokenizer, cfg.data.max_length)


def task_collate(cfg: RunConfig) -> Callable[..., dict[str, torch.Tensor]]:
    """The batch builder of the task: class ids as labels, or next-token labels for a causal LM."""
    return collate_lm if cfg.task == "causal_lm" else collate


def validate(
    cfg: RunConfig, model: PreTrainedModel, loader: DataLoader, data: Data, device: torch.device, tick: Tick = no_tick
) -> dict:
    """Validation metrics: accuracy/F1/MCC/loss for classification, perplexity and NLL for a causal LM."""
    if cfg.task == "causal_lm":
        return evaluate_lm(model, loader, device, tick)
    return evaluate_classifier(model, loader, len(data.labels), device, tick)


def epoch_batches(cfg: RunConfig, train_size: int) -> int:
    """The micro-batches each process reads per epoch (:class:`EpochBatches`): its share of the examples,
    ``train_size / resources.processes`` rounded up, in batches of ``optim.batch_size``."""
    return math.ceil(math.ceil(train_size / cfg.resources.processes) / cfg.optim.batch_size)


def epoch_steps(cfg: RunConfig, train_size: int) -> int:
    """Optimizer steps per epoch (the accumulation closes at an epoch's end)."""
    return math.ceil(epoch_batches(cfg, train_size) / cfg.optim.grad_accum)


def total_steps(cfg: RunConfig, train_size: int) -> int:
    """Optimizer steps: ``max_steps``, or the epochs' micro-batches divided by the accumulation."""
    if cfg.optim.max_steps:
        return cfg.optim.max_steps
    micro = math.ceil(cfg.optim.epochs * epoch_batches(cfg, train_size))
    return max(1, math.ceil(micro / cfg.optim.grad_accum))


class PhaseReporter:
    """Tells the callbacks what the trainer is doing (``on_phase``), with the run's ETA in ``state.eta_s``. A
    stoppable phase (the finish) raises ``StopRequested`` from its report when a callback asked to stop;
    training stops at a step's end instead."""

    def __init__(self, handler: CallbackHandler, state: TrainState, eta: Eta):
        self.handler, self.state, self.eta = handler, state, eta
        self.eta.step(state.step, state.elapsed_s)  # a resumed run knows its step time from the checkpoint
        self.phase, self.done, self.total, self.stoppable = TRAINING, 0, 0, False

    def start(self, phase: str, total: int, done: int = 0, stoppable: bool = True) -> Tick:
        """Report that ``phase`` begins; returns its ``tick``, to call after each of its ``total`` units."""
        self.phase, self.done, self.total, self.stoppable = phase, done, total, stoppable
        self._report()
        return self.tick

    def tick(self) -> None:
        self.done += 1
        self._report()

    def step_end(self) -> None:
        """An optimizer step is done: time it and update the ETA (before ``on_step_end`` reads it)."""
        self.eta.step(self.state.step, self.state.elapsed_s)
        self.state.eta_s = self.eta.seconds_left(self.state.total_steps - self.state.step)

    def _report(self) -> None:
        self.eta.update(self.phase, self.done, self.total)
        self.state.eta_s = self.eta.seconds_left(self.state.total_steps - self.state.step)
        control = self.handler.call("on_phase", self.state, self.phase, self.done, self.total)
        if self.stoppable and control.should_stop:
            raise StopRequested(self.phase)


@dataclass
class Models:
    """The models of a run. ``teacher`` is None when the run fine-tunes the teacher itself."""

    tokenizer: Any
    teacher: PreTrainedModel | None
    distiller: Distiller


def build_models(cfg: RunConfig, labels: tuple[str, ...]) -> Models:
    """Load the teacher, build the student and check them against the config, before any training state."""
    t_config = load_config(cfg.teacher.source)
    arch = describe(t_config)
    pairs = validate_against(cfg, arch)
    tokenizer = load_tokenizer(cfg.teacher.source)
    check_tokenizer(t_config, tokenizer)
    if cfg.kind == "teacher_finetune":
        model = load_teacher(cfg, labels, attentions=False, trainable=True)
        if cfg.lora is not None:
            model = apply_lora(model, cfg.lora, cfg.task)
        return Models(tokenizer, None, Distiller(model, (), arch.hidden_size, cfg.loss, False))
    teacher = load_teacher(cfg, labels, attentions=cfg.needs_attentions)
    teacher.eval().requires_grad_(False)
    s_config = student_config(t_config, cfg.student, arch, attentions=cfg.needs_attentions)
    student = build_student(s_config, cfg.student, pairs, teacher, attentions=cfg.needs_attentions)
    used_pairs = pairs if cfg.needs_features else ()
    return Models(tokenizer, teacher, Distiller(student, used_pairs, arch.hidden_size, cfg.loss, cfg.needs_attentions))


def make_optimizer(cfg: RunConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, with no weight decay on biases and norms (BERT's recipe)."""
    decay = [p for p in module.parameters() if p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def training_step(
    accelerator: Accelerator,
    distiller: torch.nn.Module,
    teacher: PreTrainedModel | None,
    batch: dict[str, torch.Tensor],
    weights: dict[str, float],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    max_grad_norm: float | None,
    cache: CachedTeacher | None = None,
) -> dict[str, float]:
    """One micro-batch: teacher forward (or its ``cache``d outputs), student forward and losses, backward, and
    (when the accumulation window closes) the optimizer step. Returns each term and the total as floats."""
    with accelerator.accumulate(distiller):
        core = accelerator.unwrap_model(distiller)
        if cache is not None:
            t_out = cache(batch)
        else:
            t_out = teacher_forward(teacher, batch, core.pairs, core.attentions) if teacher else None
        loss = distiller(batch, t_out, weights)
        accelerator.backward(loss.total)
        if accelerator.sync_gradients and max_grad_norm:
            accelerator.clip_grad_norm_(distiller.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    # One sync for all terms, and no tensor outlives the step.
    values = torch.stack([*(t.detach() for t in loss.terms.values()), loss.total.detach()]).tolist()
    return dict(zip([*loss.terms, "total"], values, strict=True))


def weighted_shares(losses: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Each weighted term's share of the total, ``share/<term>`` (they sum to 1), when two or more terms
    contribute: how the objective is balanced, which the unweighted curves alone do not show."""
    parts = {t: weights.get(t, 0.0) * v for t, v in losses.items() if t != "total" and weights.get(t, 0.0)}
    total = sum(parts.values())
    return {f"share/{t}": p / total for t, p in parts.items()} if len(parts) > 1 and total > 0 else {}


def train(cfg: RunConfig, callbacks: Sequence[Callback] = (), resume: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; evaluate, measure and export at the end.

    With ``resume`` and a checkpoint in ``cfg.output_dir``, training continues from it and produces the
    same later losses as an uninterrupted run with the same seed.
    """
    set_seed(cfg.seed)
    handler = CallbackHandler(list(callbacks))
    state = TrainState()
    try:
        accelerator = make_accelerator(cfg)
        if not accelerator.is_main_process:
            # the main process alone reports: progress, the live view, stop requests (it passes them on)
            handler = CallbackHandler([])
        check_world_size(cfg.resources.processes)
        return _train(cfg, accelerator, handler, state, resume)
    except BaseException as exc:
        handler.exception(state, exc)
        raise


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """The run's Accelerator; under a launcher it joins the run's process group."""
    return Accelerator(
        # without a GPU the processes of a launched run train on the CPU (gloo): Accelerate groups them only when told
        cpu=not torch.accelerator.is_available(),
        mixed_precision=cfg.optim.mixed_precision,
        gradient_accumulation_steps=cfg.optim.grad_accum,
        # the scheduler counts the run's optimizer steps (total_steps shares the data among the processes already):
        # with split_batches Accelerate steps it once per optimizer step, not once per process
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=WAIT_FOR_MAIN),
            DistributedDataParallelKwargs(find_unused_parameters=may_skip_parameters(cfg)),
        ],
    )


def may_skip_parameters(cfg: RunConfig) -> bool:
    """Whether a step can leave trained parameters without a gradient: a term weighted 0 (always, or in the first
    part of ``features_first``) is left out of the graph, with its head or projections. DDP must then look for
    them after each backward, which costs a pass over the graph, so only these runs ask for it."""
    used = [w for term, w in cfg.loss_weights().items() if term in KIND_TERMS[cfg.kind]]
    return 0 in used or cfg.loss.schedule == "features_first"


def teacher_cache_plan(cfg: RunConfig, m: Models, split: Dataset) -> CachePlan | None:
    """The cache of this run's teacher outputs (:func:`distill.teacher_cache.plan_cache`), from the models built."""
    if m.teacher is None:
        return None
    d = m.distiller
    keep = keep_for(
        cfg, d.pairs, d.attentions, d.student.config.num_attention_heads, m.teacher.config.num_attention_heads
    )
    return plan_cache(cfg, split, keep)


def reads_examples_again(cfg: RunConfig, train_size: int, steps_done: int = 0) -> bool:
    """Whether the run's micro-batches still to come (after ``steps_done``, for a resumed run) go past one
    epoch: only then does building a cache save teacher passes (building costs about one epoch of them)."""
    left = total_steps(cfg, train_size) - steps_done
    return left * cfg.optim.grad_accum > epoch_batches(cfg, train_size)


def _train(
    cfg: RunConfig, accelerator: Accelerator, handler: CallbackHandler, state: TrainState, resume: bool
) -> TrainResult:
    main = accelerator.is_main_process
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with accelerator.main_process_first():  # a download or a conversion happens once; the others then read it
        data = load_task_data(cfg)
        m = build_models(cfg, data.labels)
    pad, collate_fn = m.tokenizer.pad_token_id, task_collate(cfg)
    train_split = encode_split(cfg, data, "train", m.tokenizer)
    sampler = EpochBatches(
        len(train_split), cfg.optim.batch_size, cfg.seed, accelerator.process_index, accelerator.num_processes
    )
    # Its own generator: a DataLoader iterator otherwise draws a seed from the global RNG when it starts,
    # which would shift dropout after a resume mid-epoch.
    loader = DataLoader(
        train_split,
        batch_sampler=sampler,
        collate_fn=partial(collate_fn, pad_token_id=pad),
        generator=torch.Generator(),
    )
    # the sampler gives each process its share: the loader is prepared as for one process (device placement, the
    # accumulation's end of epoch), not sharded a second time
    loader = prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True)
    val_split = encode_split(cfg, data, "validation", m.tokenizer)
    val_loader = eval_loader(val_split, cfg.eval_batch_size, pad, collate_fn)
    # the finish's split, encoded now: its size is part of the ETA from the first step on
    final_split = (
        val_split if cfg.data.eval_split == "validation" else encode_split(cfg, data, cfg.data.eval_split, m.tokenizer)
    )
    final_loader = eval_loader(final_split, cfg.eval_batch_size, pad, collate_fn)

    state.total_steps = total_steps(cfg, len(train_split))
    optimizer = make_optimizer(cfg, m.distiller)
    scheduler = get_scheduler(
        cfg.optim.scheduler,
        optimizer,
        num_warmup_steps=int(cfg.optim.warmup_ratio * state.total_steps),
        num_training_steps=state.total_steps,
    )
    distiller, optimizer, scheduler = accelerator.prepare(m.distiller, optimizer, scheduler)
    if resume and has_checkpoint(output_dir):
        with accelerator.main_process_first():  # the main process settles a checkpoint a killed run left half moved
            restored = load_checkpoint(
                output_dir, m.distiller, optimizer, scheduler, accelerator.process_index, accelerator.num_processes
            )
        for key, value in asdict(restored).items():
            setattr(state, key, value)
        log.info("resumed from step %d", state.step)
    plan = teacher_cache_plan(cfg, m, train_split) if state.step < state.total_steps else None
    # the main process looks the cache up (and builds it below); the others read what it found once it is there
    cache, build = None, False
    if plan is not None and main:
        cache = wait_and_lookup(plan) if cfg.loss.teacher_cache == "use" else lookup(plan)
        if cache is None and cfg.loss.teacher_cache == "use":
            raise ConfigError.one(
                "loss.teacher_cache",
                f"use reads an existing cache, and {plan.root} has none for this teacher, data and layers: build it "
                "first (python -m distill cache build <config>) or set build",
            )
        build = cache is None and reads_examples_again(cfg, len(train_split), state.step)
    if m.teacher is not None and cache is None:
        m.teacher.to(accelerator.device)
    teacher = m.teacher if cfg.kind in KD_KINDS else None

    control = handler.call("on_train_begin", state)
    steps_per_epoch = epoch_steps(cfg, len(train_split))
    eval_every = cfg.eval_every or steps_per_epoch
    cached = cache is not None or build
    built = len(train_split) if build else 0
    eta = run_eta(cfg, m, state.total_steps, steps_per_epoch, len(val_split), len(final_split), cached, built)
    phases = PhaseReporter(handler, state, eta)
    stopped = False
    if build:
        try:
            tick = phases.start(CACHING, build_units(len(train_split), cfg.optim.batch_size))
            cache = ensure(
                plan,
                teacher,
                train_split,
                partial(collate_fn, pad_token_id=pad),
                batch_size=cfg.optim.batch_size,
                tick=tick,
                built_by=cfg.name,
                source=source_labels(cfg),
            )
        except StopRequested as request:  # no step taken: a resume starts the run again
            log.info("%s: stopped before training", request)
            stopped = True
    if broadcast_flag(stopped):  # the others waited here while the main process built the cache
        result = TrainResult(state, True, {}, {}, None)
        handler.call("on_train_end", state, result)
        return result
    if broadcast_flag(cache is not None) and not main:
        cache = lookup(plan)
        if cache is None:
            raise RuntimeError(f"the teacher cache in {plan.root} went away while the main process read it")
    if cache is not None:
        log.info("teacher outputs from the cache %s", cache.folder)
        handler.call("on_teacher_cache", state, cache.manifest)
        # every output the losses read is cached: the teacher's weights leave memory (the finish loads it again)
        m.teacher = teacher = None
    phases.start(TRAINING, state.total_steps, done=state.step, stoppable=False)
    sums: dict[str, float] = {}
    micro = 0
    started = time.perf_counter() - state.elapsed_s
    stop = broadcast_flag(control.should_stop)
    while state.step < state.total_steps and not stop:
        sampler.start(state.epoch, state.batches_in_epoch)
        for batch in loader:
            weights = cfg.loss_weights(state.step, state.total_steps)
            terms = training_step(
                accelerator, distiller, teacher, batch, weights, optimizer, scheduler, cfg.optim.max_grad_norm, cache
            )
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            micro += 1
            state.batches_in_epoch += 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            state.elapsed_s = time.perf_counter() - started
            losses = mean_over_ranks({k: v / micro for k, v in sums.items()})  # the losses of the global batch
            logs = {f"loss/{k}": v for k, v in losses.items()} | weighted_shares(losses, weights)
            logs["lr"] = scheduler.get_last_lr()[0]
            sums, micro = {}, 0
            phases.step_end()
            control = handler.call("on_step_end", state, logs)
            last = state.step >= state.total_steps
            if (state.step % eval_every == 0 or last) and main:
                tick = phases.start(VALIDATING, len(val_loader), stoppable=False)
                state.metrics = validate(cfg, m.distiller.student, val_loader, data, accelerator.device, tick)
                control = handler.call("on_evaluate", state, {"split": "validation", **state.metrics})
                phases.start(TRAINING, state.total_steps, done=state.step, stoppable=False)
            stop = broadcast_flag(control.should_stop)  # the main process's callbacks decide for every process
            if stop or last or state.step % cfg.checkpoint_every == 0:
                rng_states = gather(rng_state())  # every process's, so each resumes its own dropout stream
                if main:
                    handler.call("on_save", state)
                    save_checkpoint(output_dir, m.distiller, optimizer, scheduler, state, rng_states)
            if stop or last:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0

    result = TrainResult(state, True, {}, {}, None)  # stopped: the checkpoint is where a resume starts
    if state.step >= state.total_steps:
        if main:
            try:  # a resume of a run stopped here finds the final checkpoint and redoes only the finish
                result = _finish(cfg, data, m, final_loader, accelerator.device, phases)
            except StopRequested as request:
                log.info("%s: the final checkpoint stays", request)
        # the others wait for the finish, and end as it did
        result.stopped = not broadcast_flag(not result.stopped)
    handler.call("on_train_end", state, result)
    return result


def evaluation_units(cfg: RunConfig, loader: DataLoader) -> int:
    """The ticks of :func:`evaluate_final` (batches; for generation, at most this many)."""
    if cfg.task != "causal_lm":
        return len(loader)
    gen = cfg.generation
    scored = len(loader) if "perplexity" in gen.metrics else 0
    generated = math.ceil(gen.samples / cfg.eval_batch_size) if set(gen.metrics) - {"perplexity"} else 0
    return scored + generated


def evaluate_final(
    cfg: RunConfig,
    model: PreTrainedModel,
    tokenizer: Any,
    loader: DataLoader,
    data: Data,
    device: torch.device,
    tick: Tick = no_tick,
) -> dict[str, Any]:
    """The end-of-run metrics of one model on ``cfg.data.eval_split``; for a causal LM the perplexity
    (with its NLL) and the continuation scores, as far as ``cfg.generation.metrics`` asks for them."""
    metrics: dict[str, Any] = {"split": cfg.data.eval_split}
    if cfg.task != "causal_lm":
        return metrics | evaluate_classifier(model, loader, len(data.labels), device, tick)
    gen = cfg.generation
    if "perplexity" in gen.metrics:
        metrics |= evaluate_lm(model, loader, device, tick)
    if set(gen.metrics) - {"perplexity"}:
        metrics |= generation_metrics(
            model,
            tokenizer,
            data.split(cfg.data.eval_split),
            prompt_tokens=gen.prompt_tokens,
            new_tokens=gen.new_tokens,
            samples=gen.samples,
            metrics=gen.metrics,
            batch_size=cfg.eval_batch_size,
            device=device,
            tick=tick,
        )
    return metrics


def run_step_flops(cfg: RunConfig, m: Models, cached: bool = False) -> tuple[float, int, int]:
    """The analytic FLOPs of one optimizer step of this run (validations aside), from the models as built, with
    the non-embedding parameters of the trained model and of the teacher (0 without one). A step that reads
    ``cached`` teacher outputs has no teacher forward."""
    lm = cfg.task == "causal_lm"
    trained = non_embedding_count(m.distiller.student, lm)
    teacher = non_embedding_count(m.teacher, lm) if m.teacher is not None else 0
    tokens = cfg.optim.batch_size * cfg.data.max_length * cfg.optim.grad_accum
    live = cfg.kind in KD_KINDS and not cached
    return step_flops(tokens, trained, teacher if live else 0), trained, teacher


def run_eta(
    cfg: RunConfig,
    m: Models,
    steps: int,
    epoch_steps: int,
    val_examples: int,
    eval_examples: int,
    cached: bool = False,
    caching_examples: int = 0,
) -> Eta:
    """The ETA of this run: its step's FLOPs (with its share of the validations) and its finish's work, from the
    models as built, and the teacher pass over ``caching_examples`` that builds its cache first (0: none)."""
    flops, trained, teacher = run_step_flops(cfg, m, cached)
    flops = step_flops_with_validation(cfg, flops, steps, epoch_steps, val_examples, trained)
    weights = sum(p.numel() for p in m.distiller.student.parameters())
    work = finish_work(cfg, eval_examples, [trained, *([teacher] if teacher else [])], weights)
    caching = 2 * teacher * cfg.data.max_length * caching_examples
    return Eta(flops, work, CPU_FLOPS, caching)


def _finish(
    cfg: RunConfig, data: Data, m: Models, loader: DataLoader, device: torch.device, phases: PhaseReporter
) -> TrainResult:
    """Evaluate the trained model and the teacher on the same split, measure both, export the trained model;
    each phase reported to ``phases``, which raises ``StopRequested`` when a callback asks to stop."""
    output_dir, state = Path(cfg.output_dir), phases.state
    trained = "teacher" if cfg.kind == "teacher_finetune" else "student"
    if m.teacher is None and cfg.kind in KD_KINDS:  # trained from the teacher cache: scored like any teacher
        m.teacher = load_teacher(cfg, data.labels, attentions=False).eval().to(device)
    trainable = trainable_parameters(m.distiller)
    # a LoRA model is measured and exported as the plain model its merged adapters make
    models = {trained: merge_adapter(m.distiller.student)} | ({"teacher": m.teacher} if m.teacher is not None else {})
    metrics, efficiency = {}, {}
    tick = phases.start(EVALUATING, len(models) * evaluation_units(cfg, loader))
    for name, model in models.items():
        model.set_attn_implementation("sdpa")  # measured and shipped on the fast path
        metrics[name] = evaluate_final(cfg, model, m.tokenizer, loader, data, device, tick)
    passes = len(LATENCY_BATCH_SIZES) * (latency_warmup(cfg.latency_repeats) + cfg.latency_repeats)
    tick = phases.start(MEASURING, len(models) * passes)
    for name, model in models.items():
        efficiency[name] = efficiency_report(
            model,
            model.config.vocab_size,
            seq_len=cfg.data.max_length,
            repeats=cfg.latency_repeats,
            causal_lm=cfg.task == "causal_lm",
            tick=tick,
        )
    tick = phases.start(EXPORTING, EXPORT_UNITS)
    export_dir = export_model(models[trained], m.tokenizer, output_dir / "export", tick)
    efficiency[trained]["bytes"] = weights_bytes(export_dir)
    efficiency[trained]["trainable_params"] = trainable
    if m.teacher is not None and Path(teacher_dir := resolve_source(cfg.teacher.source)).is_dir():
        efficiency["teacher"]["bytes"] = weights_bytes(teacher_dir)
    write_model_card(export_dir, cfg, metrics, efficiency)
    result = TrainResult(state, False, metrics, efficiency, export_dir, phases.eta.end())
    (output_dir / "results.json").write_text(json.dumps(result.as_dict(), indent=1))
    return result
