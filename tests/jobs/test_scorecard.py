"""The study maths (jobs.scorecard) on plain objects: no database, every number checked by hand.

A run here is a namespace with what the scorecard reads (``pk``, ``name``, ``kind``, ``config``, ``host`` and its
prefetched ``evaluations`` and ``artifacts``); an evaluation one with ``role``, ``split``, ``metrics``, ``params``,
``bytes`` and ``latency``, as the worker stores them.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace
from typing import Any

import pytest

from jobs import scorecard


class Prefetched(list):
    """A prefetched relation: ``.all()`` answers from memory."""

    def all(self) -> list:
        return list(self)


def ev(role: str, metrics: dict[str, float], *, split: str = "validation", params: int = 1_000, **kw: Any):
    """An evaluation; ``bs1``/``bs32`` are median latencies in ms, ``threads`` the torch threads they used."""
    latency = {b: {"median_ms": kw[b], "threads": kw.get("threads", 2)} for b in ("bs1", "bs32") if b in kw}
    return SimpleNamespace(
        role=role, split=split, metrics=metrics, params=params, bytes=kw.get("bytes"), latency=latency
    )


def run(pk: int, kind: str, evaluations: list, *, seed: int = 0, loss: dict | None = None, **config: Any):
    """A run of ``kind`` with its evaluations and a student artifact."""
    cfg = {"kind": kind, "seed": seed, "name": f"run {pk}", "loss": loss or {}, **config}
    artifacts = Prefetched([SimpleNamespace(kind="student", pk=pk)])
    return SimpleNamespace(
        pk=pk,
        name=f"run {pk}",
        kind=kind,
        config=cfg,
        host="h",
        evaluations=Prefetched(evaluations),
        artifacts=artifacts,
    )


def teacher_ev(accuracy: float = 0.9, **kw: Any):
    return ev("teacher", {"accuracy": accuracy}, params=4_000, bs1=8.0, bs32=40.0, **kw)


def test_it_names_the_variant_a_config_compares():
    assert scorecard.run_variant({"kind": "kd_feature", "loss": {"attention": 0}}) == "output+feature"
    assert scorecard.run_variant({"kind": "kd_feature", "loss": {"feature": 0.0}}) == "output+attention"
    assert scorecard.run_variant({"kind": "kd_feature", "loss": {"attention": 0.5}}) == "kd_feature"
    assert scorecard.run_variant({"kind": "no_kd"}) == "no_kd"
    # an LM's full method weighs attention 0 by default: only a zero feature weight ablates it
    lm = {"kind": "kd_feature", "task": "causal_lm"}
    assert scorecard.run_variant({**lm, "loss": {"attention": 0.0, "feature": 0.1}}) == "kd_feature"
    assert scorecard.run_variant({**lm, "loss": {"attention": 0.0, "feature": 0.0}}) == "output+attention"


def test_it_ranks_by_each_tasks_primary_metric():
    assert scorecard.run_task({}) == "classification"
    assert scorecard.primary_metric("causal_lm") == "perplexity"
    assert scorecard.primary_metric("unknown") == "accuracy"
    assert scorecard.better_score("perplexity", 12.0) == -12.0
    assert scorecard.better_score("accuracy", 0.8) == 0.8
    assert scorecard.better_score("accuracy", None) is None


def test_it_compares_a_student_with_its_teacher():
    student = ev("student", {"accuracy": 0.81}, params=1_000, bs1=2.0, bs32=10.0)

    ratios = scorecard.versus_teacher(student, teacher_ev(), "accuracy")

    assert ratios == {"retention": pytest.approx(0.9), "smaller": 4.0, "faster_bs1": 4.0, "faster_bs32": 4.0}


def test_it_inverts_retention_for_a_lower_is_better_metric():
    student, teacher = ev("student", {"perplexity": 20.0}), ev("teacher", {"perplexity": 15.0}, params=0)

    ratios = scorecard.versus_teacher(student, teacher, "perplexity")

    assert ratios["retention"] == pytest.approx(0.75)  # the teacher's 15 over the student's 20
    assert ratios["smaller"] == 0.0 and ratios["faster_bs1"] is None  # no latency measured: no ratio


def test_a_ratio_with_a_zero_denominator_or_a_missing_number_is_none():
    assert scorecard.safe_ratio(lambda a, b: a / b, 1.0, None) is None
    student = ev("student", {"accuracy": 0.5}, params=0)
    assert scorecard.versus_teacher(student, teacher_ev(0.0))["retention"] is None
    assert scorecard.versus_teacher(student, teacher_ev())["smaller"] is None


def test_it_tables_one_runs_evaluations():
    evaluations = [
        ev("student", {"accuracy": 0.72, "f1": 0.7, "loss": 0.6}, bytes=2_500_000, bs1=2.0, bs32=10.0),
        teacher_ev(),
        ev("student", {"accuracy": 0.7}, split="test"),
    ]

    table = scorecard.evaluation_table(evaluations)

    assert table["metrics"] == [("accuracy", "accuracy"), ("f1", "F1")]  # the loss is no task metric
    assert table["primary_label"] == "accuracy"
    assert table["rows"][0] == {
        "role": "student",
        "split": "validation",
        "metrics": {"accuracy": 0.72, "f1": 0.7, "loss": 0.6},
        "params": 1_000,
        "mb": 2.5,
        "bs1_ms": 2.0,
        "bs32_ms": 10.0,
    }
    assert [c["split"] for c in table["comparisons"]] == ["validation"]  # the test split has no teacher
    assert table["comparisons"][0]["retention"] == pytest.approx(0.8)


def test_the_final_score_is_the_trained_models_primary_metric():
    evaluations = [ev("student", {"accuracy": 0.7}), teacher_ev(0.95)]
    assert scorecard.final_score(run(1, "kd_logits", evaluations), evaluations) == 0.7
    finetune = run(2, "teacher_finetune", evaluations)
    assert scorecard.trained_role(finetune) == "teacher"
    assert scorecard.final_score(finetune, evaluations) == 0.95


def study() -> list[SimpleNamespace]:
    """Two seeds of the full method, one of an ablation and of each baseline, out of order."""
    return [
        run(5, "no_kd", [ev("student", {"accuracy": 0.6}, bs1=2.0, bs32=10.0), teacher_ev()]),
        run(2, "kd_feature", [ev("student", {"accuracy": 0.86}, bs1=2.0, bs32=10.0), teacher_ev()], seed=1),
        run(1, "kd_feature", [ev("student", {"accuracy": 0.8}, bs1=2.0, bs32=10.0), teacher_ev()], seed=0),
        run(3, "kd_feature", [ev("student", {"accuracy": 0.84}), teacher_ev()], loss={"attention": 0}),
        run(4, "kd_logits", [], lr=0.1),  # not measured yet
    ]


def test_the_scorecard_orders_runs_by_variant_then_seed():
    card = scorecard.study_scorecard(study())

    assert [(r["variant"], r["seed"]) for r in card["rows"]] == [
        ("kd_feature", 0),
        ("kd_feature", 1),
        ("output+feature", 0),
        ("kd_logits", 0),
        ("no_kd", 0),
    ]
    assert card["primary"] == "accuracy" and card["lower_is_better"] is False
    assert card["teacher"]["run"].pk == 1 and card["teacher"]["params"] == 4_000


def test_the_scorecard_computes_each_rows_ratios_and_marks_the_best_student():
    rows = scorecard.study_scorecard(study())["rows"]

    first = rows[0]
    assert first["retention"] == pytest.approx(0.8 / 0.9)
    assert first["smaller"] == 4.0
    assert first["artifact"].pk == 1
    assert [r["best"] for r in rows] == [False, True, False, False, False]  # 0.86, the highest accuracy
    unmeasured = rows[3]
    assert unmeasured["measured"] is False and unmeasured["retention"] is None and unmeasured["metrics"] == {}


def test_the_scorecard_groups_seeds_with_their_mean_and_spread():
    groups = scorecard.study_scorecard(study())["groups"]

    assert [(g["variant"], g["n"], g["seeds"]) for g in groups] == [
        ("kd_feature", 2, [0, 1]),
        ("output+feature", 1, [0]),
        ("no_kd", 1, [0]),
    ]
    accuracy = groups[0]["stats"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(0.83)
    assert accuracy["std"] == pytest.approx(statistics.stdev([0.8, 0.86]))
    assert groups[1]["stats"]["accuracy"] == {"mean": 0.84, "std": 0.0}
    assert [g["best"] for g in groups] == [False, True, False]  # 0.84 beats the mean 0.83


def test_the_scorecard_leaves_out_groups_when_each_variant_has_one_seed():
    card = scorecard.study_scorecard([r for r in study() if r.pk != 2])
    assert card["groups"] == []


def test_the_best_language_model_has_the_lowest_perplexity():
    runs = [
        run(
            1, "kd_logits", [ev("student", {"perplexity": 30.0}), ev("teacher", {"perplexity": 10.0})], task="causal_lm"
        ),
        run(2, "no_kd", [ev("student", {"perplexity": 25.0}), ev("teacher", {"perplexity": 10.0})], task="causal_lm"),
    ]

    card = scorecard.study_scorecard(runs)

    assert card["primary"] == "perplexity" and card["lower_is_better"] is True
    assert [r["best"] for r in card["rows"]] == [False, True]
    assert card["rows"][1]["retention"] == pytest.approx(0.4)


def test_the_config_diff_names_the_keys_that_differ():
    runs = study()

    diff = scorecard.config_diff([runs[1], runs[3], runs[4]])

    assert diff == [
        {"key": "kind", "values": ["kd_feature", "kd_feature", "kd_logits"]},
        {"key": "seed", "values": [1, 0, 0]},
        {"key": "loss.attention", "values": [None, 0, None]},
        {"key": "lr", "values": [None, None, 0.1]},
    ]  # in the engine's field order (unknown keys last); the names differ too, but always do
    assert scorecard.config_diff(runs[:1]) == []


def test_the_config_diff_leaves_out_what_a_runs_kind_and_task_do_not_read():
    feature = run(1, "kd_feature", [], loss={"attention": 1.0, "temperature": 2.0}, generation={"samples": 8})
    logits = run(2, "kd_logits", [], loss={"attention": 0.0, "temperature": 4.0}, generation={"samples": 32})

    diff = {d["key"]: d["values"] for d in scorecard.config_diff([feature, logits])}

    # kd_logits has no attention term: its 0 is not a difference worth a row, its temperature is
    assert diff["loss.attention"] == [1.0, None] and diff["loss.temperature"] == [2.0, 4.0]
    assert "generation.samples" not in diff  # classification runs generate nothing


# --- speed: only from one side-by-side measurement -------------------------------------------------------


def timing(median: float, spread: float = 0.5) -> dict[str, float]:
    return {"median_ms": median, "p10_ms": median - spread, "p90_ms": median + spread, "throughput": 1.0}


def side_by_side(teacher: tuple[float, float], runs: dict[int, tuple[float, float]], **conditions: Any) -> dict:
    """A ``Measurement.result`` as the worker stores it: ``(bs1, bs32)`` medians per model, the teacher first."""
    models = [
        {"name": name, "run": run, "params": 1, "peak_mb": 10.0, "latency": {"bs1": timing(b1), "bs32": timing(b32)}}
        for name, run, (b1, b32) in [("teacher", None, teacher), *((f"run {pk}", pk, t) for pk, t in runs.items())]
    ]
    facts = {"host": "w@h", "threads": 1, "seq_len": 24, "rounds": 9, "stable": True, "seconds": 3.0, "cpus": 2}
    return {"models": models, **facts, "load_max": 0.3, "foreign_cores": 0.1, "heavy_load": False, **conditions}


def test_without_a_side_by_side_measurement_no_row_is_faster_and_the_card_says_so():
    """The in-run latencies (each student against the teacher timed in its own run) are never divided."""
    card = scorecard.study_scorecard(study())
    assert card["side_by_side"] is None and card["speed_note"] == "not measured side by side yet"
    for row in card["rows"]:
        assert row["faster_bs1"] is row["faster_bs32"] is row["bs1_ms"] is row["teacher_bs1_ms"] is None
    assert card["teacher"]["bs1_ms"] is None and card["groups"][0]["stats"].get("bs1_ms") is None


def test_every_row_is_faster_against_the_one_teacher_figure_of_the_measurement():
    # in-run teachers said 8 ms; the measurement's teacher is 6 ms (bs1) and 30 ms (bs32) for every row
    measured = side_by_side((6.0, 30.0), {1: (2.0, 10.0), 2: (3.0, 15.0), 5: (1.5, 6.0)})
    card = scorecard.study_scorecard(study(), measured)
    rows = {row["run"].pk: row for row in card["rows"]}
    assert rows[1]["faster_bs1"] == pytest.approx(3.0) and rows[1]["faster_bs32"] == pytest.approx(3.0)
    assert rows[2]["faster_bs1"] == pytest.approx(2.0) and rows[5]["faster_bs32"] == pytest.approx(5.0)
    assert {(r["teacher_bs1_ms"], r["teacher_bs32_ms"]) for r in rows.values() if r["faster_bs1"]} == {(6.0, 30.0)}
    assert (rows[1]["bs1_p10"], rows[1]["bs1_ms"], rows[1]["bs1_p90"]) == (1.5, 2.0, 2.5)
    assert rows[1]["peak_mb"] == 10.0
    # runs the measurement did not cover have no speed
    assert rows[3]["faster_bs1"] is rows[3]["bs1_ms"] is rows[4]["faster_bs1"] is None
    teacher = card["teacher"]
    assert (teacher["bs1_ms"], teacher["bs32_ms"], teacher["bs1_p90"]) == (6.0, 30.0, 6.5)
    assert card["speed_note"] is None
    assert card["side_by_side"] == {
        "host": "w@h",
        "threads": 1,
        "seq_len": 24,
        "rounds": 9,
        "stable": True,
        "seconds": 3.0,
        "cpus": 2,
        "load_max": 0.3,
        "foreign_cores": 0.1,
        "heavy_load": False,
    }
    kd_feature = card["groups"][0]["stats"]
    assert kd_feature["faster_bs1"] == {"mean": pytest.approx(2.5), "std": pytest.approx(statistics.stdev([3, 2]))}


def test_a_measurement_under_heavy_load_is_flagged_on_the_card():
    measured = side_by_side((6.0, 30.0), {1: (2.0, 10.0)}, heavy_load=True, foreign_cores=1.2, load_max=3.1)
    card = scorecard.study_scorecard(study(), measured)
    assert card["side_by_side"]["heavy_load"] is True and card["side_by_side"]["foreign_cores"] == 1.2


def test_a_measurement_without_its_teacher_gives_no_ratio():
    measured = side_by_side((6.0, 30.0), {1: (2.0, 10.0)})
    measured["models"] = measured["models"][1:]
    rows = scorecard.study_scorecard(study(), measured)["rows"]
    assert rows[0]["bs1_ms"] == 2.0 and rows[0]["faster_bs1"] is None
    assert scorecard.side_by_side_faster(measured) == {1: {"bs1": None, "bs32": None}}
