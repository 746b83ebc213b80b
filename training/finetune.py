"""Supervised fine-tuning on exported self-play data: TRL SFTTrainer with a LoRA adapter (PEFT).

In the spirit of TRL's example scripts: a dataclass of arguments, one function per step.
Loss is on assistant turns only, which needs a chat template with ``{% generation %}`` markers;
SmolLM2's own template has none, so ChatML with the markers is installed (it renders the same
text). Checkpoints go to ``<out>/checkpoints``; ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mentalarena.agents.models import (
    ModelSpecError,
    cpu_computes_bfloat16,
    local_model_folder,
)

if TYPE_CHECKING:
    from trl import SFTTrainer

# ChatML as SmolLM2 renders it, with the assistant's content marked for assistant-only loss.
CHATML_WITH_GENERATION = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{%- else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)

PRESET_FOLDER = Path(__file__).with_name("presets")
PRESETS = tuple(sorted(path.stem for path in PRESET_FOLDER.glob("*.yaml")))


class PresetError(ValueError):
    """A preset or override that names no SFTConfig or LoraConfig field, or a preset file that cannot be read."""


def load_preset(preset: str) -> dict[str, dict[str, Any]]:
    """``{"sft": {...}, "lora": {...}}`` of a shipped preset (by name) or of a YAML file with the same two sections."""
    import yaml

    path = PRESET_FOLDER / f"{preset}.yaml" if preset in PRESETS else Path(preset)
    if not path.is_file():
        raise PresetError(f"preset {preset!r}: neither one of {', '.join(PRESETS)} nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PresetError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"sft", "lora"}:
        raise PresetError(f"{path}: expected the sections 'sft' (SFTConfig fields) and 'lora' (LoraConfig fields)")
    return {section: dict(data.get(section) or {}) for section in ("sft", "lora")}


def check_fields(section: str, values: dict[str, Any], where: str) -> None:
    """Raise :class:`PresetError` unless every key of ``values`` is a field of SFTConfig ('sft') or
    LoraConfig ('lora')."""
    import dataclasses

    from peft import LoraConfig
    from trl import SFTConfig

    known = {field.name for field in dataclasses.fields(SFTConfig if section == "sft" else LoraConfig)}
    for key in values:
        if key not in known:
            kind = "TRL's SFTConfig" if section == "sft" else "PEFT's LoraConfig"
            raise PresetError(f"{where}: field {section}.{key}: not a field of {kind}")


def field_value(text: str) -> tuple[str, Any]:
    """argparse type of ``FIELD=VALUE``: the value read as YAML ('2e-4', 'true', '[q_proj, v_proj]')."""
    import argparse

    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads '2e-4' (no dot) as text; a number is meant
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return name.strip(), parsed


# The preset and the fields given over it, shared by `train` and `iterate`.
PRESET_OPTION: dict[str, Any] = {
    "description": f"{' or '.join(PRESETS)} (training/presets/), or a YAML file with 'sft' (SFTConfig) and "
    "'lora' (LoraConfig) sections"
}
SFT_OPTION: dict[str, Any] = {
    "type": field_value,
    "action": "append",
    "metavar": "FIELD=VALUE",
    "flag": "--sft",
    "description": "a TRL SFTConfig field over the preset's, e.g. --sft learning_rate=2e-4 (repeatable)",
}
LORA_OPTION: dict[str, Any] = {
    "type": field_value,
    "action": "append",
    "metavar": "FIELD=VALUE",
    "flag": "--lora",
    "description": "a PEFT LoraConfig field over the preset's, e.g. --lora r=16 (repeatable)",
}


@dataclass
class TrainArgs:
    """What a fine-tuning run trains: the base model, the dataset, the output folder, the preset and its overrides."""

    dataset: Path = field(metadata={"description": "folder written by `mentalarena export`"})
    out: Path = field(metadata={"description": "folder for checkpoints, adapter, merged model, metrics and loss plot"})
    model: str = field(default="embedded", metadata={"description": "'embedded' or a local Hugging Face folder"})
    preset: str = field(default="cpu-small", metadata=PRESET_OPTION)
    max_steps: int = field(default=-1, metadata={"description": "stop after this many steps (overrides epochs)"})
    qlora: bool = field(default=False, metadata={"description": "4-bit base model (needs a CUDA GPU and bitsandbytes)"})
    merge: bool = field(
        default=True,
        metadata={"description": "save only the adapter, not also the merged model the arena's model spec accepts"},
    )
    resume: bool = field(default=False, metadata={"description": "continue from the last checkpoint in --out"})
    seed: int = 0
    sft: dict[str, Any] = field(default_factory=dict, metadata=SFT_OPTION)
    lora: dict[str, Any] = field(default_factory=dict, metadata=LORA_OPTION)

    def hyperparameters(self) -> dict[str, dict[str, Any]]:
        """The preset's SFTConfig and LoraConfig fields with this run's own over them; a field that
        neither class has is a :class:`PresetError`."""
        preset = load_preset(self.preset)
        merged = {section: {**preset[section], **getattr(self, section)} for section in ("sft", "lora")}
        for section, values in merged.items():
            check_fields(section, values, f"preset {self.preset!r}")
        return merged


def base_model_folder(spec: str) -> str:
    """The folder of the model to fine-tune ('embedded' or a local Hugging Face folder); else a ModelSpecError."""
    folder = local_model_folder(spec)
    if folder is not None and (folder / "config.json").exists():
        return str(folder)
    raise ModelSpecError(f"model {spec!r}: fine-tuning needs 'embedded' or a local Hugging Face folder")


def load_tokenizer(folder: str) -> Any:
    """The folder's tokenizer with the ChatML template that marks assistant turns, and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML_WITH_GENERATION
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_datasets(folder: Path) -> tuple[Any, Any | None]:
    """(train, validation or None) from an export folder; a missing or empty train.jsonl is a FileNotFoundError."""
    from datasets import load_dataset

    files = {
        split: str(folder / f"{split}.jsonl")
        for split in ("train", "validation")
        if (folder / f"{split}.jsonl").exists() and (folder / f"{split}.jsonl").stat().st_size
    }
    if "train" not in files:
        raise FileNotFoundError(f"{folder}/train.jsonl: missing or empty; export data first")
    data = load_dataset("json", data_files=files)
    return data["train"], data.get("validation")


