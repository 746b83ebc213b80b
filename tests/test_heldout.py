"""The held-out arena evaluation and the loop around it, with scripted models (no training: the
loop's `train` step is replaced by one that names the next model, so "training" can improve a
model by construction, or change nothing)."""

import json
from pathlib import Path

import pytest

from mentalarena.agents.context import Context
from mentalarena.agents.models import register_chat_model, unregister_chat_model
from mentalarena.agents.profiles import builtin_profiles, patient_identity
from mentalarena.agents.schemas import Answer, Diagnosis
from mentalarena.agents.scripted import RoleScript, ScriptedChatModel
from mentalarena.cli import main
from mentalarena.graphs.cli import SMALL_BUDGET
from mentalarena.training import loop
from mentalarena.training.export import iter_records, record_patient
from mentalarena.training.heldout import METRICS, split_patients
from mentalarena.training.loop import IterateArgs, iterate

# Every patient presents with depression here, so a therapist that always says so is right.
PRESENTATION = "major depressive disorder"


class WeakScript(RoleScript):
    """Diagnoses every patient with the wrong illness, and its patients rate its proposals 3."""

    def __init__(self):
        super().__init__(treatment_scores=(3,), medication_scores=(3,))

    def __call__(self, messages):
        reply = super().__call__(messages)
        if isinstance(reply, Diagnosis):
            return reply.model_copy(update={"first": "Acute stress disorder", "second": "Adjustment disorder"})
        return reply


