"""The command line through typer's CliRunner: version, completion, output formats, option validation and
the errors a person can act on, against a tiny fake daemon (an HTTP server on loopback in this process).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner, Result

from reconciler import __version__
from reconciler.cli import app
from reconciler.console import SyncProgress
from reconciler.promotion import sshsig
from reconciler.promotion.signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    read_message,
    signature,
)

ENVIRONMENTS = [
    {
        "name": "tams-staging",
        "cluster": "staging-eu",
        "owner": "reconciler-7d9f-2",
        "revision": "580e5467ffc7d1e2a3b4c5d6e7f8091a2b3c4d5e",
        "sync": "Synced",
        "health": "Healthy",
        "condition": "Ready",
        "message": "Ready: applied [bold]580e546[/bold]: 9 created",
        "conditions": [{"type": "Ready", "status": "True"}],
    },
    {
        "name": "tams-production",
        "revision": None,
        "sync": "OutOfSync",
        "health": "Degraded",
        "condition": "Stalled",
        "reason": "RenderFailed",
        "gitStale": True,
    },
]
PROMOTION = {
    "id": "tams-4f2a",
    "pipeline": "tams",
    "type": "Promotion",
    "from": "tams-staging",
    "to": "tams-production",
    "revision": "580e5467ffc7d1e2a3b4c5d6e7f8091a2b3c4d5e",
    "phase": "Pending",
    "message": "waiting for approvals",
    "approvalSummary": "0/2",
    "approvals": [],
    "images": [{"name": "registry.invalid/api", "newTag": "2"}],
}


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeDaemon:
    """Answers ``routes[(METHOD, PATH)]`` = (status, JSON or raw bytes); records every call."""

    url: str = ""
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)


@pytest.fixture
def daemon() -> Iterator[FakeDaemon]:
    fake = FakeDaemon()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.calls.append(Call(self.command, self.path, dict(self.headers.items()), body))
            status, payload = fake.routes.get((self.command, self.path), (404, {"error": "no route"}))
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.routes[("GET", "/api/v1/environments")] = (200, {"environments": ENVIRONMENTS})
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL where nothing listens: the port stays bound (not listening) for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, input=stdin, prog_name="reconciler")


# -- version and completion ------------------------------------------------------------------------
def test_version_command_and_flag_print_the_package_version() -> None:
    result = invoke("version")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"reconciler {__version__}"
    assert invoke("--version").stdout == f"reconciler {__version__}\n"
    data = json.loads(invoke("version", "-o", "json").stdout)
    assert data["reconciler"] == __version__
    assert {"python", "kustomize", "kubernetes"} <= set(data)


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _reconciler_completion reconciler"),
        ("zsh", "compdef _reconciler_completion reconciler"),
        ("fish", "complete --command reconciler"),
    ],
)
def test_completion_scripts_are_generated_for_each_shell(
    monkeypatch: pytest.MonkeyPatch, shell: str, marker: str
) -> None:
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell explicitly
    result = invoke("--show-completion", shell)
    assert result.exit_code == 0, result.output
    assert marker in result.stdout
    assert "_RECONCILER_COMPLETE" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("reconciler pro", ["promote", "promotions"]),
        ("reconciler dev-cluster st", ["status"]),
        ("reconciler status -o ", ["table", "json", "yaml"]),
        ("reconciler sync env --log-level ", ["debug", "info", "warning", "error"]),
    ],
)
def test_completion_completes_commands_and_option_values(words: str, expected: list[str]) -> None:
    """What the generated script asks the program (bash's protocol) gets commands and choices back."""
    env = {
        "_RECONCILER_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split())),
    }
    if not words.endswith(" "):
        env["COMP_CWORD"] = str(len(words.split()) - 1)
    result = invoke(env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == expected


# -- status against a daemon ----------------------------------------------------------------------
def test_status_json_is_the_daemons_list_unchanged(daemon: FakeDaemon) -> None:
    result = invoke("status", "--server", daemon.url, "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ENVIRONMENTS


def test_status_yaml_carries_the_same_data(daemon: FakeDaemon) -> None:
    result = invoke("status", "--server", daemon.url, "--output", "yaml")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == ENVIRONMENTS


def test_status_table_has_one_plain_row_per_environment(daemon: FakeDaemon) -> None:
    """Rows start with the name (scripts and tests grep them), revisions are short, nothing is wrapped,
    and text from the daemon is printed as is (never read as rich markup)."""
    result = invoke("status", "--server", daemon.url)
    assert result.exit_code == 0, result.output
    header, staging, production = result.stdout.splitlines()
    assert header.split() == [
        "ENVIRONMENT",
        "CLUSTER",
        "OWNER",
        "REVISION",
        "SYNC",
        "HEALTH",
        "CONDITION",
        "MESSAGE",
    ]
    assert staging.split()[:7] == [
        "tams-staging",
        "staging-eu",
        "reconciler-7d9f-2",
        "580e5467ffc7",
        "Synced",
        "Healthy",
        "Ready",
    ]
    assert staging.endswith("Ready: applied [bold]580e546[/bold]: 9 created")
    # an older daemon's answer without a cluster shows "-"; no owner without sharding
    assert production.split()[:7] == ["tams-production", "-", "-", "-", "OutOfSync", "Degraded", "Stalled"]
    assert production.endswith("[git stale] RenderFailed")
    assert "\x1b[" not in result.stdout  # no colour when not on a terminal


def test_status_reads_the_server_from_reconciler_server(daemon: FakeDaemon) -> None:
    result = invoke("status", "-o", "json", env={"RECONCILER_SERVER": daemon.url})
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in json.loads(result.stdout)] == ["tams-staging", "tams-production"]
    assert [c.path for c in daemon.calls] == ["/api/v1/environments"]


def test_status_without_a_daemon_says_what_to_do(refused_url: str) -> None:
    result = invoke("status", "--server", refused_url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"error: cannot reach the daemon at {refused_url}: is it running? set --server or RECONCILER_SERVER"
    )
    assert "Traceback" not in result.output


def test_status_of_something_that_is_not_a_daemon_is_an_error(daemon: FakeDaemon) -> None:
    daemon.routes[("GET", "/api/v1/environments")] = (200, b"<html>hello</html>")
    result = invoke("status", "--server", daemon.url)
    assert result.exit_code == 2
    assert "not a reconciler daemon's answer" in result.stderr
    daemon.routes[("GET", "/api/v1/environments")] = (503, {"error": "starting"})
    result = invoke("status", "--server", daemon.url)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: GET {daemon.url}/api/v1/environments: 503")


# -- option validation ----------------------------------------------------------------------------
def test_log_level_accepts_the_four_levels_in_any_case(tmp_path: Path) -> None:
    """The level is checked before the command runs; a valid one lets it run (and fail on the path)."""
    for level in ("debug", "INFO", "Warning", "error"):
        result = invoke("render", str(tmp_path / "missing"), "--log-level", level)
        assert result.exit_code == 2
        assert "is not a directory" in result.stderr, result.output


def test_log_level_refuses_anything_else(tmp_path: Path) -> None:
    result = invoke("sync", str(tmp_path), "--log-level", "verbose")
    assert result.exit_code == 2
    assert "--log-level" in result.stderr
    assert "verbose" in result.stderr
    assert "is not a directory" not in result.stderr


def test_output_format_is_validated_and_text_still_means_table(daemon: FakeDaemon) -> None:
    bad = invoke("status", "--server", daemon.url, "-o", "xml")
    assert bad.exit_code == 2
    assert "'xml' is not one of table, json, yaml" in bad.stderr
    old_name = invoke("status", "--server", daemon.url, "-o", "text")
    assert old_name.exit_code == 0
    assert old_name.stdout == invoke("status", "--server", daemon.url).stdout


# -- dev-cluster status ---------------------------------------------------------------------------
def test_dev_cluster_status_in_every_format_with_no_clusters(tmp_path: Path) -> None:
    env = {"RECONCILER_CACHE_DIR": str(tmp_path)}
    assert json.loads(invoke("dev-cluster", "status", "-o", "json", env=env).stdout) == []
    assert yaml.safe_load(invoke("dev-cluster", "status", "-o", "yaml", env=env).stdout) == []
    table = invoke("dev-cluster", "status", env=env)
    assert table.exit_code == 0
    assert table.stdout == "no local clusters; start one with `reconciler dev-cluster up`\n"


def test_dev_cluster_kubeconfig_of_an_unknown_cluster_exits_1(tmp_path: Path) -> None:
    result = invoke(
        "dev-cluster", "kubeconfig", "--name", "nope", env={"RECONCILER_CACHE_DIR": str(tmp_path)}
    )
    assert result.exit_code == 1
    assert "no cluster named 'nope'" in result.stderr


# -- promotions -----------------------------------------------------------------------------------
@pytest.fixture
def ssh_key(tmp_path: Path) -> tuple[Path, str]:
    """An approver's ed25519 key: the private key file and the public key line."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "id_ed25519"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return path, public.decode()


def test_promote_signs_the_request_with_the_ssh_key_and_prints_json(
    daemon: FakeDaemon, ssh_key: tuple[Path, str]
) -> None:
    key, public = ssh_key
    daemon.routes[("POST", "/api/v1/promotions")] = (201, PROMOTION)
    result = invoke(
        "promote", "tams-staging", "tams-production", "--as", "alice@example.com", "--key", str(key),
        "--server", daemon.url, "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == PROMOTION
    (call,) = daemon.calls
    body = json.loads(call.body)
    assert (body["action"], body["identity"], body["from"], body["to"]) == (
        "request", "alice@example.com", "tams-staging", "tams-production",
    )  # fmt: skip
    assert call.headers[KEY_HEADER] == "alice@example.com"
    given = call.headers[SIGNATURE_HEADER]
    assert given.startswith("sshsig=")
    sshsig.verify(sshsig.parse(given.removeprefix("sshsig=")), call.body, [public])


def test_promotions_reads_are_signed_by_an_integration_and_print_yaml(
    daemon: FakeDaemon, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-random-integration-secret\n")
    daemon.routes[("GET", "/api/v1/promotions")] = (200, {"promotions": [PROMOTION]})
    result = invoke(
        "promotions", "--as", "ci", "--secret-file", str(secret), "--key-id", "ci-bot", "-o", "yaml",
        env={"RECONCILER_SERVER": daemon.url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == [PROMOTION]
    (call,) = daemon.calls
    timestamp = call.headers[TIMESTAMP_HEADER]
    assert abs(int(timestamp) - time.time()) < 300
    assert call.headers[KEY_HEADER] == "ci-bot"
    expected = signature(
        "a-long-random-integration-secret", read_message("GET", "/api/v1/promotions", timestamp)
    )
    assert call.headers[SIGNATURE_HEADER] == expected


def test_promotions_table_lists_one_row_per_promotion(daemon: FakeDaemon, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-random-integration-secret\n")
    daemon.routes[("GET", "/api/v1/promotions")] = (200, {"promotions": [PROMOTION]})
    result = invoke("promotions", "--as", "ci", "--secret-file", str(secret), "--server", daemon.url)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:6] == ["ID", "FROM", "TO", "REVISION", "APPROVALS", "PHASE"]
    assert row.split()[:6] == [
        "tams-4f2a",
        "tams-staging",
        "tams-production",
        "580e5467ffc7",
        "0/2",
        "Pending",
    ]


def test_approve_by_pipeline_asks_first_and_refuses_without_a_terminal(
    daemon: FakeDaemon, ssh_key: tuple[Path, str]
) -> None:
    key, _ = ssh_key
    daemon.routes[("GET", "/api/v1/promotions")] = (200, {"promotions": [PROMOTION]})
    args = (
        "approve",
        "--pipeline",
        "tams",
        "--as",
        "bob@example.com",
        "--key",
        str(key),
        "--server",
        daemon.url,
    )
    result = invoke(*args, stdin="y\n")
    assert result.exit_code == 2
    assert "promotion tams-4f2a: tams-staging -> tams-production" in result.stdout  # shown first
    assert "not a terminal: pass --yes to approve without being asked" in result.stderr
    assert [c.method for c in daemon.calls] == ["GET"]  # nothing was sent


def test_approve_yes_sends_an_approval_bound_to_the_revision(
    daemon: FakeDaemon, ssh_key: tuple[Path, str]
) -> None:
    key, public = ssh_key
    daemon.routes[("GET", "/api/v1/promotions")] = (200, {"promotions": [PROMOTION]})
    approved = {**PROMOTION, "approvals": [{"identity": "bob@example.com"}], "approvalSummary": "1/2"}
    daemon.routes[("POST", "/api/v1/promotions/tams-4f2a/approvals")] = (200, approved)
    result = invoke(
        "approve", "--pipeline", "tams", "--as", "bob@example.com", "--key", str(key), "--yes",
        "--comment", "looks good", "--server", daemon.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "approvals: 1/2  bob@example.com" in result.stdout
    post = daemon.calls[-1]
    body = json.loads(post.body)
    assert (body["action"], body["promotion"], body["revision"], body["comment"]) == (
        "approve", "tams-4f2a", PROMOTION["revision"], "looks good",
    )  # fmt: skip
    sshsig.verify(sshsig.parse(post.headers[SIGNATURE_HEADER].removeprefix("sshsig=")), post.body, [public])


def test_reject_of_a_pipeline_with_two_open_promotions_names_them(daemon: FakeDaemon, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-random-integration-secret\n")
    other = {**PROMOTION, "id": "tams-9c1d", "phase": "Approved"}
    daemon.routes[("GET", "/api/v1/promotions")] = (200, {"promotions": [PROMOTION, other]})
    result = invoke("reject", "--pipeline", "tams", "--as", "ci", "--secret-file", str(secret), "--yes",
                    "--server", daemon.url)  # fmt: skip
    assert result.exit_code == 2
    assert "pipeline tams has 2 open promotions (tams-4f2a, tams-9c1d): name one by id" in result.stderr


def test_promotion_commands_without_a_daemon_say_what_to_do(refused_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a-long-random-integration-secret\n")
    result = invoke("rollback", "tams-production", "--as", "ci", "--secret-file", str(secret),
                    "--server", refused_url)  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot reach the daemon at {refused_url}: is it running?")


def test_a_promotion_command_without_a_key_says_how_to_sign(daemon: FakeDaemon) -> None:
    result = invoke("promotions", "--as", "alice@example.com", "--server", daemon.url)
    assert result.exit_code == 2
    assert "sign with --key (your SSH key) or, for an integration, --secret-file" in result.stderr
    assert daemon.calls == []


# -- sync progress --------------------------------------------------------------------------------
STEPS = [
    "rendered 12 objects",
    "validated 12 objects by server-side dry-run; 10 to apply, 2 unchanged",
    "stage cluster-definitions: applied 1 objects",
    "stage cluster-definitions: 1 objects healthy",
    "stage workloads: applied 9 objects",
    "Ready: applied revision (working tree): 10 created",
]


def test_sync_progress_off_a_terminal_is_one_plain_line_per_step() -> None:
    stream = io.StringIO()
    with SyncProgress(stream) as progress:
        for step in STEPS:
            progress(step)
    assert progress.task is None
    assert stream.getvalue() == "".join(step + "\n" for step in STEPS)


def test_sync_progress_on_a_terminal_counts_objects_and_shows_health_waits() -> None:
    stream = io.StringIO()
    seen: list[tuple[float, float | None, str] | None] = []
    with SyncProgress(stream, live=True) as progress:
        for step in STEPS:
            progress(step)
            seen.append(progress.task)
    assert seen[0] == (0, None, "planning 12 objects")
    assert seen[1] == (0, 10, "applying")
    assert seen[2] == (1, 10, "stage cluster-definitions: waiting for health")
    assert seen[3] == (1, 10, "stage cluster-definitions: healthy")
    assert seen[4] == (10, 10, "stage workloads: waiting for health")
    for step in STEPS:  # every step is still printed, above the live line
        assert step in stream.getvalue()
