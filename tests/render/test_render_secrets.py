"""Secret values never reach render errors: kustomize prints malformed secretGenerator literals and
env-file lines verbatim, and RenderError messages go to the CLI, logs, the status API, Events and
Environment objects. Real kustomize where kustomize speaks; the scrubbing itself as plain functions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.render import Renderer, RenderError, RenderOptions
from reconciler.render.kustomize import scrub
from reconciler.render.restrictions import LoadPolicy, check

CANARY = "CANARY-7d41c9e2b5"


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text).lstrip())


def byte_list(text: str) -> str:
    """Go's %v of the bytes of ``text`` without brackets, as kustomize prints invalid env lines."""
    return " ".join(str(byte) for byte in text.encode())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """base (a ConfigMap) and a staging overlay of it."""
    root = tmp_path / "repo"
    write(root / "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(root / "base/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {k: v}\n")
    write(root / "staging/kustomization.yaml", "resources: [../base]\n")
    return root


@pytest.fixture
def options(toolchain: Toolchain) -> RenderOptions:
    return RenderOptions(kustomize=toolchain.kustomize, timeout=30)


async def render_error(repo: Path, options: RenderOptions) -> str:
    with pytest.raises(RenderError) as error:
        await Renderer().render(repo, repo / "staging", options)
    return str(error.value)


async def test_malformed_literal_is_not_shown(repo: Path, options: RenderOptions) -> None:
    """A literal without '=' (kustomize prints it twice) is redacted; the message names the file and
    the generator and says what is wrong."""
    write(
        repo / "base/kustomization.yaml",
        f"""
        resources: [cm.yaml]
        secretGenerator:
        - name: db
          literals: ["USER=admin-{CANARY}-user", "PASSWORD-{CANARY}-password"]
        """,
    )
    message = await render_error(repo, options)
    assert CANARY not in message
    assert "render of staging failed (kustomize exit 1)" in message
    assert "secretGenerator 'db' in base/kustomization.yaml could not be generated" in message
    assert "a literal is not of the form KEY=VALUE" in message


async def test_malformed_env_line_is_not_shown(repo: Path, options: RenderOptions) -> None:
    """An env-file line that is not UTF-8 (kustomize prints it as text and as a list of byte values)
    is redacted in both forms; the message names the file and the generator."""
    line = f"PASSWORD={CANARY}"
    write(repo / "staging/db.env", b"USER=admin\n" + line.encode() + b"\xff-tail\n")
    write(
        repo / "staging/kustomization.yaml",
        """
        resources: [../base]
        secretGenerator:
        - name: db-credentials
          envs: [db.env]
        """,
    )
    message = await render_error(repo, options)
    assert CANARY not in message
    assert byte_list(CANARY) not in message
    assert "secretGenerator 'db-credentials' in staging/kustomization.yaml could not be generated" in message
    assert "not valid UTF-8" in message


async def test_malformed_literal_of_a_builtin_secret_generator_is_not_shown(
    repo: Path, options: RenderOptions
) -> None:
    """A SecretGenerator builtin plugin configuration with a malformed literal is redacted the same way."""
    write(
        repo / "staging/secret.yaml",
        f"""
        apiVersion: builtin
        kind: SecretGenerator
        metadata: {{name: api}}
        literals: ["TOKEN-{CANARY}"]
        """,
    )
    write(repo / "staging/kustomization.yaml", "resources: [../base]\ngenerators: [secret.yaml]\n")
    message = await render_error(repo, options)
    assert CANARY not in message
    assert "secretGenerator 'api' in staging/kustomization.yaml could not be generated" in message


async def test_other_failures_keep_kustomizes_reason(repo: Path, options: RenderOptions) -> None:
    """With a valid secretGenerator in the graph, an unrelated failure still reports kustomize's
    reason, and still without the secret's values."""
    write(repo / "staging/patch.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: missing}\n")
    write(
        repo / "staging/kustomization.yaml",
        f"""
        resources: [../base]
        secretGenerator:
        - name: db
          literals: ["PASSWORD={CANARY}"]
        patches: [{{path: patch.yaml}}]
        """,
    )
    message = await render_error(repo, options)
    assert CANARY not in message
    assert "secretGenerator" not in message
    assert "render of staging failed (kustomize exit 1)" in message
    assert "missing" in message


async def test_valid_secret_generator_renders(repo: Path, options: RenderOptions) -> None:
    """Scrubbing only concerns failures: a valid secretGenerator renders its values as usual."""
    write(
        repo / "staging/kustomization.yaml",
        f"""
        resources: [../base]
        secretGenerator:
        - name: db
          literals: ["PASSWORD={CANARY}"]
        """,
    )
    result = await Renderer().render(repo, repo / "staging", options)
    assert {m.key.kind for m in result.manifests} == {"ConfigMap", "Secret"}


def test_walker_collects_secret_strings_and_never_shows_them(repo: Path) -> None:
    """The walk collects each secretGenerator's literals, env lines and secret file lines (with their
    values and encodings) and keeps them out of reprs; a refusal after them does not show them."""
    write(repo / "staging/db.env", f"PASSWORD={CANARY}-env\n")
    write(repo / "staging/key.pem", f"-----BEGIN KEY-----\n{CANARY}-file\n-----END KEY-----\n")
    write(
        repo / "staging/kustomization.yaml",
        f"""
        resources: [../base]
        secretGenerator:
        - name: db
          literals: ["PASSWORD={CANARY}-literal"]
          envs: [db.env]
          files: [key.pem]
        """,
    )
    inputs = check(repo, repo / "staging", LoadPolicy())
    assert {f"{CANARY}-literal", f"{CANARY}-env", f"{CANARY}-file"} <= inputs.sensitive
    assert CANARY not in repr(inputs)
    assert CANARY not in repr(inputs.secrets)
    assert [(source.file, source.name) for source in inputs.secrets] == [("staging/kustomization.yaml", "db")]
    (repo / "staging" / f"{CANARY}-literal").mkdir()
    write(
        repo / "staging/kustomization.yaml",
        f"""
        secretGenerator:
        - name: db
          literals: ["PASSWORD={CANARY}-literal"]
        resources: ["{CANARY}-literal/../../../outside"]
        """,
    )
    with pytest.raises(ValueError, match="points outside the repository") as error:
        check(repo, repo / "staging", LoadPolicy())
    assert CANARY not in str(error.value)


@pytest.mark.parametrize(
    ("text", "sensitive", "expected"),
    [
        (
            "literal sources [A=s3cret-value B]: invalid literal source B, expected key=value",
            {"A=s3cret-value", "s3cret-value", "B"},
            "literal sources [[redacted] [redacted]]: invalid literal source [redacted], expected key=value",
        ),
        (
            "trouble configuring builtin SecretGenerator with config: `\nliterals:\n- X=y\n`: bad",
            set(),
            "trouble configuring builtin SecretGenerator with config: [redacted]: bad",
        ),
        ("line [80 65 83 83 255] has invalid utf8 bytes", set(), "line [redacted] has invalid utf8 bytes"),
        ("a Bad thing: b", {"b"}, "a Bad thing: [redacted]"),
    ],
)
def test_scrub_replaces_values_dumps_and_byte_lists(text: str, sensitive: set[str], expected: str) -> None:
    """``scrub`` redacts sensitive strings (short ones only where they stand alone), builtin plugin
    configuration dumps and Go byte listings."""
    assert scrub(text, sensitive) == expected
