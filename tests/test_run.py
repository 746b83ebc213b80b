"""The batch runner: run folder, JSONL records, manifest, resume, failures."""

import json

from mentalarena.agents.profiles import builtin_profiles
from mentalarena.graphs.cli import main
from mentalarena.graphs.context import Context
from mentalarena.graphs.run import run_sessions

from mentalarena.agents.scripted import RoleScript


def records(folder):
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def test_a_run_writes_records_and_a_manifest_and_resumes_without_duplicates(scripted, tmp_path):
    spec, model = scripted(RoleScript())
    context = Context(model=spec, inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1)
    profiles = builtin_profiles()[:2]
    summary = run_sessions(profiles, context, tmp_path, sessions=3, progress=False)

    assert (summary.done, summary.failed) == (3, 0)
    lines = records(tmp_path)
    assert [r["session_id"] for r in lines] == ["0000-builtin-01", "0001-builtin-02", "0002-builtin-01"]
    assert all(r["status"] == "done" and r["treatment"] and r["medicine"] and r["transcript"] for r in lines)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"]["model"] == spec and manifest["seed"] == 0
    assert manifest["packages"]["langgraph"] != "not installed"

    # A crash mid-write leaves a torn last line: resume cuts it and finishes what is missing.
    text = (tmp_path / "records.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "records.jsonl").write_text("".join(text[:2]) + text[2][:40])
    calls_before = len(model.calls)
    summary = run_sessions(profiles, context, tmp_path, sessions=4, progress=False)
    assert (summary.done, summary.skipped) == (2, 2)
    assert [r["session_id"] for r in records(tmp_path)] == ["0000-builtin-01", "0001-builtin-02", "0002-builtin-01", "0003-builtin-02"]
    # Session 2 had finished in the checkpointer: its record is recovered, not generated again,
    # so only session 3 called the model.
    assert records(tmp_path)[2] == lines[2]
    assert len(model.calls) - calls_before == calls_before // 3


def test_a_failing_session_is_recorded_and_the_others_go_on(scripted, tmp_path):
    script = RoleScript()

    def respond(messages):
        if "You are Priya" in messages[0].content:
            raise TimeoutError("model timed out")
        return script(messages)

    spec, _ = scripted(respond)
    context = Context(model=spec, inquiry_turns=1, max_redirections=0, treatment_tries=1, medication_tries=1)
    profiles = builtin_profiles()[:3]
    summary = run_sessions(profiles, context, tmp_path, sessions=3, progress=False)
    lines = records(tmp_path)
    failed = [r for r in lines if r["status"] == "failed"]
    assert summary.failed == len(failed) == 1
    assert failed[0]["error"] == "TimeoutError: model timed out"
    assert sum(r["status"] == "done" for r in lines) == 2


def test_cli_reports_a_bad_profiles_file(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text('[{"name": "A"}]')
    assert main(["run", "--profiles", str(bad), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: record 0: field 'id': Field required" in err
    assert not (tmp_path / "run").exists()


def test_secrets_never_reach_the_run_folder(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    spec, _ = scripted(RoleScript())
    context = Context(model=spec, base_url="https://user:pa55word@llm.example/v1", inquiry_turns=1, max_redirections=0,
                      treatment_tries=1, medication_tries=1)
    run_sessions(builtin_profiles()[:1], context, tmp_path, sessions=1, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"]["base_url"] == "https://llm.example/v1"
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"sk-test-secret-123" not in data and b"pa55word" not in data, path.name


def test_cli_flags_become_context_settings():
    from mentalarena.graphs.cli import build_context, make_parser

    embedded = build_context(make_parser().parse_args(["run", "--review-feedback", "--similarity-threshold", "0.3"]))
    assert (embedded.review_feedback, embedded.similarity_threshold, embedded.max_new_tokens) == (True, 0.3, 64)  # small budget
    api = build_context(make_parser().parse_args(["run", "--model", "openai:gpt-4o-mini", "--no-review-feedback"]))
    assert (api.review_feedback, api.max_new_tokens, api.inquiry_turns) == (False, 128, 3)  # the Context defaults


def test_model_loads_wait_for_each_other(monkeypatch):
    """Concurrent sessions ask for the chat model and the embedding model at once; the loads must
    not overlap (overlapping from_pretrained calls failed imports and left weights on the meta device)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from mentalarena.agents import embeddings, models

    inside, most = 0, 0
    counting = threading.Lock()

    def slow_load(*args):
        nonlocal inside, most
        with counting:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        with counting:
            inside -= 1
        return args

    monkeypatch.setattr(models, "_load_local_model", slow_load)
    monkeypatch.setattr(embeddings, "_load_embeddings", slow_load)
    loads = [lambda: models.load_local_model("/some/model"), lambda: embeddings.load_embeddings("minilm")] * 3
    with ThreadPoolExecutor(len(loads)) as pool:
        list(pool.map(lambda load: load(), loads))
    assert most == 1
