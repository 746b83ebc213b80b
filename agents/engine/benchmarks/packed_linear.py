"""Decoding step time of the embedded model in float32 with plain ``nn.Linear`` layers (MKL's
sgemm) and with the local backend's oneDNN-packed ones (:mod:`mentalarena.agents.engine.packed_linear`),
side by side.

Both models come from the same folder. Each batch size decodes the same left-padded prompts
(lengths spread like arena prompts) from the same cached prefill, the two models taking turns
round by round, so that a slow moment of this shared machine hits both. Prints the median
milliseconds per step, the ratio, and the batch-8 step over the batch-1 step of each (what bounds
how much batching can gain), and appends them to ``agents/engine/benchmarks/packed_linear.jsonl``.

    python -m mentalarena.agents.engine.benchmarks.packed_linear [--batches 1 8 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mentalarena.agents.engine.benchmarks.decode_attention import arena_like_lengths, step_milliseconds
from mentalarena.agents.engine.packed_linear import PackedLinear, can_pack
from mentalarena.agents.models import embedded_model_dir, load_local_model
from mentalarena.agents.provenance import append_result

RESULTS = Path(__file__).with_name("packed_linear.jsonl")


def main() -> None:
    """Time plain and packed linear layers decoding at each batch size, print the figures and append them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--steps", type=int, default=24, help="decoding steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="timings of each model per batch size")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    folder = str(embedded_model_dir())
    packed, tokenizer = load_local_model(folder, "float32")
    if not any(isinstance(m, PackedLinear) for m in packed.modules()):
        raise SystemExit(f"no packed layers to compare: can_pack is {can_pack(packed)} here (torch without oneDNN?)")
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    # Both attend with SDPA, as the generator's attention does in float32.
    rows = []
    for batch in args.batches:
        lengths = arena_like_lengths(batch)
        ms = step_milliseconds(
            {"plain": lambda: plain, "packed": lambda: packed}, tokenizer, lengths, args.steps, args.rounds
        )
        rows.append(
            {
                "batch": batch,
                "longest_prompt": max(lengths),
                "ms_per_step": ms,
                "plain_over_packed": round(ms["plain"] / ms["packed"], 2),
            }
        )
        print(
            f"batch {batch:3d}: plain {ms['plain']:7.2f} ms/step, packed {ms['packed']:7.2f} ms/step, "
            f"plain / packed = {rows[-1]['plain_over_packed']}"
        )
    by_batch = {row["batch"]: row["ms_per_step"] for row in rows}
    if 1 in by_batch and 8 in by_batch:
        for name in ("plain", "packed"):
            print(f"{name}: a batch-8 step takes {by_batch[8][name] / by_batch[1][name]:.2f}x a batch-1 step")
    append_result(RESULTS, {"dtype": "torch.float32", "steps": args.steps, "rounds": args.rounds, "batches": rows})


if __name__ == "__main__":
    main()
