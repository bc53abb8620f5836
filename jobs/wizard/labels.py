"""The wizard's words: the label of each config field it shows, in the order it shows them, and of each choice.

Only words and layout live here; what a field is (type, choices, bounds, help text) is the engine's
(``distill/config.py``), read by :mod:`jobs.wizard.fields`. A choice without a label shows its value.
"""

from __future__ import annotations

from jobs.models import Teacher

# kind -> (title, one-line explanation), in the order the teacher step offers them
KINDS: dict[str, tuple[str, str]] = {
    "kd_feature": (
        "Distil a student",
        "Feature-alignment KD, the full method: the student learns the teacher's hidden states, attention "
        "maps and outputs.",
    ),
    "teacher_finetune": (
        "Fine-tune a teacher",
        "Train the teacher itself on labelled data; when it succeeds it becomes a new teacher you can distil.",
    ),
    "kd_logits": (
        "Baseline: logits-only KD",
        "Hinton-style distillation: the student matches only the teacher's output distribution.",
    ),
    "no_kd": (
        "Baseline: no distillation",
        "The same student trained on the labels alone, to measure what distillation adds.",
    ),
}
TASKS: dict[str, tuple[str, str]] = {
    Teacher.Task.CLASSIFICATION: (
        "Text classification",
        "Labelled texts (sentiment, topic...): an encoder such as MiniLM with a classification head.",
    ),
    Teacher.Task.CAUSAL_LM: (
        "Causal language modelling",
        "Next-token prediction on plain text: a decoder such as SmolLM2 or Llama, scored by perplexity and by "
        "the BLEU, ROUGE-L and CER of its continuations.",
    ),
}

# config section -> {field: label}: the fields each step shows, in this order (the loss fields: per kind, the
# engine's KIND_TERMS and KIND_LOSS_SETTINGS)
LABELS: dict[str, dict[str, str]] = {
    "student": {
        "layers": "Blocks",
        "hidden_size": "Hidden size",
        "heads": "Attention heads",
        "kv_heads": "Key/value heads",
        "intermediate_size": "Feed-forward size",
        "init": "Initialisation",
    },
    "data": {
        "max_length": "Max length",
        "max_train_samples": "Max train samples",
        "max_eval_samples": "Max eval samples",
        "eval_split": "Evaluate on",
    },
    "generation": {
        "metrics": "Metrics",
        "samples": "Generation samples",
        "prompt_tokens": "Prompt tokens",
        "new_tokens": "New tokens",
    },
    "loss": {
        "task": "Task (labels)",
        "output": "Output (teacher's predictions)",
        "feature": "Hidden states",
        "attention": "Attention maps",
        "temperature": "Temperature",
        "feature_variant": "Hidden-state loss",
        "attention_variant": "Attention loss",
        "head_mapping": "Head mapping",
        "schedule": "Schedule",
        "features_first_fraction": "Features-first part",
        "teacher_cache": "Teacher-output cache",
        "teacher_cache_dtype": "Cache precision",
        "top_k": "Top-k tokens kept",
    },
    "optim": {
        "lr": "Learning rate",
        "epochs": "Epochs",
        "max_steps": "Max steps",
        "batch_size": "Batch size",
        "grad_accum": "Gradient accumulation",
        "warmup_ratio": "Warm-up",
        "scheduler": "Learning-rate schedule",
        "weight_decay": "Weight decay",
    },
    "lora": {"rank": "Rank", "alpha": "Alpha", "dropout": "Dropout", "target_modules": "Target modules"},
    "run": {"seed": "Seed", "lora": "Fine-tune with LoRA"},
}
# config section -> {field: {choice: label}}
CHOICES: dict[str, dict[str, dict[str, str]]] = {
    "student": {
        "init": {
            "teacher": "Copy the teacher's blocks (DistilBERT-style): a head start, needs the teacher's width",
            "random": "Random: any shape, learns everything from the teacher and the data",
        },
        "layer_map": {
            "uniform": "Uniform: student block i learns from teacher block round(i·T/S)",
            "last": "Last: only the last blocks are paired",
            "custom": "Custom: draw your own pairs",
        },
    },
    "data": {"eval_split": {"validation": "Validation split", "test": "Test split"}},
    "generation": {
        "metrics": {
            "perplexity": "Perplexity: exp of the mean next-token loss on held-out text (lower is better)",
            "bleu": "BLEU of the generated continuations against the real ones (0–100, higher is better)",
            "rouge_l": "ROUGE-L F-measure of the continuations (0–1, higher is better)",
            "cer": "CER: character error rate of the continuations (lower is better)",
        }
    },
    "loss": {
        "feature_variant": {
            "normalized_mse": "MSE / the teacher's variance",
            "standardized_mse": "MSE / each dimension's variance",
            "mse": "MSE",
            "cosine": "Cosine distance",
        },
        "attention_variant": {"kl": "KL (MiniLM-style)", "mse": "MSE (TinyBERT-style)"},
        "head_mapping": {"group": "Average the teacher's heads in groups", "mean": "Compare head-averaged maps"},
        "schedule": {
            "constant": "All terms from the start",
            "features_first": "Hidden states and attention first",
            "features_fade": "Hidden states and attention fading out",
        },
        "teacher_cache": {
            "build": "Build it when the run reads its examples more than once; read it when it exists",
            "use": "Read an existing cache only (the run fails without one)",
            "off": "Run the teacher at every step",
        },
        "teacher_cache_dtype": {
            "float16": "float16 (half the disk, a loss term moves by about 1e-5)",
            "bfloat16": "bfloat16 (float32's range, less precise)",
            "float32": "float32 (exact)",
        },
    },
    "optim": {"scheduler": {"linear": "Linear decay", "cosine": "Cosine decay", "constant": "Constant"}},
}
