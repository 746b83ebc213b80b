"""Local Hugging Face chat models with dynamic batching.

Self-play spends nearly all its time generating, and a CPU generates several sequences in one
forward pass almost as fast as one. So every session that uses a local model submits its prompt
to one shared ``LocalGenerator``, whose worker thread gathers the requests that arrive within a
short, bounded wait and generates them as one left-padded batch.

Written here rather than taken from langchain-huggingface: its ``ChatHuggingFace`` over a local
pipeline has no async and generates one request at a time, so concurrent sessions could not
share a forward pass.

Prompts are prefilled through a :class:`PrefixCache`. Long prompts make CPU generation
prefill-bound, and nearly every arena prompt repeats one seen before (the same session's last
prompt plus its new turns; every session of a role opens with the same instructions), so each
prompt computes key/value states only for tokens no cached prompt had. vLLM calls this automatic
prefix caching; transformers' ``generate`` continues from a cache it is given, but keeps none.
Decoding then runs on a static key/value cache, attends with :func:`grouped_decode_attention`,
and samples with :class:`TopKNucleusSampler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from mentalarena.agents.models import GenerationSettings, cpu_computes_bfloat16, load_local_model, resolve_local_dtype

ROLES = {"system": "system", "human": "user", "ai": "assistant"}


@dataclass
class _Request:
    prompt: str
    settings: GenerationSettings
    future: Future = field(default_factory=Future)


class LocalGenerator:
    """One local model shared by all sessions; concurrent requests are generated as one batch."""

    def __init__(self, path: str, dtype: str = "auto", max_batch: int = 16, max_wait_seconds: float = 0.1,
                 prefix_cache_bytes: int = 2 * 1024**3):
        self.model, self.tokenizer = load_local_model(path, dtype)
        register_attention(DECODE_ATTENTION, grouped_decode_attention)
        self.model.set_attn_implementation(DECODE_ATTENTION)
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self._reply_ends = [self.tokenizer.pad_token_id, *_as_list(self.model.generation_config.eos_token_id)]
        # requests, batches, generated_tokens, prompt_tokens, cached_prompt_tokens, and the seconds
        # spent generating (prefill included) and prefilling
        self.stats: Counter = Counter()
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name=f"local-generator:{path}", daemon=True)
        self._worker.start()

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def submit(self, prompt: str, settings: GenerationSettings) -> Future:
        request = _Request(prompt, settings)
        self._queue.put(request)
        return request.future

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait_seconds
            while len(batch) < self.max_batch:
                if 0 < sessions_in_flight.count <= len(batch):
                    break  # every running session has asked already: nobody else to wait for
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            groups: dict[GenerationSettings, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.settings, []).append(request)
            for settings, group in groups.items():
                try:
                    texts = self.generate([r.prompt for r in group], settings)
                except Exception as exc:  # every waiting session hears of it; the worker goes on
                    for request in group:
                        request.future.set_exception(exc)
                else:
                    for request, text in zip(group, texts):
                        request.future.set_result(text)

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[str]:
        """One padded batch through ``model.generate``; returns the new text of each prompt.

        Every prompt but its last token comes from the prefix cache (prefilling what is new), so
        ``generate`` itself runs the last tokens and the decoding steps, as one batch.
        """
        import torch
        from transformers import StaticCache

        tokenizer = self.tokenizer
        rows = [tokenizer(p, return_tensors="pt", add_special_tokens=False)["input_ids"][0] for p in prompts]
        if min(len(row) for row in rows) < 2:
            raise ValueError("a local model prompt needs at least two tokens")
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # left padding: decoder-only models continue from the right edge
            input_ids[i, width - len(row):] = row
            attention_mask[i, width - len(row):] = 1
        started = time.perf_counter()
        with torch.inference_mode():
            states = [self._prefill(row[:-1]) for row in rows]
            self.stats["prefill_seconds"] += time.perf_counter() - started
            # Static: decoding writes each new token in place; a dynamic cache would copy the whole
            # batch's keys and values at every step, which at batch 8 costs about 15% of a step.
            cache = StaticCache(config=self.model.config, max_cache_len=width + settings.max_new_tokens)
            for layer, (keys, values) in enumerate(_left_padded_batch(states, width - 1)):
                cache.update(keys, values, layer)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                                         **generation_options(settings, tokenizer.pad_token_id))
            new_tokens = output[:, width:]
            self._remember_replies(rows, new_tokens, cache, width)
        generated = int((new_tokens != tokenizer.pad_token_id).sum())
        self.stats.update(requests=len(prompts), batches=1, generated_tokens=generated,
                          generate_seconds=time.perf_counter() - started)
        return self.decode(new_tokens)

    def generate_plain(self, prompts: list[str], settings: GenerationSettings):
        """The new tokens of transformers' own ``generate`` on the left-padded batch, without the
        prefix cache: what :meth:`generate` must equal, and the benchmark's baseline."""
        import torch

        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **generation_options(settings, self.tokenizer.pad_token_id))
        return output[:, inputs["input_ids"].shape[1]:]

    def decode(self, new_tokens) -> list[str]:
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]

    def _remember_replies(self, rows: list, new_tokens, cache, width: int) -> None:
        """Cache each prompt together with its reply, whose states decoding has computed anyway:
        the session's next prompt repeats both."""
        import torch

        ends = torch.tensor(self._reply_ends)
        run_through = new_tokens.shape[1] - 1  # the last token drawn never goes through the model
        for i, row in enumerate(rows):
            stops = torch.isin(new_tokens[i], ends).nonzero()
            reply = min(int(stops[0]) + 1 if len(stops) else new_tokens.shape[1], run_through)
            start = width - len(row)  # row i's left padding
            states = [(layer.keys[i:i + 1, :, start:width + reply].clone(), layer.values[i:i + 1, :, start:width + reply].clone())
                      for layer in cache.layers]
            self.prefix_cache.add(torch.cat([row, new_tokens[i, :reply]]), states)

    def _prefill(self, ids) -> list[tuple[Any, Any]]:
        """Key/value states of ``ids`` (per layer), computing only what the prefix cache lacks."""
        from transformers import DynamicCache

        hit, states = self.prefix_cache.longest_prefix(ids)
        self.stats.update(prompt_tokens=len(ids), cached_prompt_tokens=hit)
        if hit == len(ids):
            return states
        cache = DynamicCache(ddp_cache_data=states or None, config=self.model.config)
        # Only the states are wanted: logits for one position, not for every prompt token (the
        # vocabulary projection would add a fifth to the prefill).
        self.model(input_ids=ids[hit:].unsqueeze(0), past_key_values=cache, use_cache=True, logits_to_keep=1)
        states = [(layer.keys, layer.values) for layer in cache.layers]
        self.prefix_cache.add(ids, states)
        return states


