"""The README and docs stay true to the CLI: every `reconciler COMMAND [--flag]` they show exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from reconciler.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_COMMAND = re.compile(r"(?:\.venv/bin/)?\breconciler ((?:[a-z][a-z-]+)(?: [a-z][a-z-]+)?)((?: [^\n`|#]*)?)")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_documented_command_and_flag_exists() -> None:
    top = _subcommands(build_parser())
    seen = 0
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            for match in _COMMAND.finditer(line):
                words = match.group(1).split()
                if words[0] not in top:
                    continue  # prose such as "reconciler is a GitOps daemon"
                parser = top[words[0]]
                nested = _subcommands(parser)
                if nested and len(words) > 1:
                    assert words[1] in nested, f"{doc.name}: `reconciler {match.group(1)}` is not a command"
                    parser = nested[words[1]]
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2)):
                    assert flag in _flags(parser), f"{doc.name}: `reconciler {match.group(1)}` has no {flag}"
                seen += 1
    assert seen >= 15  # the docs really were read
