"""The run config: parsing, YAML, precise errors, and the checks against the teacher's architecture."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import (
    KIND_TERMS,
    MAX_LATENCY_REPEATS,
    MAX_SEED,
    MAX_STEPS,
    TASK_LOSS_DEFAULTS,
    TERMS,
    ConfigError,
    LossConfig,
    format_location,
    load_config,
    loss_defaults,
    parse_config,
)
from distill.layer_map import (
    DUPLICATE_STUDENT,
    EMPTY_MAP,
    OUT_OF_RANGE,
    resolve_layer_map,
    spread_blocks,
    uniform_pairs,
)
from distill.students import validate_against
from distill.teachers import Architecture

MINILM = Architecture("bert", 6, 384, 12, 12, 1536, 30522, 22_713_216, ("rotten", "fresh"), 512)


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return dict(info.value.errors)


def test_it_parses_a_full_config_and_is_frozen(base_config):
    cfg = parse_config(base_config)
    assert cfg.student.layers == 2 and cfg.optim.max_steps == 6
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 4


def test_it_round_trips_through_json(base_config):
    cfg = parse_config(base_config)
    assert parse_config(cfg.model_dump(mode="json")) == cfg


def test_it_loads_yaml_and_reports_bad_files(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("kind: no_kd\nteacher: {source: x}\nstudent: {layers: 2}\ndata: {source: y}\n")
    assert load_config(path).kind == "no_kd"
    path.write_text("kind: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_it_names_the_field_and_reason(base_config):
    base_config["optim"]["lr"] = -1
    base_config["student"]["layers"] = 0
    base_config["loss"] = {"temperature": 0, "attention_variant": "cosine"}
    errors = errors_of(base_config)
    assert errors["optim.lr"] == "Input should be greater than 0"
    assert errors["student.layers"] == "Input should be greater than 0"
    assert errors["loss.temperature"] == "Input should be greater than 0"
    assert "'kl' or 'mse'" in errors["loss.attention_variant"]


def test_it_rejects_unknown_fields(base_config):
    base_config["optim"]["learning_rate"] = 0.1
    assert errors_of(base_config) == {"optim.learning_rate": "Extra inputs are not permitted"}


def test_it_requires_a_student_for_kd_and_refuses_one_for_finetuning(base_config):
    del base_config["student"]
    assert errors_of(base_config) == {"student": "required for kind kd_feature"}
    base_config["kind"] = "teacher_finetune"
    assert parse_config(base_config).student is None


def test_it_refuses_a_loss_with_every_used_term_at_zero(base_config):
    base_config["kind"] = "no_kd"
    base_config["loss"] = {"task": 0}
    assert errors_of(base_config) == {"loss": "every term used by kind no_kd has weight 0"}


def test_it_switches_terms_by_kind_and_schedule(base_config):
    cfg = parse_config({**base_config, "kind": "kd_logits"})
    assert cfg.loss_weights() == {"task": 1.0, "output": 1.0, "feature": 0.0, "attention": 0.0}
    assert parse_config({**base_config, "kind": "no_kd"}).loss_weights()["output"] == 0.0
    phased = parse_config({**base_config, "loss": {"schedule": "features_first", "features_first_fraction": 0.5}})
    assert phased.loss_weights(step=4, total_steps=10)["output"] == 0.0
    assert phased.loss_weights(step=4, total_steps=10)["feature"] == 1.0
    assert phased.loss_weights(step=5, total_steps=10)["output"] == 1.0
    fading = parse_config({**base_config, "loss": {"schedule": "features_fade", "feature": 0.5}})
    start, half = fading.loss_weights(step=0, total_steps=10), fading.loss_weights(step=5, total_steps=10)
    assert start == {"task": 1.0, "output": 1.0, "feature": 0.5, "attention": 1.0}
    assert half == {"task": 1.0, "output": 1.0, "feature": 0.25, "attention": 0.5}
    assert fading.loss_weights(step=9, total_steps=10)["feature"] == pytest.approx(0.05)


def test_a_causal_lm_takes_its_tasks_loss_defaults_for_the_fields_it_leaves_out(base_config):
    lm = {**base_config, "task": "causal_lm"}
    assert parse_config(lm).loss.model_dump() == loss_defaults("causal_lm")
    assert loss_defaults("causal_lm")["attention"] == 0.0 != loss_defaults("classification")["attention"]
    assert parse_config(base_config).loss == LossConfig()  # a classifier keeps the fields' own defaults
    given = parse_config({**lm, "loss": {"attention": 2.0}}).loss
    assert (given.attention, given.feature) == (2.0, TASK_LOSS_DEFAULTS["causal_lm"]["feature"])
    stored = parse_config(lm).model_dump(mode="json")
    assert parse_config(stored) == parse_config(lm)  # a stored config reads back the same


@pytest.mark.parametrize("kind", list(KIND_TERMS))
def test_each_kind_trains_with_the_terms_of_its_table(base_config, kind, monkeypatch):
    raw = {**base_config, "kind": kind} | ({"student": None} if kind == "teacher_finetune" else {})
    weights = parse_config(raw).loss_weights()
    assert [term for term, weight in weights.items() if weight] == list(KIND_TERMS[kind])
    # a term added to a kind's row is trained with from then on (the full method has every term already)
    for term in [t for t in TERMS if t not in KIND_TERMS[kind]][:1]:
        monkeypatch.setitem(KIND_TERMS, kind, (*KIND_TERMS[kind], term))
        assert parse_config(raw).loss_weights()[term] == 1.0


def test_it_formats_locations():
    loc = ("student", "layer_map", "tuple[LayerPair, ...]", 2, "teacher")
    assert format_location(loc) == "student.layer_map[2].teacher"


def test_it_accepts_pairs_as_lists_or_mappings(base_config):
    base_config["student"]["layer_map"] = [[0, 0], [1, 2, 2.0], {"student": 2, "teacher": 4, "attention_weight": 0}]
    pairs = parse_config(base_config).student.layer_map
    assert (pairs[1].teacher, pairs[1].feature_weight) == (2, 2.0)
    assert pairs[2].attention_weight == 0


def test_it_maps_uniformly():
    assert uniform_pairs(3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert uniform_pairs(4, 6) == [(1, 2), (2, 3), (3, 5), (4, 6)]
    assert uniform_pairs(6, 6) == [(i, i) for i in range(1, 7)]


def test_a_copied_student_keeps_the_first_and_last_blocks_and_one_of_each_span_between():
    assert spread_blocks(3, 6) == [(1, 1), (2, 4), (3, 6)]
    assert spread_blocks(1, 6) == [(1, 6)]
    assert spread_blocks(6, 6) == [(i, i) for i in range(1, 7)]
    for student, teacher in [(3, 6), (4, 6), (20, 30), (2, 12), (5, 7)]:
        ends = [0] + [t for _, t in uniform_pairs(student, teacher)]  # block i replaces teacher (ends[i-1], ends[i]]
        assert all(ends[i - 1] < t <= ends[i] for i, t in spread_blocks(student, teacher)), (student, teacher)


def test_it_resolves_strategies_with_the_embedding_pair(base_config):
    cfg = parse_config({**base_config, "student": {"layers": 3, "layer_map": "last"}})
    assert [(p.student, p.teacher) for p in resolve_layer_map(cfg.student, 6)] == [(0, 0), (3, 6)]
    cfg = parse_config({**base_config, "student": {"layers": 3, "map_embeddings": False}})
    assert [(p.student, p.teacher) for p in resolve_layer_map(cfg.student, 6)] == [(1, 2), (2, 4), (3, 6)]


def test_it_validates_a_custom_map_against_both_depths(base_config):
    base_config["student"] = {"layers": 3, "layer_map": [[1, 2], [2, 4], [3, 7], [4, 6], [2, 1]]}
    with pytest.raises(ConfigError) as info:
        validate_against(parse_config(base_config), MINILM)
    assert str(info.value).splitlines() == [
        "student.layer_map[2]: " + OUT_OF_RANGE.format(side="teacher", index=7, depth=6),
        "student.layer_map[3]: " + OUT_OF_RANGE.format(side="student", index=4, depth=3),
        "student.layer_map[4]: " + DUPLICATE_STUDENT.format(index=2),
    ]
    assert "student.layer_map[2]: teacher layer 7 out of range 0..6" in str(info.value)
    base_config["student"]["layer_map"] = []
    with pytest.raises(ConfigError, match=EMPTY_MAP):
        validate_against(parse_config(base_config), MINILM)


def test_it_checks_the_student_shape_against_the_teacher(base_config):
    base_config["student"] = {"layers": 3, "hidden_size": 250, "heads": 4}
    errors = dict(_validate_errors(base_config))
    assert errors["student.heads"] == "hidden size 250 is not divisible by 4 heads"
    assert errors["student.init"].startswith("cannot copy teacher layers into width 250")
    base_config["student"] = {"layers": 3, "hidden_size": 256, "heads": 4, "init": "random"}
    pairs = validate_against(parse_config(base_config), MINILM)
    assert [(p.student, p.teacher) for p in pairs] == [(0, 0), (1, 2), (2, 4), (3, 6)]


def _validate_errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_against(parse_config(data), MINILM)
    return info.value.errors


def test_it_refuses_texts_longer_than_the_teachers_positions(base_config):
    base_config["data"]["max_length"] = 1024
    assert dict(_validate_errors(base_config)) == {"data.max_length": "1024 is more than the teacher's 512 positions"}
    base_config["kind"] = "teacher_finetune"
    del base_config["student"]
    assert dict(_validate_errors(base_config)) == {"data.max_length": "1024 is more than the teacher's 512 positions"}


def test_it_applies_overrides_before_validating(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("kind: no_kd\nteacher: {source: x}\nstudent: {layers: 2}\ndata: {source: y}\noptim: {lr: -1}\n")
    cfg = load_config(path, ["optim.lr=0.001", "student.layer_map=[[1, 2], [2, 4]]"])
    assert cfg.optim.lr == 0.001 and cfg.student.layer_map[1].teacher == 4
    with pytest.raises(ConfigError, match=r"optim\.lr is not a section"):
        load_config(path, ["optim.lr.x=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["optim.lr"])


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.name and cfg.output_dir.startswith("runs/")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seed", -1, "greater than or equal to 0"),
        ("seed", MAX_SEED + 1, f"less than or equal to {MAX_SEED}"),
        ("optim.max_steps", 1e10, f"less than or equal to {MAX_STEPS}"),
        ("latency_repeats", 1_000_000_000, f"less than or equal to {MAX_LATENCY_REPEATS}"),
    ],
)
def test_it_bounds_every_number(base_config, field, value, message):
    """The cases of issue 11; every numeric field is walked through the API in tests/jobs/api/test_api.py."""
    section, _, leaf = field.rpartition(".")
    (base_config.setdefault(section, {}) if section else base_config)[leaf] = value
    assert message in errors_of(base_config)[field]
    bound = {"seed": MAX_SEED, "optim.max_steps": MAX_STEPS, "latency_repeats": MAX_LATENCY_REPEATS}[field]
    (base_config[section] if section else base_config)[leaf] = bound
    parse_config(base_config)  # the bound itself is valid
