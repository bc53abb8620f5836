"""LoRA teacher fine-tuning: default and checked targets, training, bit-exact resume and the merged export."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

from distill.config import ConfigError, LoraConfig, parse_config
from distill.lora import apply_lora, default_target_modules, linear_layer_names, merge_adapter, validate_lora
from distill.teachers import load_config
from distill.trainer import train
from tests.recording import Recorder, assert_resume_is_bit_exact

BERT_LINEAR = "query, key, value, dense"
LLAMA_LINEAR = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"


def tiny_llama_config() -> LlamaConfig:
    """Grouped-query attention: 4 query heads share 2 key/value heads."""
    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )


@pytest.fixture
def lora_config(base_config, assets) -> dict:
    """A LoRA fine-tuning of the tiny backbone. Its random weights hold no features for query/value
    adapters to steer, so every linear layer of the blocks is adapted, at a high lr."""
    cfg = {**base_config, "kind": "teacher_finetune", "teacher": {"source": str(assets["backbone"])}}
    del cfg["student"]
    cfg["lora"] = {"rank": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "key", "value", "dense"]}
    cfg["optim"] = {"batch_size": 16, "epochs": 6, "lr": 5e-3}
    return cfg


def test_it_defaults_to_the_attention_projections():
    assert default_target_modules("bert") == ("query", "value")
    assert default_target_modules("llama") == ("q_proj", "v_proj")
    with pytest.raises(ConfigError, match=r"lora\.target_modules: no default for model type 'nope'"):
        default_target_modules("nope")


def test_it_lists_the_linear_layers_without_the_heads(assets):
    bert = AutoModelForSequenceClassification.from_pretrained(assets["teacher"])
    assert ", ".join(linear_layer_names(bert)) == BERT_LINEAR  # not "classifier"
    assert ", ".join(linear_layer_names(LlamaForCausalLM(tiny_llama_config()))) == LLAMA_LINEAR  # not "lm_head"


def test_it_names_the_unknown_target_and_the_real_ones(assets):
    bert = load_config(str(assets["teacher"]))
    with pytest.raises(ConfigError) as exc:
        validate_lora(LoraConfig(target_modules=("query", "foo")), bert, "classification")
    assert str(exc.value) == f"lora.target_modules: no layer named 'foo' in bert (linear layers: {BERT_LINEAR})"
    assert validate_lora(LoraConfig(), bert, "classification") == ("query", "value")
    llama = tiny_llama_config()
    assert validate_lora(LoraConfig(), llama, "causal_lm") == ("q_proj", "v_proj")
    with pytest.raises(ConfigError, match=f"no layer named 'query' in llama \\(linear layers: {LLAMA_LINEAR}\\)"):
        validate_lora(LoraConfig(target_modules=("query",)), llama, "causal_lm")


def test_it_adapts_a_causal_lm_and_merges_it_back():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    wrapped = apply_lora(model, LoraConfig(rank=2, alpha=4, dropout=0.0), "causal_lm")
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and (".q_proj." in n or ".v_proj." in n) for n in trainable)
    with torch.no_grad():  # B is zero at init: give the adapters something to merge
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    wrapped.eval()
    expected = wrapped(input_ids=ids).logits
    merged = merge_adapter(wrapped)
    assert type(merged) is LlamaForCausalLM
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)


def test_it_trains_adapters_and_the_head_and_exports_a_plain_teacher(lora_config, assets):
    rec = Recorder()
    result = train(parse_config(lora_config), [rec])
    losses = [logs["loss/task"] for logs in rec.logs]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    assert result.metrics["teacher"]["accuracy"] > 0.8
    # rank 8 (A: 8 x in, B: out x 8) on each block's query, key, value and attention output (32 -> 32),
    # intermediate (32 -> 64) and output (64 -> 32) dense layers; the pooler and the new head in full
    blocks = 4 * (4 * 8 * (32 + 32) + 2 * 8 * (32 + 64))
    assert result.efficiency["teacher"]["trainable_params"] == blocks + (32 * 32 + 32) + (32 * 2 + 2)

    before = load_file(assets["backbone"] / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(result.export_dir / "model.safetensors").items()}
    assert set(after) - set(before) == {"classifier.weight", "classifier.bias"}  # a plain classifier
    # merged adapters changed the adapted weights and nothing else (no bias, norm or embedding) but the pooler
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapted = ("query.weight", "key.weight", "value.weight", "dense.weight")
    assert changed == {k for k in before if k.startswith("encoder.") and k.endswith(adapted)} | {
        "pooler.dense.weight",
        "pooler.dense.bias",
    }
    model = AutoModelForSequenceClassification.from_pretrained(result.export_dir)
    assert model.config.id2label == {0: "neg", 1: "pos"}

    kd = {**lora_config, "kind": "kd_logits", "student": {"layers": 2}, "teacher": {"source": str(result.export_dir)}}
    del kd["lora"]
    kd["output_dir"] = str(result.export_dir.parent.parent / "kd")
    assert train(parse_config(kd)).metrics["teacher"] == result.metrics["teacher"]  # the export is the teacher


def test_it_resumes_a_lora_run_bit_for_bit(lora_config, tmp_path):
    lora_config["optim"] = {"batch_size": 8, "max_steps": 8, "lr": 1e-2}
    assert_resume_is_bit_exact(lora_config, tmp_path)  # LoRA dropout, adapter and head state too


def test_it_refuses_an_unknown_target_before_training(lora_config):
    lora_config["lora"]["target_modules"] = ["query", "q_proj"]
    rec = Recorder()
    with pytest.raises(ConfigError, match=r"^lora\.target_modules: no layer named 'q_proj' in bert "):
        train(parse_config(lora_config), [rec])
    assert rec.events == ["exception:ConfigError"]
