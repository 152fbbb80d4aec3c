"""Every option and positional of every `catdiff` command has a help text (`catdiff <cmd> --help`
documents all of it), and every sampler option field (the source of the sampler flags) has one."""

import argparse
import dataclasses

from catdiff import registry
from catdiff.cli import build_parser
from catdiff.samplers.base import SampleOptions


def _commands(parser: argparse.ArgumentParser, prefix: str = "catdiff"):
    """(command path, parser) of the parser and, recursively, of each of its subcommands."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue  # argparse's own -h; a subcommand's help is checked on its `choices_actions`
        if action.help is argparse.SUPPRESS:
            continue  # deliberately hidden
        if not (action.help or "").strip():
            out.append("/".join(action.option_strings) or action.dest)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out += [f"{a.dest} (command)" for a in action._choices_actions if not (a.help or "").strip()]
    return out


def test_every_cli_option_has_help():
    offenders = {path: bad for path, p in _commands(build_parser()) if (bad := _undocumented(p))}
    report = "\n".join(f"  {path}: {', '.join(bad)}" for path, bad in offenders.items())
    print("options without help:\n" + (report or "  none"))
    assert not offenders, "options without a help text:\n" + report


def test_every_sampler_option_field_has_help():
    offenders = []
    for family in registry.SAMPLERS:
        for obj in vars(registry.sampler_family(family)).values():
            if isinstance(obj, type) and issubclass(obj, SampleOptions):
                offenders += [f"{obj.__module__}.{obj.__qualname__}.{f.name}" for f in dataclasses.fields(obj)
                              if not str(f.metadata.get("help", "")).strip()]
    assert not offenders, sorted(set(offenders))
