"""Real fine-tuning on CPU with the embedded model: a few LoRA steps on a tiny export."""

import pytest
from test_export import PROFILES, make_record, write

from mentalarena.agents.models import GenerationSettings, embedded_model_dir, load_chat_model
from mentalarena.training.export import ExportArgs, export
from mentalarena.training.finetune import TrainArgs, train

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft")
    records = [
        make_record(f"s{i}", pid, symptom_summary=f"{pid}: summary {i}.") for i, pid in enumerate(list(PROFILES) * 2)
    ]
    export(ExportArgs(records=[write(folder, records)], out=folder / "ds", validation_ratio=0.34))
    return folder / "ds"


def test_the_export_trains_with_a_plain_trl_sft_trainer(dataset, tmp_path):
    """Independent of this project's training code: datasets + TRL defaults only."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    train_set = load_dataset("json", data_files=str(dataset / "train.jsonl"), split="train")
    assert set(train_set.column_names) == {"messages"}
    config = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=256,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = SFTTrainer(model=str(embedded_model_dir()), args=config, train_dataset=train_set)
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


def test_lora_lowers_the_loss_and_the_adapter_loads_back_into_the_arena(dataset, tmp_path):
    metrics = train(TrainArgs(model="embedded", dataset=dataset, out=tmp_path, max_steps=8, sft={"max_length": 384}))
    losses = [loss for _, loss in metrics["train_loss"]]
    assert len(losses) == 8
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses
    assert (tmp_path / "loss.png").stat().st_size > 0
    for folder in (metrics["adapter"], metrics["merged"]):
        model = load_chat_model(folder, GenerationSettings(temperature=0, max_new_tokens=4))
        assert model.invoke([("human", "Hello")]).text.strip()


def test_training_resumes_from_its_last_checkpoint(dataset, tmp_path):
    train(TrainArgs(model="embedded", dataset=dataset, out=tmp_path, max_steps=2, merge=False, sft={"max_length": 256}))
    metrics = train(
        TrainArgs(
            model="embedded",
            dataset=dataset,
            out=tmp_path,
            max_steps=4,
            merge=False,
            resume=True,
            sft={"max_length": 256},
        )
    )
    # Steps 1-2 came from the checkpoint; only 3-4 ran now.
    assert [step for step, _ in metrics["train_loss"]][-2:] == [3, 4]
    assert metrics["steps"] == 4


def test_two_iterations_of_the_loop_from_the_command_line(tmp_path):
    """Self-play, export, train model k into model k+1, held-out play by each; then a resumed re-run."""
    import json

    from conftest import SHARED_DATA
    from mentalarena.agents.profiles import builtin_profiles
    from mentalarena.cli import main

    out = tmp_path / "loop"
    profiles = tmp_path / "profiles.json"  # two patients: one to train on, one held out
    profiles.write_text(json.dumps([p.to_patient_psi() for p in builtin_profiles()[:2]]))
    evaluation = (
        ["--eval-tasks", "mmlu", "--eval-limit", "4", "--eval-data", str(SHARED_DATA)]
        if (SHARED_DATA / "mmlu").exists()
        else []
    )
    args = [
        "iterate",
        "--iterations",
        "2",
        "--sessions",
        "1",
        "--max-steps",
        "2",
        "--sft",  # the loop's flow is under test, not what training learns: small steps
        "per_device_train_batch_size=1",
        "--sft",
        "max_length=256",
        "--out",
        str(out),
        "--quiet",
        "--profiles",
        str(profiles),
        "--heldout-ratio",
        "0.5",
        "--inquiry-turns",
        "1",
        "--max-redirections",
        "0",
        "--treatment-tries",
        "1",
        "--medication-tries",
        "1",
        "--max-new-tokens",
        "12",
        "--parse-retries",
        "0",
        "--no-format-check",  # the unconstrained replay is held-out logic, tested on the scripted model
        # The scripted model plays the self-play, so every iteration has the same safe sessions to
        # train on: a 12-token medication answer of the embedded model may name a dose with no room
        # for a caveat, and a session flagged unsafe is not trained on. The embedded model still
        # trains, and it and each trained model play the held-out patient.
        "--teacher-model",
        "scripted",
        *evaluation,
    ]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    history = report["iterations"]
    assert [m["iteration"] for m in history] == [0, 1]
    assert history[1]["model"] == history[0]["next_model"] == str(out / "iter-0" / "model" / "merged")
    assert all(m["selfplay_model"] == "scripted" and m["sessions_done"] == 1 for m in history)
    if evaluation:
        assert all(0.0 <= m["qa_mmlu"] <= 1.0 for m in history)
    assert len(report["training_patients"]) == len(report["heldout_patients"]) == 1
    assert list(report["heldout"]["models"]) == ["base", "iteration 1", "iteration 2"]
    assert (
        report["heldout"]["models"]["base"]["sessions_failed"]["n"] > 0
    )  # the embedded model played the held-out patient
    text = (out / "report.md").read_text()
    assert "| iteration |" in text and "Held-out patients" in text and (out / "final_train_loss.png").exists()
    # Re-running the same command resumes: every step's output is complete, nothing is redone.
    stamps = {p: p.stat().st_mtime for p in out.rglob("metrics.json") if "model" in p.parts}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime for p in out.rglob("metrics.json") if "model" in p.parts}
