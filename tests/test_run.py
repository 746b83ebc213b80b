"""The batch runner: run folder, JSONL records, manifest, resume, failures."""

import json

import pytest

from mentalarena.agents.context import Context
from mentalarena.agents.profiles import builtin_profiles
from mentalarena.agents.scripted import RoleScript
from mentalarena.cli import main
from mentalarena.graphs.run import run_sessions
from mentalarena.graphs.run_folder import redact_url, settle_records


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
    assert [r["session_id"] for r in records(tmp_path)] == [
        "0000-builtin-01",
        "0001-builtin-02",
        "0002-builtin-01",
        "0003-builtin-02",
    ]
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
    context = Context(
        model=spec,
        base_url="https://user:pa55word@llm.example/v1",
        inquiry_turns=1,
        max_redirections=0,
        treatment_tries=1,
        medication_tries=1,
    )
    run_sessions(builtin_profiles()[:1], context, tmp_path, sessions=1, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"]["base_url"] == "https://llm.example/v1"
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"sk-test-secret-123" not in data and b"pa55word" not in data, path.name


def test_cli_flags_become_context_settings():
    from mentalarena.cli import make_parser
    from mentalarena.graphs.cli import build_context

    embedded = build_context(make_parser().parse_args(["run", "--review-feedback", "--similarity-threshold", "0.3"]))
    assert (embedded.review_feedback, embedded.similarity_threshold, embedded.max_new_tokens) == (
        True,
        0.3,
        64,
    )  # small budget
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


SMALL_RUN = [
    "--inquiry-turns",
    "1",
    "--max-redirections",
    "0",
    "--treatment-tries",
    "1",
    "--medication-tries",
    "1",
    "--quiet",
]


@pytest.mark.parametrize(
    "url, redacted",
    [
        ("postgresql://host/db?password=s3cret", "postgresql://host/db"),
        ("https://llm.example/v1?api-key=s3cret", "https://llm.example/v1"),
        ("http://user:pw@[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
        # Round-robin base URLs: each one redacted, the commas inside one URL kept.
        (
            "http://a:s3cret@h1:8000/v1,https://h2/v1?X-Api-Key=s3cret&model=m",
            "http://h1:8000/v1,https://h2/v1?model=m",
        ),
        ("postgresql://u:s3cret@h1,h2/db?sslmode=require&sslpassword=s3cret", "postgresql://h1,h2/db?sslmode=require"),
        ("postgresql:///db?host=/var/run/postgresql&Password=s3cret", "postgresql:///db?host=/var/run/postgresql"),
        ("https://h/v1?ids=a,b&access_token=s3cret;sig=s3cret;v=2", "https://h/v1?ids=a,b&v=2"),
        ("https://h/cb#id_token=s3cret&state=1", "https://h/cb#state=1"),
        (
            "https://h/v1?api%5Fkey=s3cret&AUTH=s3cret&Signature=s3cret&credential=s3cret&pwd=s3cret&secret=s3cret",
            "https://h/v1",
        ),
        ("http://[::1/v1?token=s3cret", "<unparseable URL>"),
        ("https://llm.example/v1", "https://llm.example/v1"),
    ],
)
def test_redact_url_strips_userinfo_and_secret_parameters(url, redacted):
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "options, named",
    [
        (["--sessions", "-1"], "--sessions: -1 must be at least 1"),
        (["--concurrency", "0"], "--concurrency: 0 must be at least 1"),
        (["--model", "nosuch:model"], "--model: model spec 'nosuch:model': unknown provider 'nosuch'"),
        (["--model", "/missing/folder"], "--model: model spec '/missing/folder': no such model folder"),
        (
            ["--model", "scripted", "--therapist-model", "./missing"],
            "--therapist-model: model spec './missing': no such model folder",
        ),
        (
            ["--model", "scripted", "--checkpoint-url", "mysql://u:s3cret@h/db"],
            "--checkpoint-url: 'mysql://h/db' is not a postgresql:// URL",
        ),
        (["--model", "scripted", "--style", "shouting"], "Context.style: 'shouting' is not one of"),
        (
            ["--model", "scripted", "--structured-output", "json_object"],
            "--structured-output: 'json_object' names an OpenAI-compatible",
        ),
        (["--model", "scripted", "--structured-output", "xml"], "Context.structured_output: 'xml' is not one of"),
    ],
)
def test_a_bad_option_exits_2_before_the_run_folder_exists(tmp_path, capsys, options, named):
    assert main(["run", "--out", str(tmp_path / "run"), "--quiet", *options]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("error") == 1, err
    assert not (tmp_path / "run").exists()


def test_resume_retries_a_failed_session_once_and_keeps_one_line_for_it(scripted, tmp_path, capsys):
    script = RoleScript()
    failures = []

    def fail_once(messages):
        if "You are Priya" in messages[0].content and not failures:
            failures.append(1)
            raise RuntimeError("upstream refused https://llm.example/v1?api-key=s3cret")
        return script(messages)

    spec, model = scripted(fail_once)
    run = ["run", "--model", spec, "--out", str(tmp_path), "--sessions", "3", *SMALL_RUN]
    assert main(run) == 1
    first = records(tmp_path)
    assert [(r["session_id"], r["status"]) for r in first] == [
        ("0000-builtin-01", "done"),
        ("0001-builtin-02", "failed"),
        ("0002-builtin-03", "done"),
    ]
    assert first[1]["error"] == "RuntimeError: upstream refused https://llm.example/v1"
    capsys.readouterr()

    calls = len(model.calls)
    assert main([*run, "--resume", "--no-retry-failed"]) == 0
    assert len(model.calls) == calls and records(tmp_path) == first
    assert "2 already finished before this run, 1 failed before and not retried" in capsys.readouterr().out

    assert main([*run, "--resume"]) == 0
    assert "1 done, 0 failed, 1 of them retried after failing before, 2 already finished" in capsys.readouterr().out
    final = records(tmp_path)
    assert [(r["session_id"], r["status"]) for r in final] == [
        ("0000-builtin-01", "done"),
        ("0001-builtin-02", "done"),
        ("0002-builtin-03", "done"),
    ]
    assert final[0] == first[0] and final[2] == first[2] and final[1]["treatment"]
    assert b"s3cret" not in (tmp_path / "records.jsonl").read_bytes()

    assert main([*run, "--resume"]) == 0  # nothing left to retry
    assert records(tmp_path) == final


def test_settling_records_keeps_the_last_line_of_each_session(tmp_path):
    """A crash between a retry's append and the end of its run leaves two lines for one session."""
    path = tmp_path / "records.jsonl"
    lines = [
        {"session_id": "a", "status": "failed"},
        {"session_id": "b", "status": "done"},
        {"session_id": "a", "status": "done", "n": 2},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"session_id": "c", "sta')
    assert settle_records(path) == {"a": "done", "b": "done"}
    assert [json.loads(line) for line in path.read_text().splitlines()] == [lines[2], lines[1]]
    assert not (tmp_path / "records.jsonl.tmp").exists()
    assert settle_records(path) == {"a": "done", "b": "done"}  # a settled file is left as it is
