"""The local backend: its prefix cache (what it finds, what it keeps, and that it changes no
output), its decoding batch (rows join and leave between steps without changing a reply), its
decoding attention (what SDPA computes) and its sampler (the distribution ``generate``'s own
sampling has)."""

import dataclasses
import json
import time
from types import SimpleNamespace

import pytest
import torch

from mentalarena.agents.engine.generator import PrefixCache, TopKNucleusSampler
from mentalarena.agents.schemas import diagnosis_vocabulary


def states(ids: list[int], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fake key/value states whose values name their token, so a wrong cut shows."""
    column = torch.tensor(ids, dtype=torch.float32).view(1, 1, -1, 1)
    return [(column.clone() + layer, column.clone() - layer) for layer in range(layers)]


def joined(pieces) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-layer states of consecutive pieces (as the prefix cache returns them), put together."""
    return [
        (
            torch.cat([piece[layer][0] for piece in pieces], dim=2),
            torch.cat([piece[layer][1] for piece in pieces], dim=2),
        )
        for layer in range(len(pieces[0]))
    ]


def token_bytes(layers: int = 2) -> int:
    return sum(k.nbytes + v.nbytes for k, v in states([0], layers))


def test_the_longest_shared_prefix_is_found_and_cut_to_length():
    cache = PrefixCache(max_bytes=10**6)
    cache.add(torch.tensor([1, 2, 3, 4]), states([1, 2, 3, 4]))
    cache.add(torch.tensor([1, 2, 9]), states([1, 2, 9]))
    length, found = cache.longest_prefix(torch.tensor([1, 2, 3, 7, 8]))
    assert length == 3
    assert joined(found)[1][0].flatten().tolist() == [2.0, 3.0, 4.0]  # layer 1 keys of tokens 1, 2, 3
    assert cache.longest_prefix(torch.tensor([5, 1, 2]))[0] == 0
    assert cache.longest_prefix(torch.tensor([1, 2]))[0] == 2  # a prompt shorter than the cached one


def test_a_prompt_that_extends_a_cached_one_replaces_it():
    cache = PrefixCache(max_bytes=10**6)
    cache.add(torch.tensor([1, 2]), states([1, 2]))
    cache.add(torch.tensor([1, 2, 3]), states([1, 2, 3]))
    cache.add(torch.tensor([1, 5]), states([1, 5]))
    assert cache.nbytes == 5 * token_bytes()  # [1, 2, 3] and [1, 5]: [1, 2] went
    assert (
        cache.longest_prefix(torch.tensor([1, 2, 3, 4]))[0] == 3 and cache.longest_prefix(torch.tensor([1, 5]))[0] == 2
    )


def test_prompts_that_share_a_head_share_its_blocks_and_find_their_own_tail():
    cache = PrefixCache(max_bytes=10**6)
    cache.BLOCK = 4
    first, second, third = list(range(10)), list(range(8)) + [99, 98], list(range(6)) + [77, 78]
    for ids in (first, second, third):
        cache.add(torch.tensor(ids), states(ids))
    # first: blocks 0-3, 4-7, 8-9; second adds 99-98 under 4-7; third parts inside 4-7: 4, 5, 77, 78 again
    assert cache.nbytes == (10 + 2 + 4) * token_bytes()
    for ids, expected in ((second[:9] + [50], 9), (list(range(6)) + [9], 6), (third, 8), (first, 10)):
        length, found = cache.longest_prefix(torch.tensor(ids))
        assert length == expected
        assert [k.flatten().tolist() for k, _ in joined(found)] == [
            [float(i) + layer for i in ids[:expected]] for layer in range(2)
        ]


def test_the_least_recently_used_block_goes_first_when_full_and_shared_heads_stay():
    cache = PrefixCache(max_bytes=8 * token_bytes())
    cache.add(torch.tensor([1, 1, 1]), states([1, 1, 1]))
    cache.add(torch.tensor([2, 2, 2]), states([2, 2, 2]))
    cache.longest_prefix(torch.tensor([1, 1, 1]))  # used: now the most recent
    cache.add(torch.tensor([3, 3, 3]), states([3, 3, 3]))
    assert cache.longest_prefix(torch.tensor([2, 2, 2]))[0] == 0  # room for 8 tokens: [2, 2, 2] went
    assert cache.longest_prefix(torch.tensor([1, 1, 1]))[0] == 3 and cache.nbytes == 6 * token_bytes()

    cache = PrefixCache(max_bytes=12 * token_bytes())
    cache.BLOCK = 4
    cache.add(torch.tensor(range(10)), states(list(range(10))))
    cache.add(torch.tensor(range(50, 54)), states(list(range(50, 54))))  # 14 tokens: the oldest leaf goes
    assert cache.nbytes == 12 * token_bytes()
    assert cache.longest_prefix(torch.tensor(range(10)))[0] == 8  # the tail went, the head under it stayed
    assert cache.longest_prefix(torch.tensor(range(50, 54)))[0] == 4


@pytest.mark.real_model
def test_cached_prefill_generates_what_plain_generate_does():
    """Greedy decoding through the prefix cache and the decoding batch is token for token what
    ``model.generate`` gives each prompt alone, and prompts that repeat earlier ones prefill only
    their new tokens."""
    from mentalarena.agents.engine.generator import local_generator
    from mentalarena.agents.models import GenerationSettings, embedded_model_dir

    # float32: chunked and whole-prompt prefill then agree to the last bit, so outputs can be compared.
    generator = local_generator(str(embedded_model_dir()), "float32")
    generator.prefix_cache.clear()
    settings = GenerationSettings(temperature=0, max_new_tokens=16)
    system = {
        "role": "system",
        "content": "You are a patient in a first therapy session. Answer in one or two sentences.",
    }
    opening = [system, {"role": "user", "content": "What brings you here today?"}]
    follow_up = opening + [
        {"role": "assistant", "content": "I can't sleep and I keep worrying about work."},
        {"role": "user", "content": "How long has this been going on?"},
    ]
    other = [system, {"role": "user", "content": "How is your appetite?"}]
    prompts = [generator.render(m) for m in (opening, follow_up, other)]

    tokenizer = generator.tokenizer
    alone = [generator.decode(generator.generate_plain([prompt], settings))[0] for prompt in prompts]

    before = dict(generator.stats)
    assert generator.generate(prompts[:1], settings) == alone[:1]
    assert generator.generate(prompts[1:], settings) == alone[1:]  # the two prefill in one step
    cached_first = generator.stats["cached_prompt_tokens"] - before.get("cached_prompt_tokens", 0)
    assert cached_first > 0  # the follow-up and the other question reuse the opening's tokens
    kept = [(k, k.clone()) for block in generator.prefix_cache._recency for k, _ in block.states]
    assert generator.generate(prompts, settings) == alone  # now every prompt is served from the cache
    prompt_tokens = generator.stats["prompt_tokens"] - before.get("prompt_tokens", 0)
    assert (
        generator.stats["cached_prompt_tokens"] - before.get("cached_prompt_tokens", 0) - cached_first
        == prompt_tokens // 2
    )
    assert all(torch.equal(k, copy) for k, copy in kept)  # generating from cached states never writes into them

    # Replies are kept too: the next turn, which repeats the reply, prefills little more than its question.
    next_turn = generator.render(
        opening + [{"role": "assistant", "content": alone[0]}, {"role": "user", "content": "And at night?"}]
    )
    opening_tokens = len(tokenizer(prompts[0], add_special_tokens=False)["input_ids"])
    reply_tokens = len(tokenizer(alone[0], add_special_tokens=False)["input_ids"])
    ids = tokenizer(next_turn, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    assert generator.prefix_cache.longest_prefix(ids)[0] >= opening_tokens + reply_tokens // 2
    assert generator.generate([next_turn], settings) == generator.decode(
        generator.generate_plain([next_turn], settings)
    )


@pytest.mark.real_model
def test_requests_join_and_leave_the_batch_between_steps_without_changing_a_reply():
    """A short request submitted after a long one is answered while the long one still decodes;
    requests that join mid-way, with another temperature or length, change no greedy reply."""
    from mentalarena.agents.engine.generator import local_generator
    from mentalarena.agents.models import GenerationSettings, embedded_model_dir

    generator = local_generator(str(embedded_model_dir()), "float32")
    generator.prefix_cache.clear()
    long, short = (
        GenerationSettings(temperature=0, max_new_tokens=48),
        GenerationSettings(temperature=0, max_new_tokens=3),
    )
    count = generator.render([{"role": "user", "content": "Write the numbers from 1 to 100, separated by commas."}])
    question = generator.render([{"role": "user", "content": "How have you slept this week?"}])
    other, medium = (
        generator.render([{"role": "user", "content": "What do you do when you cannot sleep?"}]),
        GenerationSettings(temperature=0, max_new_tokens=12),
    )
    rows_by_step: list[int] = []
    generator.on_step = rows_by_step.append
    try:
        counting = generator.submit(count, long)
        while not rows_by_step:  # the long request is decoding
            time.sleep(0.01)
        answering, sleeping = generator.submit(question, short), generator.submit(other, medium)  # join together
        answered = answering.result(timeout=120)
        assert not counting.done()  # the short reply left the batch the step it ended; the medium one took its slot
        sampled = generator.submit(question, GenerationSettings(temperature=0.9, max_new_tokens=8))
        counted, slept = counting.result(timeout=120), sleeping.result(timeout=120)
        sampled.result(timeout=120)
    finally:
        generator.on_step = None
    assert max(rows_by_step) >= 2 and rows_by_step[0] == rows_by_step[-1] == 1
    assert len(generator.tokenizer(counted)["input_ids"]) >= 40  # it ran to (nearly) its 48 tokens
    assert counted == generator.decode(generator.generate_plain([count], long))[0]
    assert answered == generator.decode(generator.generate_plain([question], short))[0]
    assert slept == generator.decode(generator.generate_plain([other], medium))[0]


@pytest.mark.real_model
def test_constrained_rows_follow_their_schema_and_leave_the_free_rows_of_their_batch_alone():
    """Grammar-constrained decoding is per row: answers in two schemas and a free reply decode in
    one batch; each answer validates, and the free reply is what it is alone. What the grammar
    alone allows (each answer's keys, at least) is fed, not drawn."""
    from mentalarena.agents.engine.generator import local_generator
    from mentalarena.agents.models import GenerationSettings, embedded_model_dir
    from mentalarena.agents.prompts import DIAGNOSIS, PATIENT_RATING
    from mentalarena.agents.schemas import Diagnosis, Rating

    generator = local_generator(str(embedded_model_dir()), "float32")
    free, settings = (
        generator.render([{"role": "user", "content": "How have you slept this week?"}]),
        GenerationSettings(temperature=0, max_new_tokens=24),
    )
    rating = generator.render(
        [
            {
                "role": "user",
                "content": PATIENT_RATING.format(kind="treatment", proposal="Weekly CBT", explanation="It helps."),
            }
        ]
    )
    diagnosis = generator.render(
        [{"role": "user", "content": "I cannot sleep and nothing is fun any more.\n" + DIAGNOSIS}]
    )
    before, forced_before = generator.stats["constrained_requests"], generator.stats["forced_tokens"]
    rows_by_step: list[int] = []
    generator.on_step = rows_by_step.append
    try:
        futures = [
            generator.submit(
                rating, dataclasses.replace(settings, max_new_tokens=Rating.token_budget()), Rating.json_schema()
            ),
            generator.submit(free, settings),
            generator.submit(
                diagnosis,
                GenerationSettings(temperature=0.7, max_new_tokens=Diagnosis.token_budget()),
                Diagnosis.json_schema(),
            ),
        ]
        rated, replied, diagnosed = (future.result(timeout=300) for future in futures)
    finally:
        generator.on_step = None
    assert max(rows_by_step) >= 2  # they shared decoding steps
    assert 1 <= Rating.parse_json(rated).score <= 10
    assert json.loads(diagnosed, strict=False)["first"] in {entry["name"] for entry in diagnosis_vocabulary()}
    assert replied == generator.decode(generator.generate_plain([free], settings))[0]
    assert generator.stats["constrained_requests"] - before == 2
    keys = sum(
        len(generator.tokenizer(f'"{key}": ', add_special_tokens=False)["input_ids"])
        for key in [*Rating.model_fields, *Diagnosis.model_fields]
    )
    assert generator.stats["forced_tokens"] - forced_before >= keys


@pytest.mark.real_model
def test_a_request_cancelled_by_its_caller_does_not_stop_the_generator():
    from mentalarena.agents.engine.generator import local_generator
    from mentalarena.agents.models import GenerationSettings, embedded_model_dir

    generator = local_generator(str(embedded_model_dir()), "float32")
    prompt, settings = generator.render([{"role": "user", "content": "Say hello."}]), GenerationSettings.reproducible(4)
    abandoned = [generator.submit(prompt, settings) for _ in range(3)]
    for future in abandoned:
        future.cancel()  # as asyncio does when a waiting task is cancelled; too late for one that already began
    assert any(future.cancelled() for future in abandoned)  # the worker prefills one prompt while the others wait
    assert generator.submit(prompt, settings).result(timeout=60)
    assert all(future.cancelled() or future.result(timeout=60) for future in abandoned)


def test_the_decoding_batch_writes_each_row_at_its_own_length_and_keeps_rows_when_one_leaves():
    from mentalarena.agents.engine.generator import DecodingBatch

    batch = DecodingBatch()
    for pieces in ([states([1, 2]), states([3])], [states([4])], [states([5, 6])]):  # as the prefix cache gives them
        batch.add(pieces)
    assert batch.lengths.tolist() == [3, 1, 2]
    positions, mask = batch.begin_step([1, 1, 1])
    assert positions.tolist() == [3, 1, 2]
    assert mask.shape == (3, 1, 1, 4)
    assert mask[:, 0, 0].tolist() == [[True] * 4, [True, True, False, False], [True, True, True, False]]
    new = torch.tensor([7.0, 8.0, 9.0]).view(3, 1, 1, 1)
    keys, values = batch.update(new, -new, 0)  # a step that feeds tokens 7, 8 and 9, layer by layer
    batch.update(new + 1, -new - 1, 1)
    batch.advance()
    assert keys[:, 0, :, 0].tolist() == [[1, 2, 3, 7], [4, 8, 0, 0], [5, 6, 9, 0]]
    assert values[:, 0, :, 0].tolist() == [
        [1, 2, 3, -7],
        [4, -8, 0, 0],
        [5, 6, -9, 0],
    ]  # layer 0's values name their token

    left = batch.row_states(0)  # the first row ends; the last moves into its slot
    assert [k.flatten().tolist() for k, _ in left] == [[1, 2, 3, 7], [2, 3, 4, 8]]
    batch.remove(0)
    assert batch.lengths.tolist() == [3, 2]
    assert batch.keys[0][0, 0, :3, 0].tolist() == [5, 6, 9]
    batch.add([states(list(range(10, 310)))])  # longer than the storage: it grows, rows kept
    assert batch.lengths.tolist() == [3, 2, 300]
    assert batch.keys[0][:2, 0, :2, 0].tolist() == [[5, 6], [4, 8]]
    assert batch.keys[1][2, 0, :300, 0].tolist() == [float(i) + 1 for i in range(10, 310)]


def test_a_packed_step_writes_each_rows_tokens_from_its_length_and_draws_from_its_last():
    from mentalarena.agents.engine.generator import DecodingBatch

    batch = DecodingBatch()
    for ids in ([1, 2], [3, 4, 5], []):
        batch.add([states(ids, layers=1)])
    positions, mask = batch.begin_step(
        [1, 3, 2]
    )  # a decoding row, then a prompt of 3 tokens after 3 cached, then one of 2
    assert batch.packed and positions.tolist() == [2, 3, 4, 5, 0, 1]
    assert batch.last_tokens().tolist() == [0, 3, 5]
    assert mask[:, 0, 0].tolist() == [[True] * 3 + [False] * 3, [True] * 6, [True] * 2 + [False] * 4]
    fed = torch.tensor([6.0, 7, 8, 9, 10, 11]).view(1, 1, 6, 1)
    keys, _ = batch.update(fed, -fed, 0)
    batch.advance()
    assert keys[:, 0, :, 0].tolist() == [[1, 2, 6, 0, 0, 0], [3, 4, 5, 7, 8, 9], [10, 11, 0, 0, 0, 0]]
    assert batch.lengths.tolist() == [3, 6, 2]
    assert batch.packed_rows().counts == [1, 3, 2] and batch.begin_step([1, 1, 1])[0].tolist() == [3, 6, 2]
    assert not batch.packed


def test_packed_attention_attends_each_row_over_its_own_states_and_causally_among_its_new_tokens():
    from transformers.integrations.sdpa_attention import repeat_kv

    from mentalarena.agents.engine.generator import PackedRows, packed_attention

    torch.manual_seed(0)
    lengths, counts = (
        [5, 2, 0, 3, 4],
        [1, 1, 4, 1, 3],
    )  # two decoding rows, then prompts, then a decoding row after them
    key, value = (
        torch.randn(5, 3, 8, 64),
        torch.randn(5, 3, 8, 64),
    )  # 3 key/value heads; positions past a row's tokens are noise
    query = torch.randn(1, 9, sum(counts), 64)
    ends = torch.tensor(lengths) + torch.tensor(counts)
    mask = (torch.arange(8) < ends.unsqueeze(1)).view(5, 1, 1, 8)

    attention_layer = SimpleNamespace(num_key_value_groups=3, is_causal=True)  # what SDPA reads of the model's layer
    got = packed_attention(attention_layer, query, key, value, mask, PackedRows(lengths, counts), scaling=0.125)
    assert got.shape == (1, sum(counts), 9, 64)
    first = 0
    for row, (length, count) in enumerate(zip(lengths, counts)):
        for i in range(count):  # token i of the row sees its row's states and new tokens up to itself, in float64
            seen = length + i + 1
            q = query[0, :, first + i].double().unsqueeze(1)  # [heads, 1, head_dim]
            k, v = (
                repeat_kv(key[row : row + 1, :, :seen], 3)[0].double(),
                repeat_kv(value[row : row + 1, :, :seen], 3)[0].double(),
            )
            expected = ((q @ k.transpose(-1, -2)) * 0.125).softmax(dim=-1) @ v
            torch.testing.assert_close(got[0, first + i], expected[:, 0].float(), atol=1e-5, rtol=1e-5)
        first += count


def test_only_full_attention_models_are_decoded_locally():
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config

    from mentalarena.agents.engine.generator import check_full_attention

    check_full_attention(LlamaConfig(), "llama")
    check_full_attention(Qwen2Config(), "qwen")  # has a window, but does not use it
    with pytest.raises(ValueError, match=r"gemma/config.json: field layer_types asks for sliding_attention"):
        check_full_attention(Gemma3TextConfig(), "gemma")
    with pytest.raises(ValueError, match=r"mistral/config.json: field sliding_window"):
        check_full_attention(MistralConfig(sliding_window=4096), "mistral")


def test_grouped_attention_computes_attention_per_head_and_skips_masked_positions():
    from transformers.integrations.sdpa_attention import repeat_kv

    from mentalarena.agents.engine.generator import grouped_attention

    torch.manual_seed(0)
    query, key, value = (
        torch.randn(6, 9, 1, 64),
        torch.randn(6, 3, 40, 64),
        torch.randn(6, 3, 40, 64),
    )  # 9 query heads, 3 key/value heads
    mask = torch.ones(6, 1, 1, 40, dtype=torch.bool)
    for row in range(6):
        mask[row, ..., : 5 * row] = False  # left padding, different in every row
    # Written out: every query head against its own copy of its key/value head, in float64.
    scores = (query.double() @ repeat_kv(key, 3).double().transpose(-1, -2)) * 0.125
    expected = (scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ repeat_kv(value, 3).double()).transpose(1, 2)

    def grouped(key, value):
        return grouped_attention(query.bfloat16(), key.bfloat16(), value.bfloat16(), mask, 0.125).float()

    assert grouped(key, value).shape == expected.shape == (6, 1, 9, 64)
    torch.testing.assert_close(grouped(key, value), expected.float(), atol=0.02, rtol=0.02)  # bfloat16 rounding
    scrambled = torch.where(mask.transpose(-1, -2), key, torch.randn_like(key) * 100)
    torch.testing.assert_close(grouped(scrambled, value), grouped(key, value), atol=0, rtol=0)


@pytest.mark.real_model
def test_a_bfloat16_batch_decodes_through_the_grouped_attention():
    """On a CPU that computes bfloat16 natively, the generator's model takes the decoding steps of
    a batch as small as it groups through :func:`grouped_attention`, and its logits are SDPA's up
    to bfloat16 rounding. Where bfloat16 is emulated, SDPA takes every step. (The CPU's answer is
    patched both ways, so each machine tests both.)"""
    from unittest import mock

    from transformers import DynamicCache
    from transformers.integrations import sdpa_attention

    from mentalarena.agents.engine import generator as local
    from mentalarena.agents.models import embedded_model_dir

    generator = local.local_generator(str(embedded_model_dir()), "bfloat16")
    model, tokenizer = generator.model, generator.tokenizer
    prompts = [
        generator.render([{"role": "user", "content": "How have you slept " + "lately? " * n}])
        for n in range(local.GROUPED_MIN_BATCH)
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)

    def next_token_logits(attention: str):
        model.set_attn_implementation(attention)
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            ids, mask = batch["input_ids"], batch["attention_mask"]
            model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], past_key_values=cache, use_cache=True)
            return model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=cache).logits[:, -1].float()

    def sdpa_calls(native: bool) -> tuple[int, torch.Tensor]:
        with (
            mock.patch.object(local, "cpu_computes_bfloat16", return_value=native),
            mock.patch.object(
                sdpa_attention, "sdpa_attention_forward", wraps=sdpa_attention.sdpa_attention_forward
            ) as kernel,
        ):
            logits = next_token_logits(local.DECODE_ATTENTION)
        return kernel.call_count, logits

    layers = model.config.num_hidden_layers
    try:
        sdpa = next_token_logits("sdpa")
        native_calls, grouped = sdpa_calls(native=True)
        emulated_calls, _ = sdpa_calls(native=False)
    finally:
        model.set_attn_implementation(local.DECODE_ATTENTION)  # the model is shared: leave it as the generator set it
    assert native_calls == layers  # SDPA for the prefill only, not the decoding step
    assert emulated_calls == 2 * layers  # the prefill and the decoding step
    assert float((grouped - sdpa).abs().max()) < 0.05 * float(sdpa.abs().max())
    assert grouped.argmax(dim=-1).tolist() == sdpa.argmax(dim=-1).tolist()


