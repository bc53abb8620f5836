"""What a causal LM's output terms hold in memory: a hand-written chunked step against the estimate.

``distill.estimate`` counts, for a causal LM, a chunk of vocabulary-sized tensors per model instead of the
full B · L · V logits. This measures that term in isolation: the student's final hidden states (a leaf
that stands in for the model below them) and the teacher's go through the LM heads chunk by chunk; each
chunk's task CE (and, for KD, T²·KL against the teacher) is backpropagated into the hidden states at once,
so only one chunk of logits lives at a time. Each case runs in a fresh process; the figure is its peak
resident memory above the resident size before the step, less the head's weight gradient (the estimate
counts that under the optimizer). The ``full`` case is the unchunked step, for comparison.

    .venv/bin/python bench/logits_memory.py     # writes bench/results/logits_memory.json and .md (~1 min)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.output import write_results  # noqa: E402
from distill.estimate import BYTES_PER_FLOAT, LOGITS_COPIES  # noqa: E402
from distill.memory import peak_rss, reset_peak  # noqa: E402

B, L, D, V, T = 8, 256, 576, 49152, 2.0  # SmolLM2-135M's width and vocabulary
N = B * L
CASES = [("kd", 1024), ("kd", 512), ("kd", 256), ("ce", 1024), ("ce", 512), ("full_kd", N)]


def _terms(s: torch.Tensor, p_t: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    """Summed task CE plus T²·KL(teacher ‖ student) over the rows of one chunk."""
    loss = F.cross_entropy(s, labels, reduction="sum")
    if p_t is not None:
        loss = loss + T * T * (torch.xlogy(p_t, p_t) - p_t * F.log_softmax(s / T, -1)).sum()
    return loss / N


def child(mode: str, chunk: int) -> None:
    torch.manual_seed(0)
    head_s = torch.nn.Linear(D, V, bias=False)
    head_t = torch.nn.Linear(D, V, bias=False).requires_grad_(False)
    h_s = torch.randn(N, D, requires_grad=True)
    h_t = torch.randn(N, D)
    labels = torch.randint(0, V, (N,))
    kd = mode != "ce"
    baseline = reset_peak()
    grad = torch.zeros(N, D)
    for i in range(0, N, chunk):
        x = h_s.detach()[i : i + chunk].clone().requires_grad_()
        with torch.no_grad():  # the teacher's probabilities only: its logits are freed at once
            p_t = F.softmax(head_t(h_t[i : i + chunk]) / T, -1) if kd else None
        _terms(head_s(x), p_t, labels[i : i + chunk]).backward()
        grad[i : i + chunk] = x.grad
        del p_t, x
    h_s.backward(grad)
    measured = peak_rss() - baseline - BYTES_PER_FLOAT * V * D  # less the head's weight gradient
    copies = LOGITS_COPIES["student"] + (LOGITS_COPIES["teacher"] if kd else 0)
    estimated = BYTES_PER_FLOAT * (min(chunk, N) * V * copies + N * D * (2 if kd else 1))
    print(json.dumps({"mode": mode, "chunk": chunk, "measured_mb": measured / 2**20, "estimate_mb": estimated / 2**20}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=2, metavar=("MODE", "CHUNK"))
    args = p.parse_args()
    if args.child:
        torch.set_num_threads(1)
        child(args.child[0], int(args.child[1]))
        return
    rows = []
    for mode, chunk in CASES:
        cmd = [sys.executable, __file__, "--child", mode, str(chunk)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        print(rows[-1], flush=True)
    lines = [
        "# Memory of a causal LM's output terms: chunked step vs `distill.estimate`",
        "",
        f"B x L = {B} x {L} tokens, hidden {D}, vocabulary {V} (SmolLM2-135M's), fp32, hand-written chunked "
        f"step (see the script). Estimate: {LOGITS_COPIES['student']} vocabulary-sized copies per chunk token "
        f"for the task term, {LOGITS_COPIES['teacher']} more with the KL term, plus the final hidden states. "
        "`full_kd` is the unchunked step: one chunk of all tokens. "
        "Command: `.venv/bin/python bench/logits_memory.py`.",
        "",
        "| case | chunk | measured (MB) | estimated (MB) |",
        "|---|---|---|---|",
        *(f"| {r['mode']} | {r['chunk']} | {r['measured_mb']:.0f} | {r['estimate_mb']:.0f} |" for r in rows),
        "",
    ]
    write_results("logits_memory", rows, "\n".join(lines))


if __name__ == "__main__":
    main()
