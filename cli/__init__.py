"""`mentalarena`: the command line, composed from each layer's commands.

The layers only point down (agents -> graphs -> training -> benchmarks; `.importlinter`), so the
one place that sees them all is here: each adds its commands with ``make_parser(subparsers)``, and
the evaluation layer's MCQ scorer is handed to the training loop's `iterate --eval-tasks`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from mentalarena.agents.models import ModelSpecError
from mentalarena.agents.profiles import ProfileError
from mentalarena.benchmarks import cli as benchmarks_cli
from mentalarena.benchmarks.qa import mcq_evaluator
from mentalarena.graphs import cli as graphs_cli
from mentalarena.training import cli as training_cli

__all__ = ["ConfigError", "apply_config", "main", "make_parser"]

CONFIG_HELP = (
    "YAML file of this command's options, keyed by their names (max_steps or max-steps); "
    "options given on the command line win over it"
)


class ConfigError(ValueError):
    """A --config file that cannot be applied; names the file, the field and the reason."""


def make_parser() -> argparse.ArgumentParser:
    """The whole command line: run and graph, export, train and iterate, eval."""
    parser = argparse.ArgumentParser(
        prog="mentalarena",
        description="MentalArena: self-play of patient and therapist models (a research tool, not a medical device).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    graphs_cli.make_parser(commands)
    training_cli.make_parser(commands, mcq_evaluator=mcq_evaluator)
    benchmarks_cli.make_parser(commands)
    for command in leaf_parsers(parser):
        command.add_argument("--config", default=None, metavar="FILE.yaml", help=CONFIG_HELP)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of every runnable command under ``parser`` (``run``, ``eval qa``, ...)."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        return [parser]
    return [leaf for choice in subcommands[0].choices.values() for leaf in leaf_parsers(choice)]


def command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the command ``argv`` names (its first words that are subcommands)."""
    words = iter(argv)
    while subcommands := [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]:
        choices = subcommands[0].choices
        name = next((word for word in words if word in choices), None)
        if name is None:
            return parser
        parser = choices[name]
    return parser


def config_path(argv: list[str]) -> str | None:
    """The value of ``--config`` in ``argv``, if any."""
    for index, word in enumerate(argv):
        if word == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--config="):
            return word.partition("=")[2]
    return None


def apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the options in the YAML file ``path`` the defaults of the command ``parser``, each
    checked as its flag would be; raises :class:`ConfigError` naming the file and the field."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected option names and their values, found a {type(data).__name__}")
    options = [action for action in parser._actions if action.dest not in ("help", "config")]
    by_dest = {action.dest: action for action in options}
    # A switch is also known by its flag: 'quiet: true' sets what --quiet sets (progress False).
    by_flag = {
        flag.lstrip("-").replace("-", "_"): action
        for action in options
        if isinstance(action, argparse._StoreConstAction)
        for flag in action.option_strings
    }
    defaults = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        action = by_dest.get(name) or by_flag.get(name)
        if action is None:
            raise ConfigError(f"{path}: field {key!r}: not an option of `{parser.prog}` (see its --help)")
        try:
            if name in by_flag and name != action.dest:
                if not isinstance(value, bool):
                    raise ValueError(f"{value!r} is not true or false")
                value = action.const if value else action.default
            defaults[action.dest] = _option_value(action, value)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: field {key!r}: {exc}") from None
        action.required = False  # given here: the command line need not repeat it
        if action.nargs == "+":
            action.nargs = "*"
    parser.set_defaults(**defaults)


def _option_value(action: argparse.Action, value: object) -> object:
    """``value`` from a config file, converted and checked as the option's flag would be."""
    convert = action.type
    if value is None or not callable(convert):
        converted = value
    elif isinstance(value, dict):  # a FIELD=VALUE option given as a mapping ('sft: {max_length: 256}')
        converted = [convert(f"{key}={item}") for key, item in value.items()]
    elif action.nargs in ("+", "*"):
        converted = [convert(str(item)) for item in (value if isinstance(value, list) else [value])]
    else:  # a list for a comma-separated option ('tasks: [medqa, mmlu]') reads as its flag would
        converted = convert(",".join(map(str, value)) if isinstance(value, list) else str(value))
    if action.choices is not None and converted is not None and converted not in action.choices:
        raise ValueError(f"{converted!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (2 for a usage error or bad input, printed to stderr)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    try:
        if path := config_path(argv):
            apply_config(command_parser(parser, argv), path)
    except ConfigError as exc:
        print(f"error: --config: {exc}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (2, already printed) and --help (0): returned like any outcome
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (ProfileError, ModelSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
