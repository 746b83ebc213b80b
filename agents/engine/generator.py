"""Local Hugging Face chat models with continuous batching.

Self-play spends nearly all its time generating, and a CPU decodes several sequences in one
forward pass almost as fast as one. So every session that uses a local model submits its prompt
to one shared ``LocalGenerator``, whose worker thread decodes all the requests it holds together,
one token each per forward pass. A request joins the batch between two decoding steps, as soon as
it arrives, and leaves it the step it ends: a session gets its reply without waiting for the
batch's longest one, and its next request takes the freed place. Orca and vLLM call this
continuous (iteration-level) batching.

Written here rather than taken from a library: langchain-huggingface's ``ChatHuggingFace`` over a
local pipeline has no async and generates one request at a time. transformers' own continuous
batching (``generate_batch``, paged attention) was slower than a plain padded ``generate`` on
arena prompts on a CPU, and has no place for the prefix cache below (docs/performance.md).

Prompts are prefilled through a :class:`PrefixCache`. Long prompts make CPU generation
prefill-bound, and nearly every arena prompt repeats one seen before (the same session's last
prompt plus its new turns; every session of a role opens with the same instructions), so each
prompt computes key/value states only for tokens no cached prompt had. vLLM calls this automatic
prefix caching. A prompt goes into the cache with its reply, when the reply ends.

A prompt's remaining tokens join the next decoding step: that step's forward pass packs them with
the other rows' new tokens (vLLM and Sarathi call this mixed or chunked prefill), so the weights
are read once for both and the other rows do not wait on a prefill of their own.

Decoding runs on a :class:`DecodingBatch`, attends with :func:`grouped_decode_attention`
(:func:`packed_attention` for a step that prefills), and samples with :class:`TopKNucleusSampler`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import queue
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from mentalarena.agents.models import (
    GenerationSettings,
    cpu_computes_bfloat16,
    load_local_model,
    model_loading_lock,
    resolve_local_dtype,
)

if TYPE_CHECKING:
    import torch
    from llguidance import LLMatcher
    from llguidance._lib import JsonCompileOptions

ROLES = {"system": "system", "human": "user", "ai": "assistant"}
REPETITION_PENALTY = 1.15  # small local models loop on their own phrases without it


@dataclass
class _Request:
    prompt: str
    settings: GenerationSettings
    grammar: str | None = None  # an llguidance grammar the reply must match (a structured answer)
    future: Future = field(default_factory=Future)


@dataclass
class _Row:
    """A request being decoded. Every token it has but ``pending`` has key/value states in the
    batch; ``pending`` goes into the next step: the prompt's tokens the prefix cache lacked, then
    one drawn token at a time. ``seen`` marks the vocabulary entries the repetition penalty
    applies to (prompt and reply, as ``generate``'s penalty does)."""

    request: _Request
    prompt_ids: Any
    pending: Any
    seen: Any
    matcher: Any = None  # the llguidance matcher of a constrained request: which tokens may come next
    drawn: list[int] = field(default_factory=list)


class LocalGenerator:
    """One local model shared by all sessions; the requests it holds decode as one batch."""

    def __init__(self, path: str, dtype: str = "auto", max_batch: int = 16, prefix_cache_bytes: int = 2 * 1024**3):
        """Loads the model folder in ``dtype`` and starts the worker thread that decodes its requests."""
        with model_loading_lock:  # the set-up imports from transformers too, which must not race another load
            self.model, self.tokenizer = load_local_model(path, dtype)
            check_full_attention(self.model.config, path)
            register_attention(DECODE_ATTENTION, grouped_decode_attention)
            self.model.set_attn_implementation(DECODE_ATTENTION)
        self.max_batch = max_batch
        self.prefix_cache = PrefixCache(prefix_cache_bytes)
        self._reply_ends = {self.tokenizer.pad_token_id, *_as_list(self.model.generation_config.eos_token_id)}
        self._no_states = no_states(self.model)
        # requests, decoding steps, row_steps (rows summed over steps), generated_tokens (forced
        # ones included), forced_tokens, prompt_tokens, cached_prompt_tokens, prefill_steps, and
        # the seconds spent generating, in the steps that prefilled (those decode the other rows
        # too) and in the grammar's work (masks, consuming and forcing tokens)
        self.stats: defaultdict[str, float] = defaultdict(int)  # tokens, steps, requests, seconds
        self.on_step: Callable[[int], None] | None = None  # told each step's number of rows (benchmarks)
        self._json_constraint: JsonConstraint | None = None
        self._constraint_lock = threading.Lock()
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name=f"local-generator:{path}", daemon=True)
        self._worker.start()

    def render(self, messages: list[dict]) -> str:
        """The prompt text of ``messages`` (role, content) in the model's chat template, ready for its reply."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _count(self, **amounts: float) -> None:
        """Adds to the running counts in :attr:`stats`."""
        for name, amount in amounts.items():
            self.stats[name] += amount

    def submit(self, prompt: str, settings: GenerationSettings, json_schema: dict | None = None) -> Future:
        """Queue a prompt; with ``json_schema`` the reply is decoded under it (see :class:`JsonConstraint`)."""
        grammar = None if json_schema is None else self.json_constraint().grammar(json_schema)
        request = _Request(prompt, settings, grammar)
        self._queue.put(request)
        return request.future

    def json_constraint(self) -> JsonConstraint:
        """The generator's :class:`JsonConstraint`, built on first use."""
        with self._constraint_lock:  # building the tokenizer's index takes a second: once per generator
            if self._json_constraint is None:
                self._json_constraint = JsonConstraint(self.tokenizer, self.model.config.vocab_size)
            return self._json_constraint

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[str]:
        """The replies to ``prompts``, submitted together (so they share decoding steps)."""
        return [future.result() for future in [self.submit(prompt, settings) for prompt in prompts]]

    def _serve(self) -> None:
        import torch

        rows: list[_Row] = []
        batch = DecodingBatch()
        with torch.inference_mode():  # for the worker's whole life: nothing it computes needs autograd
            while True:
                # Join: wait for work only when there is none; otherwise take what has arrived.
                while len(rows) < self.max_batch:
                    try:
                        request = self._queue.get(block=not rows)
                    except queue.Empty:
                        break
                    if not request.future.set_running_or_notify_cancel():
                        continue  # its caller gave up (a cancelled task) before it began
                    try:
                        rows.append(self._start(request, batch))
                    except Exception as exc:  # this request's own fault (too short, say): only it fails
                        request.future.set_exception(exc)
                if not rows:
                    continue
                try:
                    self._step(rows, batch)
                except Exception as exc:  # every row being decoded hears of it; the worker goes on
                    for row in rows:
                        row.request.future.set_exception(exc)
                    rows.clear()
                    batch = DecodingBatch()

    def _start(self, request: _Request, batch: DecodingBatch) -> _Row:
        """A request joins the batch with the states the prefix cache has of its prompt; the rest
        of the prompt (its last token at least) goes into the next step."""
        import torch

        started = time.perf_counter()
        ids = self.tokenizer(request.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
        if len(ids) < 1:
            raise ValueError("a local model prompt needs at least one token")
        hit, pieces = self.prefix_cache.longest_prefix(ids[:-1])
        batch.add(pieces if hit else [self._no_states])
        seen = torch.zeros(self.model.config.vocab_size, dtype=torch.bool)
        seen[ids] = True
        row = _Row(request, ids, ids[hit:], seen)
        if request.grammar is not None:
            row.matcher = self.json_constraint().matcher(request.grammar)
            self._force(row)  # an answer's opening ('{"summary": "') goes in with the prompt
        self._count(
            requests=1,
            prompt_tokens=len(ids) - 1,
            cached_prompt_tokens=hit,
            generate_seconds=time.perf_counter() - started,
            constrained_requests=int(row.matcher is not None),
        )
        return row

    def _force(self, row: _Row) -> bool:
        """Append the tokens the row's grammar allows alone next (a key, the rest of an enum name:
        llguidance's fast-forward tokens) to what it has drawn and will feed, so one step feeds
        them all instead of a step drawing each. True when the answer is then complete."""
        import torch

        started = time.perf_counter()
        room = row.request.settings.max_new_tokens - len(row.drawn)
        forced = row.matcher.compute_ff_tokens()[: max(room, 0)]
        if forced:
            row.matcher.consume_tokens(forced)
            row.drawn.extend(forced)
            row.seen[forced] = True
            row.pending = torch.cat([row.pending, torch.tensor(forced, dtype=row.pending.dtype)])
        self._count(
            forced_tokens=len(forced), generated_tokens=len(forced), constraint_seconds=time.perf_counter() - started
        )
        return row.matcher.is_stopped()

    def _step(self, rows: list[_Row], batch: DecodingBatch) -> None:
        """One forward pass: every row's pending tokens (one drawn token, or what is left of a new
        prompt) and a token drawn for each; rows that end leave the batch with their reply."""
        import torch

        started = time.perf_counter()
        positions, mask = batch.begin_step([len(row.pending) for row in rows])
        fed = torch.cat([row.pending for row in rows])
        if not batch.packed:  # a plain decoding step: a row per request
            logits = self.model(
                input_ids=fed.unsqueeze(1),
                position_ids=positions.unsqueeze(1),
                attention_mask=mask,
                past_key_values=batch,
                use_cache=True,
            ).logits[:, -1]
        else:  # every row's tokens packed into one sequence; logits at each row's last token only
            logits = self.model(
                input_ids=fed.unsqueeze(0),
                position_ids=positions.unsqueeze(0),
                attention_mask=mask,
                past_key_values=batch,
                use_cache=True,
                logits_to_keep=batch.last_tokens(),
                packed_rows=batch.packed_rows(),
            ).logits[0]
        batch.advance()
        tokens = self._draw(logits, rows)
        for slot in reversed(range(len(rows))):  # from the end: leaving moves the last row into the freed slot
            row, token = rows[slot], int(tokens[slot])
            row.drawn.append(token)
            row.seen[token] = True
            row.pending = tokens[slot : slot + 1]
            answered = False
            if row.matcher is not None:
                consumed = time.perf_counter()
                answered = row.matcher.consume_token(token) and row.matcher.is_stopped()
                self._count(constraint_seconds=time.perf_counter() - consumed)
                answered = answered or self._force(row)
            if answered or token in self._reply_ends or len(row.drawn) >= row.request.settings.max_new_tokens:
                self._finish(row, batch.row_states(slot))  # into the prefix cache before the slot is reused
                batch.remove(slot)
                rows[slot] = rows[-1]
                rows.pop()
        replied = sum(int(token) not in self._reply_ends for token in tokens)  # an end token is no text
        seconds = time.perf_counter() - started
        self._count(steps=1, row_steps=len(tokens), generated_tokens=replied, generate_seconds=seconds)
        if batch.packed:
            self._count(prefill_steps=1, prefill_step_seconds=seconds)
        if self.on_step is not None:
            self.on_step(len(tokens))

    def _draw(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Each row's next token: the repetition penalty, then greedy or sampled at its temperature."""
        import torch

        scores = logits.float()
        seen = torch.stack([row.seen for row in rows])
        scores = torch.where(
            seen, torch.where(scores < 0, scores * REPETITION_PENALTY, scores / REPETITION_PENALTY), scores
        )
        masking = time.perf_counter()
        for slot, row in enumerate(rows):
            if row.matcher is not None:  # a constrained row draws only among the tokens its grammar allows next
                scores[slot].masked_fill_(~JsonConstraint.allowed(row.matcher, scores.shape[-1]), float("-inf"))
        self._count(constraint_seconds=time.perf_counter() - masking)
        tokens = scores.argmax(dim=-1)
        temperatures = [row.request.settings.temperature for row in rows]
        for temperature in set(temperatures) - {0}:
            which = torch.tensor([t == temperature for t in temperatures])
            tokens[which] = TopKNucleusSampler(temperature).draw(scores[which])
        return tokens

    def _finish(self, row: _Row, states: list[tuple[Any, Any]]) -> None:
        """Answer the request, and keep its prompt and reply in the prefix cache (the session's
        next prompt repeats both): ``states`` are those of the tokens fed so far (all but the last
        one drawn, or the forced ones that closed an answer)."""
        import torch

        tokens = torch.cat([row.prompt_ids, torch.tensor(row.drawn, dtype=row.prompt_ids.dtype)])
        self.prefix_cache.add(tokens[: states[0][0].shape[-2]], states)
        reply = row.drawn[:-1] if row.drawn[-1] in self._reply_ends else row.drawn
        row.request.future.set_result(self.tokenizer.decode(reply, skip_special_tokens=True).strip())

    def generate_plain(self, prompts: list[str], settings: GenerationSettings) -> torch.Tensor:
        """The new tokens of transformers' own ``generate`` on the left-padded batch, without the
        prefix cache or continuous batching: the benchmark's baseline, and what one prompt alone
        must come to greedily."""
        import torch

        inputs = self.tokenizer(
            prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        )
        with torch.inference_mode():
            output = self.model.generate(**inputs, **generation_options(settings, self.tokenizer.pad_token_id))
        return output[:, inputs["input_ids"].shape[1] :]

    def decode(self, new_tokens: torch.Tensor) -> list[str]:
        """The text of each row of ``new_tokens``, without special tokens."""
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


class JsonConstraint:
    """Grammar-constrained decoding of JSON-schema answers, a matcher per constrained row.

    Built on llguidance (Microsoft's Guidance engine, also behind llama.cpp's and vLLM's
    structured output): it computes each row's mask on the CPU in a small fraction of a decoding
    step, it installs as one small wheel, and it takes a JSON schema as it is. xgrammar also
    installs but pulls in triton; outlines-core compiles each schema into a token index, slow for
    the diagnosis vocabulary's long enum.

    JSON is compact (no free whitespace): a small model left free whitespace can pad forever.
    """

    OPTIONS: ClassVar[JsonCompileOptions] = {
        "whitespace_flexible": False,
        "item_separator": ", ",
        "key_separator": ": ",
    }

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        """Takes ``tokenizer``'s vocabulary (``vocab_size`` entries, as the model's logits have) for llguidance."""
        import llguidance.hf

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one constraint per generator, held for the process
    def _grammar(self, schema: str) -> str:
        import llguidance

        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=self.OPTIONS)
        error = llguidance.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise ValueError(f"JSON schema not usable for constrained decoding: {error}")
        return grammar

    def grammar(self, json_schema: dict) -> str:
        """The llguidance grammar of ``json_schema``, built once per schema."""
        return self._grammar(json.dumps(json_schema, sort_keys=False))

    def matcher(self, grammar: str) -> LLMatcher:
        """A new matcher for one row: it tracks the row's tokens against ``grammar``."""
        import llguidance

        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"constrained decoding: {matcher.get_error()}")
        return matcher

    @staticmethod
    def allowed(matcher: LLMatcher, vocab_size: int) -> torch.Tensor:
        """[vocabulary] bool: the tokens the matcher accepts next (the end token once it accepts)."""
        import torch

        return torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)[:vocab_size] > 0