@pytest.mark.real_model
@pytest.mark.parametrize("native", [True, False])
def test_a_bfloat16_generator_decodes_its_batch_with_either_attention(native):
    """The generator's own decoding steps in bfloat16, through the grouped matmuls (as on a CPU
    that computes bfloat16) and through SDPA: greedy replies agree with plain ``generate``'s first
    tokens (bfloat16 rounds with the batch's shape, so not every token need agree)."""
    from unittest import mock

    from mentalarena.agents.engine import generator as local
    from mentalarena.agents.models import GenerationSettings, embedded_model_dir

    generator = local.local_generator(str(embedded_model_dir()), "bfloat16")
    settings = GenerationSettings(temperature=0, max_new_tokens=6)
    prompts = [
        generator.render([{"role": "user", "content": f"Name {n} colours."}])
        for n in range(2, 2 + local.GROUPED_MIN_BATCH)
    ]
    with mock.patch.object(local, "cpu_computes_bfloat16", return_value=native):
        replies = generator.generate(prompts, settings)
    alone = [generator.decode(generator.generate_plain([prompt], settings))[0] for prompt in prompts]
    assert [reply.split()[:2] for reply in replies] == [text.split()[:2] for text in alone]


def test_the_sampler_draws_from_the_distribution_generate_samples_from():
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    scores = torch.randn(1, 200).repeat(40_000, 1)  # one distribution, drawn 40,000 times
    warped = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(50), TopPLogitsWarper(0.95)])(
        None, scores[:1]
    )
    expected = warped.softmax(dim=-1)[0]
    drawn = TopKNucleusSampler(0.7)(None, scores)
    assert bool((torch.isfinite(drawn).sum(dim=-1) == 1).all())  # one possible token per row
    observed = torch.bincount(drawn.argmax(dim=-1), minlength=200) / len(scores)
    assert int((expected > 0).sum()) > 3  # a real nucleus, not one token
    assert bool((observed[expected == 0] == 0).all())  # nothing outside top-k and top-p
    assert float((observed - expected).abs().max()) < 0.01