def generation_options(settings: GenerationSettings, pad_token_id: int) -> dict[str, Any]:
    """``model.generate`` keyword arguments for one call's settings."""
    from transformers import LogitsProcessorList

    sampler = [TopKNucleusSampler(settings.temperature)] if settings.temperature > 0 else []
    return dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,  # greedy over the sampler's scores, which leave one token: the one it drew
        logits_processor=LogitsProcessorList(sampler),
        repetition_penalty=1.15,  # small local models loop on their own phrases without it
        pad_token_id=pad_token_id,
    )


DECODE_ATTENTION = "mentalarena_grouped_decode"
GROUPED_MIN_BATCH = 4  # from here up, grouped decoding steps measured faster (benchmarks/decode_attention.jsonl)


def grouped_decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA, except for a batch of single new tokens in bfloat16 on a CPU that computes bfloat16
    natively, which goes to :func:`grouped_attention`.

    On such a CPU, torch's flash kernel for bfloat16 is slower there as the batch grows. With the
    grouped matmuls a whole decoding step was 1.04x faster at batch 4, 1.1-1.4x at batch 8 and
    1.2-1.35x at batch 16, and 0.96-0.99x at batch 1 (``benchmarks/decode_attention.py``). In
    float32 the kernel was as fast or faster (0.95x at batch 8 on an AVX2-only CPU), and where
    bfloat16 is emulated the grouped matmuls took twice as long at batch 8. Models whose attention
    has extras (soft-capping, sinks, position bias) keep SDPA throughout.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, new_tokens, head_dim = query.shape
    plain = not (kwargs.get("softcap") or kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None)
    if (new_tokens == 1 and batch >= GROUPED_MIN_BATCH and query.dtype == torch.bfloat16 and cpu_computes_bfloat16() and plain
            and key.shape[-1] == value.shape[-1] == head_dim and (attention_mask is None or attention_mask.dtype == torch.bool)):
        return grouped_attention(query, key, value, attention_mask, scaling if scaling is not None else head_dim**-0.5), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def grouped_attention(query, key, value, attention_mask, scaling: float):
    """Attention of one new token per row as two matmuls per key/value head, over the query heads
    that share it, with the softmax in float32. ``attention_mask``: boolean, True where a row may
    attend, or None. Returns [batch, 1, heads, head_dim], as transformers' attention functions do."""
    import torch

    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    # Query head h reads key/value head h // (heads / kv_heads): grouped, it is one row of a matmul.
    scores = torch.matmul(query.reshape(batch, kv_heads, heads // kv_heads, head_dim), key.transpose(-1, -2)) * scaling
    if attention_mask is not None:  # [batch, 1, 1, positions]
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    output = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(value.dtype), value)
    return output.reshape(batch, 1, heads, head_dim)


def register_attention(name: str, attention) -> None:
    """Make ``attention`` selectable as ``model.set_attn_implementation(name)``, with SDPA's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, sdpa_mask)  # boolean, True where a row may attend


class TopKNucleusSampler:
    """Draws the next token as ``do_sample`` with ``temperature``, ``top_k=50`` and ``top_p=0.95``
    would, and returns scores under which only that token is possible.

    Same distribution, but drawn among the top-k tokens only: ``generate``'s own sampling draws
    over the whole vocabulary (49k tokens) and sorts it at every step, a seventh of a batch-8
    decoding step on a CPU. Runs after ``generate``'s own processors (the repetition penalty).
    """

    def __init__(self, temperature: float, top_k: int = 50, top_p: float = 0.95):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids, scores):
        import torch

        top, indices = (scores.float() / self.temperature).topk(self.top_k, dim=-1)  # sorted, highest first
        probs = top.softmax(dim=-1)
        # The nucleus: tokens reached before the mass above them gets to top_p (the first always).
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= self.top_p, 0.0)
        drawn = indices.gather(-1, torch.multinomial(probs, 1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, drawn, 0.0)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _left_padded_batch(states: list[list[tuple[Any, Any]]], width: int) -> list[tuple[Any, Any]]:
    """Per-layer key/value tensors of several prompts, left-padded with zeros to ``width``."""
    import torch
    import torch.nn.functional as F

    def pad(tensor):  # [1, heads, length, head_dim] -> [1, heads, width, head_dim]; masked out
        return F.pad(tensor, (0, 0, width - tensor.shape[-2], 0))

    return [
        (torch.cat([pad(row[layer][0]) for row in states]), torch.cat([pad(row[layer][1]) for row in states]))
        for layer in range(len(states[0]))
    ]


class _SessionsInFlight:
    """How many sessions are running now, when a runner says so (0: unknown).

    The generator stops waiting for more requests once each of them has one queued, since a
    session asks one thing at a time; at concurrency 1 it then never waits at all.
    """

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def session(self):
        with self._lock:
            self.count += 1
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1


sessions_in_flight = _SessionsInFlight()


class PrefixCache:
    """Key/value states of recent prompts, found again by the longest token prefix they share.

    Bounded by ``max_bytes`` of key/value tensors (least recently used first out). A prompt that
    extends a cached one replaces it, since it answers every lookup the shorter one would.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0  # of the tensors held, kept up to date by add and clear
        self._entries: OrderedDict[int, tuple[Any, list[tuple[Any, Any]]]] = OrderedDict()
        self._next_key = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def longest_prefix(self, ids) -> tuple[int, list[tuple[Any, Any]]]:
        """(length, states cut to that length) of the cached prompt sharing most leading tokens."""
        best, best_key = 0, None
        with self._lock:
            for key, (cached, _) in self._entries.items():
                n = min(len(cached), len(ids))
                if n <= best:
                    continue
                differs = (cached[:n] != ids[:n]).nonzero()
                length = int(differs[0]) if len(differs) else n
                if length > best:
                    best, best_key = length, key
            if best_key is None:
                return 0, []
            self._entries.move_to_end(best_key)
            # Views, not copies: the cache grows a copy (torch.cat), never these tensors.
            return best, [(k[:, :, :best], v[:, :, :best]) for k, v in self._entries[best_key][1]]

    def add(self, ids, states: list[tuple[Any, Any]]) -> None:
        with self._lock:
            for key, (cached, _) in list(self._entries.items()):
                if len(cached) <= len(ids) and bool((cached == ids[:len(cached)]).all()):
                    self._drop(key)
            self._entries[self._next_key] = (ids, states)
            self.nbytes += _nbytes(states)
            self._next_key += 1
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        self.nbytes -= _nbytes(self._entries.pop(key)[1])


def _nbytes(states: list[tuple[Any, Any]]) -> int:
    return sum(k.nbytes + v.nbytes for k, v in states)


_generators: dict[tuple[str, str], LocalGenerator] = {}
_generators_lock = threading.Lock()


def local_generator(path: str, dtype: str = "auto") -> LocalGenerator:
    """The one generator of a model folder and dtype; sessions that start together must not make two."""
    key = (path, resolve_local_dtype(dtype))
    with _generators_lock:
        if key not in _generators:
            _generators[key] = LocalGenerator(*key)
        return _generators[key]


class LocalChatModel(BaseChatModel):
    """A chat model over a shared :class:`LocalGenerator`; sync and async calls both batch."""

    path: str
    settings: GenerationSettings

    @property
    def _llm_type(self) -> str:
        return "mentalarena-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"path": self.path, "max_new_tokens": self.settings.max_new_tokens, "temperature": self.settings.temperature}

    def _submit(self, messages: list[BaseMessage]) -> Future:
        generator = local_generator(self.path, self.settings.local_dtype)
        rendered = generator.render([{"role": ROLES[m.type], "content": m.text} for m in messages])
        return generator.submit(rendered, self.settings)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._submit(messages).result()))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = await asyncio.wrap_future(self._submit(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])
