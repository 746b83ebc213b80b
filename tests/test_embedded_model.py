"""The real layers, once each: the embedded SmolLM2 model, MiniLM embeddings, SQLite checkpoints."""

import json

import pytest

from mentalarena.agents.context import Context
from mentalarena.agents.models import GenerationSettings, embedded_model_dir, load_chat_model
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.graphs.run import run_sessions

pytestmark = pytest.mark.real_model


def test_the_embedded_model_is_converted_once_and_answers():
    folder = embedded_model_dir()
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert embedded_model_dir() == folder  # cached
    model = load_chat_model("embedded", GenerationSettings(temperature=0, max_new_tokens=8))
    reply = model.invoke([("system", "You are terse."), ("human", "Say hello.")])
    assert reply.text.strip()


def test_a_smoke_session_on_the_embedded_model(tmp_path):
    """A whole session, tiny token budget: every stage runs and the record is complete."""
    context = Context(
        model="embedded",
        inquiry_turns=1,
        max_redirections=1,
        treatment_tries=1,
        medication_tries=1,
        max_new_tokens=24,
        parse_retries=0,
    )
    summary = run_sessions(builtin_profiles()[:1], context, tmp_path, sessions=1, progress=False)
    assert summary.done == 1, (tmp_path / "records.jsonl").read_text()
    record = json.loads((tmp_path / "records.jsonl").read_text())
    speakers = [t["speaker"] for t in record["transcript"]]
    assert speakers[:3] == ["patient", "therapist", "patient"]
    assert {"inquiry", "diagnosis", "treatment", "medication"} <= {t["phase"] for t in record["transcript"]}
    assert record["decoder_rounds"] and all(
        0.0 <= s <= 1.0 for r in record["decoder_rounds"] for s in r["similarities"].values()
    )
    assert len(record["treatment_trials"]) == 1 and len(record["medication_trials"]) == 1
    assert record["models"]["therapist"].startswith("SmolLM2-135M-Instruct")
    # Every machine-read answer was decoded under its schema's grammar, and read.
    assert record["answers"] and all(a["constrained"] and a["json"] and a["parsed"] for a in record["answers"]), record[
        "answers"
    ]
    assert all(f["node"] and f["reason"] for f in record["failures"])
    assert (tmp_path / "checkpoints.sqlite").stat().st_size > 0


def test_concurrent_requests_share_one_batch():
    from concurrent.futures import ThreadPoolExecutor

    from mentalarena.agents.engine.generator import local_generator

    model = load_chat_model("embedded", GenerationSettings.reproducible(max_new_tokens=6))
    generator = local_generator(str(embedded_model_dir()), "float32")
    before = dict(generator.stats)
    questions = [f"Name a colour. ({i})" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda q: model.invoke([("human", q)]).text, questions))
    assert all(r.strip() for r in replies)
    assert generator.stats["requests"] - before.get("requests", 0) == 4
    steps, row_steps = (generator.stats[key] - before.get(key, 0) for key in ("steps", "row_steps"))
    assert row_steps > steps  # at least two shared a decoding step
    # Greedy decoding in a batch gives what the same prompt gives alone.
    assert model.invoke([("human", questions[0])]).text == replies[0]


def test_sessions_that_start_together_share_one_model(tmp_path):
    """The first use is concurrent: one load, one generator, and sessions that finish."""
    from concurrent.futures import ThreadPoolExecutor

    from mentalarena.agents import embeddings, models
    from mentalarena.agents.engine import generator as local

    def forget_loaded_models():
        local._generators.clear()
        models._load_local_model.cache_clear()
        embeddings._load_embeddings.cache_clear()

    forget_loaded_models()
    folder = str(embedded_model_dir())
    with ThreadPoolExecutor(4) as pool:
        generators = list(pool.map(local.local_generator, [folder] * 4))
    assert all(g is generators[0] for g in generators)
    context = Context(
        model="embedded", inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1, max_new_tokens=16
    )
    forget_loaded_models()
    summary = run_sessions(builtin_profiles()[:3], context, tmp_path, sessions=3, progress=False, concurrency=3)
    assert summary.done == 3, (tmp_path / "records.jsonl").read_text()[:500]