packable = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch here is built without oneDNN")


@packable
@pytest.mark.parametrize("bias", [False, True])
def test_a_packed_linear_computes_what_the_linear_does_at_every_batch_size(bias):
    from mentalarena.agents.engine.packed_linear import PACKED_FOR_BATCH, PackedLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 1536, bias=bias)
    packed = PackedLinear(linear)
    with torch.inference_mode():
        # decoding steps below, at and above the batch it is packed for, a prefill, and 2-D input
        for x in (
            torch.randn(1, 1, 576),
            torch.randn(PACKED_FOR_BATCH, 1, 576),
            torch.randn(24, 1, 576),
            torch.randn(1, 300, 576),
            torch.randn(5, 576),
        ):
            torch.testing.assert_close(packed(x), linear(x), atol=1e-4, rtol=1e-4)


@packable
def test_only_plain_float32_linear_layers_are_packed():
    from mentalarena.agents.engine.packed_linear import PackedLinear, pack_linear_layers

    class Scaled(torch.nn.Linear):  # a subclass does more than a matmul (as LoRA layers do): kept
        def forward(self, x):
            return 2 * super().forward(x)

    def model():
        return torch.nn.Sequential(
            torch.nn.Linear(8, 8), torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()), Scaled(4, 4)
        )

    float32 = model()
    assert pack_linear_layers(float32) == 2
    assert [type(m) for m in (float32[0], float32[1][0], float32[2])] == [PackedLinear, PackedLinear, Scaled]
    bfloat16 = model().to(torch.bfloat16)
    assert pack_linear_layers(bfloat16) == 0  # not measured in bfloat16: left as it was
    assert not any(isinstance(m, PackedLinear) for m in bfloat16.modules())


@packable
@pytest.mark.real_model
def test_the_float32_local_model_decodes_through_packed_layers_as_the_plain_model_does():
    from transformers import AutoModelForCausalLM

    from mentalarena.agents.engine.packed_linear import PackedLinear
    from mentalarena.agents.models import embedded_model_dir, load_local_model

    folder = str(embedded_model_dir())
    model, tokenizer = load_local_model(folder, "float32")
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    linears = [name for name, m in plain.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(model.get_submodule(name), PackedLinear) for name in linears)
    prompts = [
        f"Question: {q}\nAnswer:"
        for q in ("How long have you had trouble sleeping?", "What helps when you feel anxious at work?")
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.inference_mode():
        packed_logits, plain_logits = model(**batch).logits, plain(**batch).logits
        settings = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        packed_tokens, plain_tokens = model.generate(**batch, **settings), plain.generate(**batch, **settings)
    torch.testing.assert_close(packed_logits, plain_logits, atol=1e-3, rtol=1e-3)
    assert packed_tokens.tolist() == plain_tokens.tolist()