class ProseWithoutConstraints(ScriptedChatModel):
    """Answers in its schema when held to it; left free, it writes prose that no parser reads."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        if kwargs.get("response_format"):
            return super()._generate(messages, stop, run_manager, **kwargs)
        respond = self.respond
        self.respond = lambda m: "Hmm." if isinstance(respond(m), Answer) else respond(m)
        try:
            return super()._generate(messages, stop, run_manager, **kwargs)
        finally:
            self.respond = respond


@pytest.fixture
def models():
    """Spec names: 'weak' (wrong diagnosis, low ratings, no format without constraints), 'strong'
    (the right diagnosis, high ratings, labelled answers) and 'weak-copy' (the weak model again)."""
    names = {
        "weak": f"weak-{id(object())}",
        "strong": f"strong-{id(object())}",
        "weak-copy": f"weak-copy-{id(object())}",
    }
    register_chat_model(names["weak"], ProseWithoutConstraints(respond=WeakScript()))
    register_chat_model(names["weak-copy"], ProseWithoutConstraints(respond=WeakScript()))
    register_chat_model(names["strong"], ScriptedChatModel(respond=RoleScript()))
    yield names
    for name in names.values():
        unregister_chat_model(name)


def depressed_profiles() -> list:
    return [p.model_copy(update={"presentation": PRESENTATION}) for p in builtin_profiles()]


def small_context(model: str) -> Context:
    return Context(model=model, **{**SMALL_BUDGET, "inquiry_turns": 1, "parse_retries": 0})


class FakeTraining:
    """Stands in for `train`: writes the metrics a finished training leaves, and names ``next_model``
    as the merged model. ``fail_on`` (a call number) raises there, as a killed run would stop."""

    def __init__(self, next_model: str, fail_on: int | None = None):
        self.next_model, self.fail_on, self.calls = next_model, fail_on, 0

    def __call__(self, args):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt("killed while training")
        metrics = {"merged": self.next_model, "first_loss": 2.0, "final_loss": 1.0}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics))
        return metrics


def loop_args(out: Path, model: str, **changes) -> IterateArgs:
    training, heldout = split_patients(depressed_profiles(), 0.25, seed=0)
    settings = {"iterations": 2, "sessions": 6, "progress": False, **changes}
    return IterateArgs(out=out, profiles=training, context=small_context(model), heldout_profiles=heldout, **settings)


def test_split_keeps_each_patient_whole_and_both_sides_filled():
    profiles = builtin_profiles()
    twin = profiles[0].model_copy(update={"id": "builtin-01-again"})  # a second profile of the same patient
    training, heldout = split_patients([*profiles, twin], 0.25, seed=0)
    assert training and heldout and len(training) + len(heldout) == len(profiles) + 1
    sides = {
        side
        for side, group in (("train", training), ("heldout", heldout))
        for p in group
        if p.name == profiles[0].name and p.history == profiles[0].history
    }
    assert len(sides) == 1


def test_the_loop_never_trains_on_held_out_patients_and_shows_what_training_changed(models, tmp_path, monkeypatch):
    training = FakeTraining(next_model=models["strong"])
    monkeypatch.setattr(loop, "train", training)
    args = loop_args(tmp_path / "loop", models["weak"])
    report = iterate(args)

    heldout_patients = {patient_identity(p.to_patient_psi()) for p in args.heldout_profiles}
    for k in range(2):
        played = {
            record_patient(r) for _, r in iter_records([tmp_path / "loop" / f"iter-{k}" / "selfplay" / "records.jsonl"])
        }
        assert played and not played & heldout_patients
        dataset = "".join(path.read_text() for path in (tmp_path / "loop" / f"iter-{k}" / "dataset").glob("*.jsonl"))
        assert any(p.history in dataset for p in args.profiles)  # the check below can see a profile in the data
        assert not any(p.history in dataset for p in args.heldout_profiles)
    # The held-out sessions are the held-out patients', played by each model.
    for folder in ("heldout-base", "iter-0/heldout", "iter-1/heldout"):
        played = {
            record_patient(r) for _, r in iter_records([tmp_path / "loop" / folder / "constrained" / "records.jsonl"])
        }
        assert played == heldout_patients

    comparison = report["heldout"]
    assert list(comparison["models"]) == ["base", "iteration 1", "iteration 2"]
    base, first = comparison["models"]["base"], comparison["models"]["iteration 1"]
    assert base["diagnosis_top1"]["share"] == 0 and first["diagnosis_top1"]["share"] == 1
    assert base["format_adherence"]["share"] == 0 and first["format_adherence"]["share"] == 1
    for label in ("iteration 1", "iteration 2"):
        differences = comparison["differences"][label]
        for name in ("diagnosis_top1", "diagnosis_either", "treatment_rating", "medication_rating", "format_adherence"):
            assert differences[name]["outside_interval"] and differences[name]["mean"] > 0, (
                label,
                name,
                differences[name],
            )
    text = (tmp_path / "loop" / "report.md").read_text()
    assert "iteration 1 against base" in text and "higher, better" in text
    assert (tmp_path / "loop" / "heldout.png").stat().st_size > 0
    assert report["selfplay_model"] == "the student (self-play)" and training.calls == 2


def test_a_teacher_plays_the_self_play_and_the_report_names_it(models, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "train", FakeTraining(next_model=models["weak"]))
    report = iterate(
        loop_args(tmp_path / "loop", models["weak"], teacher=models["strong"], iterations=1, format_check=False)
    )
    records = [r for _, r in iter_records([tmp_path / "loop" / "iter-0" / "selfplay" / "records.jsonl"])]
    assert records and all(r["treatment_score"] == 9 for r in records)  # the strong model's patients rate 9
    assert (
        report["selfplay_model"] == models["strong"] and report["iterations"][0]["selfplay_model"] == models["strong"]
    )
    assert f"Self-play data generated by: {models['strong']}" in (tmp_path / "loop" / "report.md").read_text()


def test_an_interrupted_loop_resumes_without_redoing_finished_steps(models, tmp_path, monkeypatch):
    out = tmp_path / "loop"
    monkeypatch.setattr(loop, "train", FakeTraining(next_model=models["weak-copy"], fail_on=2))
    with pytest.raises(KeyboardInterrupt):
        iterate(loop_args(out, models["weak"]))
    finished = [
        out / "heldout-base" / "constrained" / "records.jsonl",
        out / "heldout-base" / "unconstrained" / "records.jsonl",
        out / "iter-0" / "selfplay" / "records.jsonl",
        out / "iter-0" / "dataset" / "export.json",
        out / "iter-0" / "model" / "metrics.json",
        out / "iter-0" / "heldout" / "constrained" / "records.jsonl",
        out / "iter-1" / "selfplay" / "records.jsonl",
    ]
    stamps = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in finished}

    resumed = FakeTraining(next_model=models["weak-copy"])
    monkeypatch.setattr(loop, "train", resumed)
    report = iterate(loop_args(out, models["weak"]))
    assert stamps == {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in finished}
    assert resumed.calls == 1  # only iteration 2's training was left
    assert [m["iteration"] for m in report["iterations"]] == [0, 1]
    # A model that training did not change shows no difference on the same held-out sessions.
    for label in ("iteration 1", "iteration 2"):
        assert not any(d["outside_interval"] for d in report["heldout"]["differences"][label].values()), label


def test_eval_arena_compares_models_on_the_same_held_out_sessions(models, tmp_path, capsys):
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps([p.to_patient_psi() for p in depressed_profiles()[:8]]))
    out = tmp_path / "arena"
    specs = ",".join(models[name] for name in ("weak", "strong", "weak-copy"))
    args = [
        "eval",
        "arena",
        "--models",
        specs,
        "--profiles",
        str(profiles),
        "--heldout-ratio",
        "0.5",
        "--sessions-per-patient",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--budget",
        "small",
        "--inquiry-turns",
        "1",
        "--parse-retries",
        "0",
    ]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["patients"]) == 4 and report["baseline"] == models["weak"]
    # Every metric of every model carries its interval.
    for summary in report["models"].values():
        for metric in METRICS:
            value = summary[metric.name]
            assert (
                value is not None and value["ci_low"] <= (value.get("share", value.get("mean"))) <= value["ci_high"]
            ), (metric.name, value)
    assert report["models"][models["weak"]]["diagnosis_top1"]["n"] == 8  # 4 patients, twice each
    better, same = report["differences"][models["strong"]], report["differences"][models["weak-copy"]]
    assert better["diagnosis_top1"]["mean"] == 1 and better["diagnosis_top1"]["outside_interval"]
    assert better["treatment_rating"]["outside_interval"] and better["format_adherence"]["outside_interval"]
    assert not any(d["outside_interval"] for d in same.values())
    printed = capsys.readouterr().out
    assert f"{models['weak-copy']} against {models['weak']}: no difference outside its interval" in printed
    assert "[" in (out / "report.md").read_text() and (out / "report.png").stat().st_size > 0
    # Run again: every session has its record, so nothing is played twice.
    lines = {path: path.read_text() for path in out.rglob("records.jsonl")}
    assert main(args) == 0
    assert lines == {path: path.read_text() for path in out.rglob("records.jsonl")}


@pytest.mark.parametrize("ratio, reason", [("1", "below 1"), ("-0.1", "at least 0"), ("x", "not a number")])
def test_eval_arena_refuses_a_bad_heldout_ratio(ratio, reason, capsys):
    assert main(["eval", "arena", "--models", "scripted", "--heldout-ratio", ratio]) == 2
    assert "--heldout-ratio" in capsys.readouterr().err


def test_a_split_that_leaves_one_side_empty_is_refused_by_name(tmp_path, capsys):
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps([builtin_profiles()[0].to_patient_psi()]))
    assert (
        main(["eval", "arena", "--models", "scripted", "--profiles", str(profiles), "--out", str(tmp_path / "a")]) == 2
    )
    err = capsys.readouterr().err
    assert "--heldout-ratio" in err and "both need at least one" in err


def test_the_training_effect_benchmark_writes_its_results_line(models, tmp_path, monkeypatch, capsys):
    from mentalarena.benchmarks import training_effect

    monkeypatch.setattr(loop, "train", FakeTraining(next_model=models["strong"]))
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps([p.to_patient_psi() for p in depressed_profiles()[:4]]))
    results = tmp_path / "results.jsonl"
    command = [
        "--model",
        models["weak"],
        "--profiles",
        str(profiles),
        "--heldout-ratio",
        "0.5",
        "--iterations",
        "1",
        "--sessions",
        "2",
        "--no-format-check",
        "--quiet",
        "--budget",
        "small",
        "--inquiry-turns",
        "1",
        "--out",
        str(tmp_path / "loop"),
    ]
    assert training_effect.main(["--results", str(results), "--", *command]) == 0
    line = json.loads(results.read_text())
    assert line["kind"] == "training_effect" and line["command"].startswith("mentalarena iterate --model")
    assert line["heldout"]["differences"]["iteration 1"]["diagnosis_top1"]["outside_interval"]
    assert "iteration 1 against base" in capsys.readouterr().out
    assert (
        training_effect.main(["--results", str(results), "--", "--iterations", "1"]) == 2
    )  # no --out: refused, nothing run
