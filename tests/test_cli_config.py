"""`--config FILE.yaml`: any command's options from a file, checked as their flags are; flags win."""

import json
from pathlib import Path

import pytest

from mentalarena.cli import ConfigError, apply_config, command_parser, main, make_parser

SESSION = "model: scripted\ninquiry-turns: 1\ntreatment_tries: 1\nmedication_tries: 1\nquiet: true\n"


def test_a_run_takes_its_options_from_the_file_and_a_flag_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(SESSION + f"sessions: 1\nout: {tmp_path / 'run'}\n")
    assert main(["run", "--config", str(config), "--sessions", "2"]) == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["sessions"] == 2  # the flag
    assert (manifest["settings"]["model"], manifest["settings"]["inquiry_turns"]) == ("scripted", 1)  # the file
    assert len((tmp_path / "run" / "records.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    "text, reason",
    [
        ("sessionz: 2\n", "field 'sessionz': not an option of `mentalarena run`"),
        ("sessions: 0\n", "field 'sessions': 0 must be at least 1"),
        ("budget: tiny\n", "field 'budget': 'tiny' is not one of small, full"),
        ("- sessions\n", "expected option names and their values, found a list"),
        ("sessions: [1\n", "not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_naming_file_and_field(tmp_path, capsys, text, reason):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert f"error: --config: {config}: {reason}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_required_options_and_nested_commands_can_come_from_the_file(tmp_path):
    parser = make_parser()
    config = tmp_path / "train.yaml"
    config.write_text("dataset: data/psi\nout: models/psi\nmax_steps: 5\n")
    argv = ["train", "--config", str(config)]
    apply_config(command_parser(parser, argv), str(config))
    args = parser.parse_args(argv)
    assert (args.dataset, args.out, args.max_steps) == (Path("data/psi"), Path("models/psi"), 5)

    parser = make_parser()
    config.write_text("tasks: [medqa, mmlu]\nlimit: 3\n")
    argv = ["eval", "qa", "--config", str(config)]
    apply_config(command_parser(parser, argv), str(config))
    args = parser.parse_args(argv)
    assert (args.tasks, args.limit, args.eval_kind) == (["medqa", "mmlu"], 3, "qa")


def test_presets_are_sft_and_lora_fields_and_runs_override_them(tmp_path):
    from mentalarena.training.finetune import PRESETS, PresetError, TrainArgs, load_preset

    assert set(PRESETS) == {"cpu-small", "mentalgpt"}
    assert load_preset("mentalgpt")["lora"]["r"] == 64
    args = TrainArgs(model="embedded", dataset=tmp_path, out=tmp_path, sft={"max_length": 256}, lora={"r": 4})
    hyperparameters = args.hyperparameters()
    assert hyperparameters["sft"]["max_length"] == 256 and hyperparameters["sft"]["learning_rate"] == 1e-3
    assert hyperparameters["lora"]["r"] == 4 and hyperparameters["lora"]["target_modules"] == "all-linear"

    with pytest.raises(PresetError, match="field sft.warmup_ratio_typo: not a field of TRL's SFTConfig"):
        TrainArgs(model="embedded", dataset=tmp_path, out=tmp_path, sft={"warmup_ratio_typo": 0.1}).hyperparameters()
    own = tmp_path / "mine.yaml"
    own.write_text("sft:\n  learning_rate: 5.0e-5\nlora:\n  rank: 2\n")
    with pytest.raises(PresetError, match="field lora.rank: not a field of PEFT's LoraConfig"):
        TrainArgs(model="embedded", dataset=tmp_path, out=tmp_path, preset=str(own)).hyperparameters()
    with pytest.raises(PresetError, match="neither one of cpu-small, mentalgpt nor a YAML file"):
        load_preset("gpu-huge")


def test_sft_and_lora_fields_from_flags_and_from_a_config_file(tmp_path):
    parser = make_parser()
    args = parser.parse_args(["train", "--dataset", "d", "--out", "o", "--sft", "learning_rate=2e-4", "--lora", "r=16"])
    assert (dict(args.sft), dict(args.lora)) == ({"learning_rate": 2e-4}, {"r": 16})
    config = tmp_path / "train.yaml"
    config.write_text("dataset: d\nout: o\nsft:\n  max_length: 256\n  num_train_epochs: 2\n")
    argv = ["train", "--config", str(config)]
    apply_config(command_parser(parser := make_parser(), argv), str(config))
    assert dict(parser.parse_args(argv).sft) == {"max_length": 256, "num_train_epochs": 2}


def test_each_command_is_built_from_its_dataclass(tmp_path):
    from mentalarena.benchmarks.judges import JudgeArgs
    from mentalarena.benchmarks.qa import QAArgs
    from mentalarena.graphs.cli import dataclass_from_options
    from mentalarena.training.export import ExportArgs
    from mentalarena.training.finetune import TrainArgs

    parser = make_parser()
    # Given only what is required, a command's options are its dataclass's defaults.
    train = dataclass_from_options(TrainArgs, parser.parse_args(["train", "--dataset", "d", "--out", "o"]))
    assert train == TrainArgs(dataset=Path("d"), out=Path("o"))
    export = dataclass_from_options(ExportArgs, parser.parse_args(["export", "a.jsonl", "b.jsonl", "--out", "o"]))
    assert export == ExportArgs(records=[Path("a.jsonl"), Path("b.jsonl")], out=Path("o"))
    assert dataclass_from_options(QAArgs, parser.parse_args(["eval", "qa"])) == QAArgs()
    # Flags named apart from their field, switches away from the default, checked types.
    args = parser.parse_args(
        ["train", "--dataset", "d", "--out", "o", "--no-merge", "--sft", "max_length=64", "--sft", "seed=3"]
    )
    assert dataclass_from_options(TrainArgs, args).merge is False
    assert dataclass_from_options(TrainArgs, args).sft == {"max_length": 64, "seed": 3}
    args = parser.parse_args(["export", "r.jsonl", "--out", "o", "--format", "records", "--validation-ratio", "0"])
    assert (args.record_format, args.validation_ratio) == ("records", 0.0)
    assert main(["export", "r.jsonl", "--out", str(tmp_path), "--validation-ratio", "1.5"]) == 2
    judge = parser.parse_args(["eval", "judge", "--judge", "scripted", "--models", "a, b", "--quiet"])
    assert dataclass_from_options(JudgeArgs, judge) == JudgeArgs(judge="scripted", models=["a", "b"], progress=False)


def test_a_switch_in_a_config_file_is_known_by_its_flag_too(tmp_path):
    parser = make_parser()
    config = tmp_path / "loop.yaml"
    config.write_text("out: loop\nquiet: true\nno-format-check: true\n")
    argv = ["iterate", "--config", str(config)]
    apply_config(command_parser(parser, argv), str(config))
    args = parser.parse_args(argv)
    assert (args.progress, args.format_check) == (False, False)
    config.write_text("out: loop\nquiet: maybe\n")
    with pytest.raises(ConfigError, match="field 'quiet': 'maybe' is not true or false"):
        apply_config(command_parser(make_parser(), argv), str(config))
