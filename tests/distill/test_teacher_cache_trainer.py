"""The trainer with the teacher cache: a run of several epochs builds it (the ``caching`` phase) and trains without
the teacher in memory; a cached run logs the live run's losses; resume stays bit-exact; ``use`` without a cache
is an error naming the field; a run shorter than an epoch stays live."""

from __future__ import annotations

import gc

import pytest
from transformers import PreTrainedModel

from distill.callbacks import CACHING, Callback
from distill.config import ConfigError, parse_config
from distill.teacher_cache import list_caches
from distill.trainer import reads_examples_again, train
from tests.recording import Recorder, assert_resume_is_bit_exact


class TeacherWatch(Callback):
    """Counts, at every step's end, the models in memory as deep as the teacher (4 blocks; students have 2)."""

    def __init__(self):
        self.teachers, self.phases = [], []

    def on_phase(self, state, control, phase, done, total):
        self.phases.append(phase)

    def on_step_end(self, state, control, logs):
        gc.collect()
        # type(), not isinstance(): a dead weak proxy among the objects raises on isinstance
        models = [o for o in gc.get_objects() if issubclass(type(o), PreTrainedModel)]
        self.teachers.append(sum(m.config.num_hidden_layers == 4 for m in models))


@pytest.fixture
def epochs_config(base_config):
    base_config["data"]["max_train_samples"] = 40  # 5 batches an epoch
    base_config["optim"]["max_steps"] = 8  # into the second epoch: worth a cache
    base_config["loss"] = {"teacher_cache_dtype": "float32"}
    return base_config


def test_a_run_of_two_epochs_builds_the_cache_and_trains_without_the_teacher(epochs_config, tmp_path):
    cached, live = TeacherWatch(), TeacherWatch()
    cached_rec, live_rec = Recorder(), Recorder()
    result = train(parse_config(epochs_config), [cached, cached_rec])
    assert CACHING in cached.phases and cached.teachers == [0] * 8
    assert result.metrics["teacher"]["accuracy"] >= 0  # the finish loads the teacher again to score it
    assert (tmp_path / "teacher-cache").is_dir()
    epochs_config["loss"]["teacher_cache"] = "off"
    epochs_config["output_dir"] = str(tmp_path / "live")
    train(parse_config(epochs_config), [live, live_rec])
    assert CACHING not in live.phases and min(live.teachers) >= 1  # the watch sees a teacher in memory
    for cached_logs, live_logs in zip(cached_rec.logs, live_rec.logs, strict=True):
        for k in live_logs:
            assert cached_logs[k] == pytest.approx(live_logs[k], rel=1e-5, abs=1e-7), k


def test_a_cached_run_resumes_bit_for_bit(epochs_config, tmp_path):
    epochs_config["student"] = {"layers": 2, "hidden_size": 16, "heads": 2, "init": "random"}
    assert_resume_is_bit_exact(epochs_config, tmp_path, stop_at=6)


def test_a_run_resumed_in_its_last_epoch_does_not_build_a_cache():
    """A cache costs about an epoch of teacher passes: worth it only while more than an epoch is left."""
    raw = {"kind": "kd_logits", "teacher": {"source": "t"}, "data": {"source": "d"}, "student": {"layers": 1}}
    cfg = parse_config(raw | {"optim": {"epochs": 3}})
    assert reads_examples_again(cfg, 64) and reads_examples_again(cfg, 64, steps_done=1)  # 2 batches of 32 an epoch
    assert not reads_examples_again(cfg, 64, steps_done=4)  # 2 steps left: one epoch


def test_use_without_a_cache_names_the_field(epochs_config):
    epochs_config["loss"]["teacher_cache"] = "use"
    with pytest.raises(ConfigError, match=r"loss\.teacher_cache: use reads an existing cache"):
        train(parse_config(epochs_config))


def test_a_run_shorter_than_an_epoch_stays_live_but_reads_a_cache_that_exists(epochs_config, tmp_path):
    epochs_config["optim"]["max_steps"] = 3
    watch = TeacherWatch()
    train(parse_config(epochs_config), [watch])
    assert CACHING not in watch.phases and min(watch.teachers) >= 1
    assert list_caches(tmp_path / "teacher-cache") == []
    train(parse_config({**epochs_config, "optim": {**epochs_config["optim"], "max_steps": 8}}))
    watch = TeacherWatch()
    train(parse_config({**epochs_config, "output_dir": str(tmp_path / "again")}), [watch])
    assert watch.teachers == [0] * 3


def test_a_causal_lm_run_reads_its_top_k_cache_like_the_live_run(lm_config, tmp_path):
    lm_config["data"]["max_train_samples"] = 8  # a few documents: several epochs in 8 steps
    lm_config["optim"]["max_steps"] = 8
    lm_config["loss"] = {"teacher_cache_dtype": "float32", "top_k": 300}  # the whole vocabulary: the full KL
    cached, live = TeacherWatch(), Recorder()
    cached_rec = Recorder()
    train(parse_config(lm_config), [cached, cached_rec])
    assert CACHING in cached.phases and cached.teachers == [0] * 8
    train(parse_config({**lm_config, "loss": {"teacher_cache": "off"}, "output_dir": str(tmp_path / "live")}), [live])
    for cached_logs, live_logs in zip(cached_rec.logs, live.logs, strict=True):
        for k in live_logs:
            assert cached_logs[k] == pytest.approx(live_logs[k], rel=1e-4, abs=1e-6), k
