"""The README and docs stay true to the CLI: every `reconciler COMMAND [--flag]` they show exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from reconciler.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_COMMAND = re.compile(r"(?:\.venv/bin/)?\breconciler ((?:[a-z][a-z-]+)(?: [a-z][a-z-]+)?)((?: [^\n`|#]*)?)")


def _subcommands(command: Any) -> dict[str, Any]:
    """The commands of a group (typer's click command tree); none for a plain command."""
    return dict(getattr(command, "commands", {}))


def _flags(command: Any) -> set[str]:
    return {option for param in command.params for option in (*param.opts, *param.secondary_opts)}


def test_every_documented_command_and_flag_exists() -> None:
    top = _subcommands(typer.main.get_command(app))
    seen = 0
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            for match in _COMMAND.finditer(line):
                words = match.group(1).split()
                if words[0] not in top:
                    continue  # prose such as "reconciler is a GitOps daemon"
                command = top[words[0]]
                nested = _subcommands(command)
                if nested and len(words) > 1:
                    assert words[1] in nested, f"{doc.name}: `reconciler {match.group(1)}` is not a command"
                    command = nested[words[1]]
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2)):
                    assert flag in _flags(command), f"{doc.name}: `reconciler {match.group(1)}` has no {flag}"
                seen += 1
    assert seen >= 15  # the docs really were read


def test_the_introspection_sees_the_whole_tree() -> None:
    """The walk above would pass vacuously on an empty tree: it sees groups, commands and flags."""
    top = _subcommands(typer.main.get_command(app))
    assert {"run", "status", "render", "diff", "sync", "promote", "approve", "dev-cluster"} <= set(top)
    assert {"up", "down", "build", "status", "kubeconfig"} <= set(_subcommands(top["dev-cluster"]))
    assert {"--kubeconfig", "--no-prune", "-o", "--output", "--log-level"} <= _flags(top["sync"])