def build_trainer(args: TrainArgs) -> SFTTrainer:
    """An SFTTrainer with a LoRA adapter on the base model (4-bit with ``qlora``), set up from the preset."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    hp = args.hyperparameters()
    folder = base_model_folder(args.model)
    tokenizer = load_tokenizer(folder)
    train, validation = load_datasets(args.dataset)
    model_kwargs: dict[str, Any] = {"dtype": torch.float32}
    if args.qlora:
        if not torch.cuda.is_available():
            raise RuntimeError("qlora: 4-bit training needs a CUDA GPU (bitsandbytes); none is present")
        from transformers import BitsAndBytesConfig

        model_kwargs = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
        }
    model = AutoModelForCausalLM.from_pretrained(folder, **model_kwargs)
    config = SFTConfig(
        **{
            "lr_scheduler_type": "cosine",
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": max(1, args.max_steps // 2) if args.max_steps > 0 else 50,
            "save_total_limit": 2,
            "eval_strategy": "epoch" if validation is not None and args.max_steps <= 0 else "no",
            **hp["sft"],
        },
        output_dir=str(args.out / "checkpoints"),
        assistant_only_loss=True,
        max_steps=args.max_steps,
        report_to="none",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
        # TRL turns bfloat16 autocast on by default; on a CPU that only emulates bfloat16 (AVX2)
        # that made each step many times slower than float32.
        bf16=torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_computes_bfloat16(),
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(**{"target_modules": "all-linear", **hp["lora"]}, task_type="CAUSAL_LM")
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def last_checkpoint(out: Path) -> str | None:
    """The last checkpoint in ``out/checkpoints``, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


MODEL_CARD = """# {name}

Fine-tuned with MentalArena (self-play of a simulated patient and a simulated therapist) from
`{base}` on `{dataset}`: a LoRA adapter{merged}.

**A research artefact, not a medical device.** This model was trained on synthetic dialogues
between language models to build and study models for mental-health diagnosis and treatment. It
is not a clinician, its outputs are not medical advice, and it must not be used as a substitute
for care from a qualified person. Anyone at risk should contact local emergency services or a
crisis line (https://findahelpline.com).
"""


def save_outputs(trainer: Any, args: TrainArgs) -> dict:
    """Save the adapter, and the merged model when asked, each with a model card; returns their paths."""
    adapter = args.out / "adapter"
    folders = [adapter]
    trainer.model.save_pretrained(str(adapter))
    trainer.processing_class.save_pretrained(str(adapter))
    paths = {"adapter": str(adapter)}
    if args.merge:
        merged = args.out / "merged"
        folders.append(merged)
        trainer.model.merge_and_unload().save_pretrained(str(merged))
        trainer.processing_class.save_pretrained(str(merged))
        paths["merged"] = str(merged)
    card = MODEL_CARD.format(
        name=args.out.name, base=args.model, dataset=args.dataset, merged=", and the merged model" if args.merge else ""
    )
    for folder in folders:
        (folder / "README.md").write_text(card, encoding="utf-8")
    return paths


def write_metrics(trainer: SFTTrainer, args: TrainArgs, paths: dict) -> dict:
    """Write ``metrics.json`` (arguments, hyperparameters, losses, paths) and ``loss.png``; returns the metrics."""
    history = trainer.state.log_history
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    metrics = {
        "args": {**asdict(args), "dataset": str(args.dataset), "out": str(args.out)},
        "hyperparameters": args.hyperparameters(),
        "train_loss": losses,
        "eval_loss": evals,
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else None,
        "steps": trainer.state.global_step,
        **paths,
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    plot_series({"train loss": losses, "validation loss": evals}, args.out / "loss.png", xlabel="step", ylabel="loss")
    return metrics


def plot_series(series: dict[str, list], path: Path, xlabel: str, ylabel: str) -> None:
    """One line per labelled list of (x, y) points, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points), marker="o" if len(points) < 20 else None, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if any(series.values()):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(args: TrainArgs) -> dict:
    """Fine-tune, optionally resuming from the last checkpoint, save the outputs, and return the metrics."""
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(args)
    trainer.train(resume_from_checkpoint=last_checkpoint(args.out) if args.resume else None)
    return write_metrics(trainer, args, save_outputs(trainer, args))
