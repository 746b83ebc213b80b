"""Decoding step time of the embedded model with torch's SDPA and with the local backend's
:func:`~mentalarena.agents.engine.generator.grouped_attention` (at every batch size here, so the figures say
from which batch the generator should use it), side by side.

Each batch size decodes the same left-padded prompts (lengths spread like arena prompts) from the
same cached prefill, alternating the two attentions round by round, so that a slow moment of this
shared machine hits both. Prints the median milliseconds per step and the ratio, and appends them
to ``agents/engine/benchmarks/decode_attention.jsonl``.

    python -m mentalarena.agents.engine.benchmarks.decode_attention [--dtype bfloat16 --batches 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mentalarena.agents.engine.generator import (
    DECODE_ATTENTION,
    generation_options,
    grouped_attention,
    local_generator,
    register_attention,
)
from mentalarena.agents.models import GenerationSettings, embedded_model_dir
from mentalarena.agents.provenance import append_result

if TYPE_CHECKING:
    import torch

RESULTS = Path(__file__).with_name("decode_attention.jsonl")
GROUPED = "mentalarena_grouped_always"
ATTENTIONS = ("sdpa", GROUPED)


def grouped_always(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The grouped matmuls for every decoding step (``generate`` after a full cache decodes only)."""
    # transformers' attention layers always pass their scaling
    return grouped_attention(query, key, value, attention_mask, cast(float, scaling)), None


def step_milliseconds(
    variants: dict[str, Callable[[], Any]], tokenizer: Any, lengths: list[int], steps: int, rounds: int
) -> dict[str, float]:
    """Median milliseconds per decoding step of each variant on one padded batch. A variant is a
    callable that readies and returns the model to time; they take turns round by round, each from
    the same cached prefill."""
    import torch
    from transformers import DynamicCache, StaticCache

    width = max(lengths)
    random_ids = torch.Generator().manual_seed(0)
    rows = [torch.randint(100, 40_000, (length + 1,), generator=random_ids).tolist() for length in lengths]
    batch = tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    options = {
        **generation_options(GenerationSettings(temperature=0.7, max_new_tokens=steps), tokenizer.pad_token_id),
        "eos_token_id": None,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        first = next(iter(variants.values()))()
        prefilled = DynamicCache(config=first.config)
        first(
            input_ids=input_ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            past_key_values=prefilled,
            use_cache=True,
            logits_to_keep=1,
        )
        for _ in range(rounds):
            for name, ready in variants.items():
                model = ready()
                cache = StaticCache(config=model.config, max_cache_len=width + 1 + steps)
                for layer, states in enumerate(prefilled.layers):
                    cache.update(states.keys, states.values, layer)  # type: ignore[union-attr, arg-type]  # a full-attention layer's
                started = time.perf_counter()
                model.generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **options)
                times[name].append(1000 * (time.perf_counter() - started) / steps)
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def arena_like_lengths(batch: int) -> list[int]:
    """Prompt lengths in tokens, spread as the arena's are from first to late turns."""
    spread = [320, 880, 540, 760, 410, 930, 650, 700]
    return (spread * (batch // len(spread) + 1))[:batch]


def main() -> None:
    """Time SDPA and grouped attention decoding at each batch size, print the figures and append them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", help="the local model's dtype (auto, bfloat16, float32)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=24, help="decoding steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="timings of each attention per batch size")
    args = parser.parse_args()

    generator = local_generator(str(embedded_model_dir()), args.dtype)
    model = generator.model
    register_attention(GROUPED, grouped_always)

    def attention(name: str) -> Callable[[], Any]:
        def ready() -> Any:
            model.set_attn_implementation(name)
            return model

        return ready

    rows = []
    try:
        for batch in args.batches:
            lengths = arena_like_lengths(batch)
            ms = step_milliseconds(
                {name: attention(name) for name in ATTENTIONS}, generator.tokenizer, lengths, args.steps, args.rounds
            )
            rows.append(
                {
                    "batch": batch,
                    "longest_prompt": max(lengths),
                    "ms_per_step": ms,
                    "sdpa_over_grouped": round(ms["sdpa"] / ms[GROUPED], 2),
                }
            )
            print(
                f"batch {batch:3d}: SDPA {ms['sdpa']:7.2f} ms/step, grouped {ms[GROUPED]:7.2f} ms/step, "
                f"SDPA / grouped = {rows[-1]['sdpa_over_grouped']}"
            )
    finally:
        model.set_attn_implementation(DECODE_ATTENTION)  # the generator's own choice, as it was
    append_result(RESULTS, {"dtype": str(model.dtype), "steps": args.steps, "rounds": args.rounds, "batches": rows})


if __name__ == "__main__":
    main()
