"""Students of a causal-LM teacher: grouped-query attention built from a Llama teacher, parameter counts,
initialisation from mapped teacher blocks, and the checks against the teacher's shape and positions."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from distill.config import ConfigError, parse_config
from distill.students import build_student, count_student_parameters, student_config, validate_against
from distill.teachers import describe, load_causal_lm, load_config


def lm_cfg(lm_assets, **student):
    return parse_config(
        {
            "kind": "kd_feature",
            "task": "causal_lm",
            "teacher": {"source": str(lm_assets["teacher"])},
            "student": {"layers": 2, **student},
            "data": {"source": str(lm_assets["corpus"])},
        }
    )


@pytest.mark.parametrize(
    ("student", "kv_heads"),
    [({}, 2), ({"heads": 2, "hidden_size": 32, "init": "random"}, 1), ({"heads": 8, "kv_heads": 8}, 8)],
)
def test_student_kv_heads_keep_the_teachers_grouping_unless_given(lm_assets, student, kv_heads):
    cfg = lm_cfg(lm_assets, **student)
    t_config = load_config(cfg.teacher.source)
    validate_against(cfg, describe(t_config))
    config = student_config(t_config, cfg.student, describe(t_config), attentions=False)
    assert config.num_key_value_heads == kv_heads
    assert config.num_attention_heads % config.num_key_value_heads == 0
    assert config.architectures == ["LlamaForCausalLM"]
    with torch.device("meta"):
        counted = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    assert count_student_parameters(config) == counted


def test_it_validates_kv_heads_against_the_students_heads(lm_assets):
    cfg = lm_cfg(lm_assets, heads=8, kv_heads=3)
    with pytest.raises(ConfigError) as err:
        validate_against(cfg, describe(load_config(cfg.teacher.source)))
    assert err.value.errors == [("student.kv_heads", "3 kv heads do not divide 8 query heads")]


def test_it_copies_embeddings_mapped_blocks_and_tied_head(lm_assets):
    cfg = lm_cfg(lm_assets)
    t_config = load_config(cfg.teacher.source)
    teacher = load_causal_lm(cfg.teacher.source, attentions=False)
    config = student_config(t_config, cfg.student, describe(t_config), attentions=False)
    student = build_student(config, cfg.student, (), teacher, attentions=False)
    s, t = student.state_dict(), teacher.state_dict()
    # 2 of 4, spread: student block 1 <- teacher block 1 (a causal LM cannot lose it), block 2 <- block 4
    for name in ("self_attn.k_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
        assert torch.equal(s[f"model.layers.0.{name}"], t[f"model.layers.0.{name}"])
        assert torch.equal(s[f"model.layers.1.{name}"], t[f"model.layers.3.{name}"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert torch.equal(s["model.norm.weight"], t["model.norm.weight"])
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
    assert isinstance(student, type(teacher)) and student.dtype == torch.float32


def test_a_custom_map_copies_the_blocks_it_maps(lm_assets):
    cfg = lm_cfg(lm_assets, layer_map=[[1, 2], [2, 3]])
    pairs = cfg.student.layer_map
    t_config = load_config(cfg.teacher.source)
    teacher = load_causal_lm(cfg.teacher.source, attentions=False)
    config = student_config(t_config, cfg.student, describe(t_config), attentions=False)
    s = build_student(config, cfg.student, pairs, teacher, attentions=False).state_dict()
    t = teacher.state_dict()
    assert torch.equal(s["model.layers.0.mlp.down_proj.weight"], t["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(s["model.layers.1.mlp.down_proj.weight"], t["model.layers.2.mlp.down_proj.weight"])


def test_a_bfloat16_teacher_still_gives_a_float32_student(lm_assets):
    cfg = lm_cfg(lm_assets)
    t_config = load_config(cfg.teacher.source)
    teacher = load_causal_lm(cfg.teacher.source, attentions=False, dtype=torch.bfloat16)
    config = student_config(t_config, cfg.student, describe(t_config), attentions=False)
    student = build_student(config, cfg.student, (), teacher, attentions=False)
    assert teacher.dtype == torch.bfloat16 and student.dtype == torch.float32
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight.float())


def test_an_exported_config_round_trips(lm_assets, tmp_path):
    cfg = lm_cfg(lm_assets, kv_heads=1)
    t_config = load_config(cfg.teacher.source)
    config = student_config(t_config, cfg.student, describe(t_config), attentions=False)
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).num_key_value_heads == 1


def test_generation_lengths_must_fit_the_teachers_positions(lm_assets):
    cfg = parse_config(
        {
            "kind": "no_kd",
            "task": "causal_lm",
            "teacher": {"source": str(lm_assets["teacher"])},
            "student": {"layers": 2},
            "data": {"source": str(lm_assets["corpus"]), "max_length": 32},
            "generation": {"prompt_tokens": 100, "new_tokens": 40},
        }
    )
    with pytest.raises(ConfigError) as err:
        validate_against(cfg, describe(load_config(cfg.teacher.source)))
    assert err.value.errors[0][0] == "generation.new_tokens" and "128 positions" in err.value.errors[0][1]