class DecodingBatch:
    """Key/value states of the rows being decoded, a slot each, every row from position 0; the
    model's cache during a step.

    A step feeds each row one or more tokens (:meth:`begin_step`) and writes their states from
    that row's own length on, so rows of any length step together, and a row joins (:meth:`add`)
    or leaves (:meth:`remove`) between two steps. Each row's attention is masked past its own
    tokens. Storage grows by whole chunks and is never given back, so a long run reallocates only
    a few times.
    """

    CHUNK = 256  # positions added at a time when a row needs more
    _token_slots: Any
    _token_positions: Any

    def __init__(self) -> None:
        """An empty batch: no rows, and no storage until the first one joins."""
        self.keys: list[Any] = []  # per layer: [slots, key/value heads, capacity, head_dim]
        self.values: list[Any] = []
        self.lengths: Any = None  # [rows], tokens with states in each row
        self._width = 0  # positions attended in the current step
        self._counts: Any = None  # [rows], tokens each row feeds in the current step
        self.packed = False  # whether some row feeds several: then the step's tokens are one sequence
        self._token_slots = self._token_positions = None  # [tokens fed], where each one's states go

    def __len__(self) -> int:
        """The number of rows in the batch."""
        return 0 if self.lengths is None else len(self.lengths)

    def add(self, pieces: list[list[tuple[Any, Any]]]) -> None:
        """A row joins, with the states of its tokens so far in consecutive pieces (as the prefix
        cache returns them), each a list of per-layer (keys, values) [1, heads, tokens, head_dim]."""
        import torch

        slot, length = len(self), sum(piece[0][0].shape[-2] for piece in pieces)
        if not self.keys:  # the first row gives the shapes and the dtype
            self.keys = [k.new_zeros((1, k.shape[1], 0, k.shape[3])) for k, _ in pieces[0]]
            self.values = [v.new_zeros((1, v.shape[1], 0, v.shape[3])) for _, v in pieces[0]]
        self._reserve(slot + 1, length + 1)
        start = 0
        for piece in pieces:
            end = start + piece[0][0].shape[-2]
            for layer, (keys, values) in enumerate(piece):
                self.keys[layer][slot, :, start:end] = keys[0]
                self.values[layer][slot, :, start:end] = values[0]
            start = end
        new = torch.tensor([length])
        self.lengths = new if self.lengths is None else torch.cat([self.lengths, new])

    def row_states(self, slot: int) -> list[tuple[Any, Any]]:
        """Views of the states of the row in ``slot``, per layer: valid until the next :meth:`remove`."""
        length = int(self.lengths[slot])
        return [
            (k[slot : slot + 1, :, :length], v[slot : slot + 1, :, :length]) for k, v in zip(self.keys, self.values)
        ]

    def remove(self, slot: int) -> None:
        """The row in ``slot`` leaves. The last row moves into its slot."""
        last = len(self) - 1
        if slot != last:
            moved = int(self.lengths[last])
            for stored in (*self.keys, *self.values):
                stored[slot, :, :moved] = stored[last, :, :moved]
            self.lengths[slot] = self.lengths[last]
        self.lengths = self.lengths[:last]

    def begin_step(self, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The next step feeds ``counts[row]`` tokens to each row. Returns their positions, row after
        row ([tokens fed]), and the attention mask, [rows, 1, 1, positions]: True where a row may
        attend, its states and its new tokens (a row that feeds several attends causally among
        them: :func:`packed_attention`)."""
        import torch

        self._counts = torch.tensor(counts)
        self.packed = max(counts) > 1
        ends = self.lengths + self._counts
        self._width = int(ends.max())
        self._reserve(len(self), self._width)
        self._token_slots = torch.repeat_interleave(torch.arange(len(self)), self._counts)
        firsts = torch.cumsum(self._counts, 0) - self._counts  # each row's first token among those fed
        self._token_positions = (
            self.lengths[self._token_slots] + torch.arange(len(self._token_slots)) - firsts[self._token_slots]
        )
        return self._token_positions, (torch.arange(self._width) < ends.unsqueeze(1)).view(len(self), 1, 1, self._width)

    def last_tokens(self) -> torch.Tensor:
        """Where each row's last fed token stands among the tokens fed: its logits draw the next."""
        import torch

        return torch.cumsum(self._counts, 0) - 1

    def packed_rows(self) -> PackedRows:
        """The current step's layout, for :func:`packed_attention`."""
        return PackedRows(self.lengths.tolist(), self._counts.tolist())

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's cache call: store the states of the tokens fed at their rows and positions
        (key_states: [rows, heads, 1, head_dim] for one token a row, [1, heads, tokens, head_dim]
        when packed); return every row's states up to the longest row."""
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[self._token_slots, :, self._token_positions] = (
            key_states[0].transpose(0, 1) if self.packed else key_states[:, :, 0]
        )
        values[self._token_slots, :, self._token_positions] = (
            value_states[0].transpose(0, 1) if self.packed else value_states[:, :, 0]
        )
        return keys[: len(self), :, : self._width], values[: len(self), :, : self._width]

    def advance(self) -> None:
        """Ends a step: each row's length grows by the tokens it was fed."""
        self.lengths += self._counts

    def _reserve(self, slots: int, positions: int) -> None:
        import torch

        if self.keys[0].shape[0] >= slots and self.keys[0].shape[2] >= positions:
            return
        old_slots, heads, old_positions, head_dim = self.keys[0].shape
        shape = (max(slots, old_slots), heads, max(old_positions, -(-positions // self.CHUNK) * self.CHUNK), head_dim)

        def grown(tensor: Any) -> Any:  # zeros, not garbage: masked positions must hold finite numbers
            bigger = torch.zeros(shape, dtype=tensor.dtype)
            bigger[:old_slots, :, :old_positions] = tensor
            return bigger

        self.keys, self.values = [grown(t) for t in self.keys], [grown(t) for t in self.values]


@dataclass(frozen=True)
class PackedRows:
    """A packed step's layout for :func:`packed_attention`: each row's states before the step and
    the tokens it feeds, rows in slot order and their tokens in that order too."""

    lengths: list[int]
    counts: list[int]


def no_states(model: Any) -> list[tuple[Any, Any]]:
    """Key/value states of no tokens, per layer: what a prompt the prefix cache knows nothing of joins with."""
    import torch

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    empty = torch.zeros((1, config.num_key_value_heads, 0, head_dim), dtype=model.dtype)
    return [(empty, empty)] * config.num_hidden_layers


def check_full_attention(config: Any, path: str) -> None:
    """The decoding batch masks one way for every layer: full causal attention."""
    if getattr(config, "layer_types", None):
        field, kinds = "layer_types", set(config.layer_types) - {"full_attention"}
    else:  # older configs name one sliding window for every layer
        windowed = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
        field, kinds = "sliding_window", {"sliding_attention"} if windowed else set()
    if kinds:
        raise ValueError(
            f"{path}/config.json: field {field} asks for {', '.join(sorted(kinds))}; the local backend decodes "
            "full-attention models only. Serve this model with vLLM and use openai:<model>."
        )


def generation_options(settings: GenerationSettings, pad_token_id: int) -> dict[str, Any]:
    """``model.generate`` keyword arguments for one call's settings."""
    from transformers import LogitsProcessorList

    sampler = [TopKNucleusSampler(settings.temperature)] if settings.temperature > 0 else []
    return dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,  # greedy over the sampler's scores, which leave one token: the one it drew
        logits_processor=LogitsProcessorList(sampler),
        repetition_penalty=REPETITION_PENALTY,
        pad_token_id=pad_token_id,
    )


DECODE_ATTENTION = "mentalarena_grouped_decode"
GROUPED_MIN_BATCH = (
    4  # from here up, grouped decoding steps measured faster (agents/engine/benchmarks/decode_attention.jsonl)
)


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    packed_rows: PackedRows | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA, except for a batch of single new tokens in bfloat16 on a CPU that computes bfloat16
    natively, which goes to :func:`grouped_attention`, and for a packed step of a
    :class:`DecodingBatch`, which goes to :func:`packed_attention`.

    On such a CPU, torch's flash kernel for bfloat16 falls behind grouped matmuls as the batch
    grows; in float32, or where bfloat16 is emulated, it does not (the figures:
    ``benchmarks/decode_attention.py`` and docs/performance.md). Models whose attention has extras
    (soft-capping, sinks, position bias) keep SDPA throughout.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if packed_rows is not None:  # a packed step comes with its DecodingBatch's mask
        return packed_attention(
            module, query, key, value, cast("torch.Tensor", attention_mask), packed_rows, scaling=scaling, **kwargs
        ), None
    batch, _, new_tokens, head_dim = query.shape
    plain = not (kwargs.get("softcap") or kwargs.get("s_aux") is not None or kwargs.get("position_bias") is not None)
    if (
        new_tokens == 1
        and batch >= GROUPED_MIN_BATCH
        and query.dtype == torch.bfloat16
        and cpu_computes_bfloat16()
        and plain
        and key.shape[-1] == value.shape[-1] == head_dim
        and (attention_mask is None or attention_mask.dtype == torch.bool)
    ):
        return grouped_attention(
            query, key, value, attention_mask, scaling if scaling is not None else head_dim**-0.5
        ), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: PackedRows,
    **kwargs: Any,
) -> torch.Tensor:
    """Attention of a packed step: ``query`` is [1, heads, tokens fed, head_dim], every row's
    tokens in turn; ``key`` and ``value`` are the batch's [rows, key/value heads, positions,
    head_dim]. The leading rows that feed one token each attend as one decoding batch (no
    copies of their states); every other row attends causally over its own states and new
    tokens. Returns [1, tokens fed, heads, head_dim]."""
    import torch

    output = query.new_empty(1, query.shape[2], query.shape[1], query.shape[3])
    decoding = next((row for row, count in enumerate(rows.counts) if count != 1), len(rows.counts))
    if decoding:
        single = query[0, :, :decoding].transpose(0, 1).unsqueeze(2)  # [rows, heads, 1, head_dim]
        attended, _ = grouped_decode_attention(
            module, single, key[:decoding], value[:decoding], attention_mask[:decoding], **kwargs
        )
        output[0, :decoding] = attended[:, 0]
    first = decoding
    for row in range(decoding, len(rows.counts)):
        length, count = rows.lengths[row], rows.counts[row]
        end = length + count
        causal = (torch.arange(end) <= length + torch.arange(count).unsqueeze(1)).view(1, 1, count, end)
        attended, _ = grouped_decode_attention(
            module,
            query[:, :, first : first + count],
            key[row : row + 1, :, :end],
            value[row : row + 1, :, :end],
            causal,
            **kwargs,
        )
        output[0, first : first + count] = attended[0]
        first += count
    return output


def grouped_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
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


def register_attention(name: str, attention: Callable[..., Any]) -> None:
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
        """A sampler at ``temperature`` over the ``top_k`` likeliest tokens, within ``top_p`` of their mass."""
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """One token per row of ``scores`` ([rows, vocabulary]): [rows]."""
        import torch

        top, indices = (scores.float() / self.temperature).topk(self.top_k, dim=-1)  # sorted, highest first
        probs = top.softmax(dim=-1)
        # The nucleus: tokens reached before the mass above them gets to top_p (the first always).
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= self.top_p, 0.0)
        return indices.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """As a ``generate`` logits processor: scores under which only the drawn token is possible."""
        import torch

        return torch.full_like(scores, float("-inf")).scatter_(-1, self.draw(scores).unsqueeze(-1), 0.0)


def _as_list(value: object) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


class PrefixCache:
    """Key/value states of recent prompts, found again by the longest token prefix they share.

    Kept as a tree of token blocks, as SGLang's radix attention and vLLM's automatic prefix
    caching keep them: a prompt's states are cut into blocks of ``BLOCK`` tokens, each under the
    block before it, so prompts that share a head share its blocks. Arena prompts share long heads
    (a role's dialogue so far, under its diagnosis, proposal and inference requests). With a copy
    of the head per prompt, 8 concurrent sessions filled 2 GiB, and 15% of the prompt tokens they
    prefilled had been cached and evicted; with blocks, none had.

    Bounded by ``max_bytes`` of key/value tensors, least recently used block first out. A lookup
    or an add counts as using a block after the blocks under it, so the block that goes is a leaf.
    """

    BLOCK = 128  # tokens a block holds: a prompt that parts from a cached one copies less than this again

    def __init__(self, max_bytes: int):
        """An empty cache that holds at most ``max_bytes`` of key/value tensors."""
        self.max_bytes = max_bytes
        self.nbytes = 0  # of the tensors held, kept up to date by add, clear and eviction
        self._root = _Block((), [], None)
        self._recency: OrderedDict[_Block, None] = OrderedDict()  # every block but the root, least recent first
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Drops every cached block."""
        with self._lock:
            self._root.children.clear()
            self._recency.clear()
            self.nbytes = 0

    def longest_prefix(self, ids: torch.Tensor) -> tuple[int, list[list[tuple[Any, Any]]]]:
        """(length, states of that many leading tokens): the states come in consecutive pieces,
        one per block, each a list of per-layer (keys, values) views [1, heads, tokens, head_dim]."""
        with self._lock:
            path = self._walk(ids.tolist())
            self._touch([block for block, _ in path])
            return sum(used for _, used in path), [
                [(k[:, :, :used], v[:, :, :used]) for k, v in block.states] for block, used in path
            ]

    def add(self, ids: torch.Tensor, states: list[tuple[Any, Any]]) -> None:
        """Keep the states ([1, heads, len(ids), head_dim] per layer) of ``ids``; only the blocks
        not cached yet are copied, so ``states`` may be views of storage that is reused later."""
        tokens = ids.tolist()
        with self._lock:
            node, path = self._root, []
            for start in range(0, len(tokens), self.BLOCK):
                segment = tuple(tokens[start : start + self.BLOCK])
                block = node.children.get(segment)
                if block is None:
                    for other in list(
                        node.children.values()
                    ):  # a shorter last block this one extends answers nothing more
                        if len(other.tokens) < len(segment) and segment[: len(other.tokens)] == other.tokens:
                            self._drop(other)
                    block = _Block(
                        segment,
                        [
                            (
                                k[:, :, start : start + len(segment)].clone(),
                                v[:, :, start : start + len(segment)].clone(),
                            )
                            for k, v in states
                        ],
                        node,
                    )
                    node.children[segment] = block
                    self.nbytes += _nbytes(block.states)
                path.append(block)
                node = block
            self._touch(path)
            while self._recency and self.nbytes > self.max_bytes:
                self._drop(next(iter(self._recency)))

    def _walk(self, tokens: list[int]) -> list[tuple[_Block, int]]:
        """The blocks that hold the longest cached prefix of ``tokens``, and how many tokens of each."""
        node, path, start = self._root, [], 0
        while start < len(tokens):
            segment = tuple(tokens[start : start + self.BLOCK])
            block = node.children.get(segment)
            if block is None:  # the prefix ends in this block: the child sharing most of it, if any
                closest = max(
                    ((_shared_length(child.tokens, segment), child) for child in node.children.values()),
                    default=None,
                    key=lambda found: found[0],
                )
                if closest and closest[0]:
                    path.append((closest[1], closest[0]))
                return path
            path.append((block, len(segment)))
            node, start = block, start + len(segment)
        return path

    def _touch(self, path: list[_Block]) -> None:
        for block in reversed(path):  # deepest first: every block ends up more recent than those under it
            self._recency[block] = None
            self._recency.move_to_end(block)

    def _drop(self, block: _Block) -> None:
        for child in list(block.children.values()):
            self._drop(child)
        assert block.parent is not None, "the root is never dropped: it is in no path"
        del block.parent.children[block.tokens]
        del self._recency[block]
        self.nbytes -= _nbytes(block.states)


@dataclass(eq=False)  # compared and hashed by identity: a key of the recency order
class _Block:
    """Up to ``PrefixCache.BLOCK`` tokens and their key/value states, under the block before them."""

    tokens: tuple[int, ...]
    states: list[tuple[Any, Any]]
    parent: _Block | None
    children: dict[tuple[int, ...], _Block] = field(default_factory=dict)


def _shared_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


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
    accepts_response_format: ClassVar[bool] = True  # decoded under the schema's grammar (JsonConstraint)

    @property
    def _llm_type(self) -> str:
        return "mentalarena-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "max_new_tokens": self.settings.max_new_tokens,
            "temperature": self.settings.temperature,
        }

    def _submit(
        self, messages: list[BaseMessage], response_format: dict | None = None, max_tokens: int | None = None
    ) -> Future:
        """``response_format`` as OpenAI's API takes it (``json_schema``): the reply is decoded under
        that schema; ``max_tokens`` overrides the settings' budget for this call."""
        generator = local_generator(self.path, self.settings.local_dtype)
        rendered = generator.render([{"role": ROLES[m.type], "content": m.text} for m in messages])
        settings = (
            self.settings if max_tokens is None else dataclasses.replace(self.settings, max_new_tokens=max_tokens)
        )
        return generator.submit(rendered, settings, json_schema_of(response_format))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._submit(messages, **kwargs).result()))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = await asyncio.wrap_future(self._submit(messages, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


def json_schema_of(response_format: dict | None) -> dict | None:
    """The schema of an OpenAI ``response_format`` (json_schema, or json_object with a schema)."""
    if not response_format:
        return None
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"]
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    raise ValueError(f"response_format type {response_format.get('type')!r}: expected json_schema or json_object")
