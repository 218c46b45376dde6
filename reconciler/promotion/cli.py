"""Promotion commands of the CLI: ``promote``, ``promotions``, ``approve``, ``reject``, ``rollback``.

They talk to a running daemon's API. Mutating commands sign their body (which carries the identity, a
fresh nonce and the time), so the daemon can check who acts without any session or password:

* a person signs with their own SSH key: ``--key ~/.ssh/id_ed25519`` (a private key file), or
  ``--key ~/.ssh/id_ed25519.pub`` to have the running ssh-agent sign with that key;
* an integration (a bot, CI) signs with its HMAC secret: ``--secret-file FILE --key-id NAME``.

``approve`` shows what is being approved (revision, commits, images) and asks first, unless ``--yes``;
``approve --pipeline NAME`` approves the one open promotion of a pipeline.

This module owns the commands' options (typer, registered by ``register``), the signed HTTP calls and
how a promotion is printed (``-o table|json|yaml``); the signing itself is ``signing`` and ``sshsig``.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler.console import (
    DEFAULT_SERVER,
    CommandError,
    Output,
    Server,
    daemon_unreachable,
    print_data,
    print_table,
)

OPEN_PHASES = ("Pending", "Approved")
PANEL = "Promotions"


class PromotionCommandError(CommandError):
    """A promotion command failed; the message says why (printed as ``error: ...``, exit status 2)."""


@dataclass(frozen=True)
class Caller:
    """Who calls the daemon and how: its URL, the identity acting, and what signs (a key or a secret)."""

    server: str
    identity: str
    key: str = ""
    secret_file: str = ""
    key_id: str = ""


def _call(
    server: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Any:
    url = server.rstrip("/") + path
    request = urllib.request.Request(  # noqa: S310 - the operator's own daemon
        url, data=body, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError):
            reason = ""
        raise PromotionCommandError(f"{method} {url}: {exc.code} {reason or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PromotionCommandError(str(daemon_unreachable(server, exc))) from None
    except ValueError:
        raise PromotionCommandError(f"{method} {url}: the answer is not JSON") from None


def _signature_headers(args: Caller, data: bytes) -> dict[str, str]:
    """``data`` signed with the caller's SSH key (file or agent), or an integration's secret."""
    # imported here: signing brings pydantic models and cryptography, which every other command
    # (``reconciler sync`` among them) would pay for at start-up
    from reconciler.promotion import sshsig  # noqa: PLC0415
    from reconciler.promotion.signing import KEY_HEADER, SIGNATURE_HEADER, signature  # noqa: PLC0415

    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PromotionCommandError(
                f"--secret-file: cannot read {args.secret_file}: {exc.strerror}"
            ) from None
        return {KEY_HEADER: args.key_id or args.identity, SIGNATURE_HEADER: signature(secret, data)}
    if not args.key:
        raise PromotionCommandError("sign with --key (your SSH key) or, for an integration, --secret-file")
    key = Path(args.key).expanduser()
    try:
        if key.suffix == ".pub":  # the public half: the running ssh-agent holds the private key
            armored = sshsig.sign_with_agent(key.read_text(encoding="utf-8").strip(), data)
        else:
            armored = sshsig.sign_with_key(key, data)
    except (OSError, sshsig.SSHSigError) as exc:
        raise PromotionCommandError(f"--key {args.key}: {exc}") from None
    return {KEY_HEADER: args.identity, SIGNATURE_HEADER: sshsig.header_value(armored)}


def _signed(args: Caller, action: str, **fields: Any) -> tuple[bytes, dict[str, str]]:
    from reconciler.promotion.signing import make_body  # noqa: PLC0415

    body = make_body(action, args.identity, **fields)
    return body, _signature_headers(args, body)


def _get(args: Caller, path: str) -> Any:
    """A signed read (promotions name people, so reads are signed like calls)."""
    from reconciler.promotion.signing import TIMESTAMP_HEADER, read_message  # noqa: PLC0415

    timestamp = str(int(time.time()))
    headers = _signature_headers(args, read_message("GET", path, timestamp))
    return _call(args.server, "GET", path, headers={**headers, TIMESTAMP_HEADER: timestamp})


def _print(promotion: dict[str, Any], output: str) -> None:
    if output != "table":
        print_data(output, promotion)
        return
    print(f"promotion {promotion['id']}: {promotion['from']} -> {promotion['to']} ({promotion['type']})")
    print(f"  revision:  {promotion['revision']}")
    if promotion.get("requestedBy"):
        print(f"  requested: by {promotion['requestedBy']} at {promotion.get('requestedAt', '')}")
    if promotion.get("authors"):
        print(f"  authors:   {', '.join(promotion['authors'][:10])}")
    print(f"  phase:     {promotion['phase']}  {promotion.get('message', '')}")
    print(
        f"  approvals: {promotion.get('approvalSummary', '')}  "
        + ", ".join(a["identity"] for a in promotion["approvals"])
    )
    for image in promotion.get("images") or []:
        value = image.get("newTag") or image.get("digest") or image.get("newName", "")
        print(f"  image:     {image['name']} -> {value}")
    if promotion.get("commit"):
        print(f"  commit:    {promotion['commit']}")


def promote(args: Caller, source: str, target: str, revision: str, output: str, dry_run: bool = False) -> int:
    """Request a promotion (with ``dry_run``: print the exact commit diff it would make, create nothing)."""
    fields: dict[str, Any] = {"from": source, "to": target}
    if revision:
        fields["revision"] = revision
    if dry_run:
        fields["dry_run"] = True
    body, headers = _signed(args, "request", **fields)
    answer = _call(args.server, "POST", "/api/v1/promotions", body, headers)
    if dry_run:
        if output in ("json", "yaml"):
            print_data(output, answer)
        else:
            print(f"promotion {source} -> {target} of revision {answer['revision']} would commit:")
            sys.stdout.write(answer["diff"] or "(nothing: the target already holds these values)\n")
        return 0
    _print(answer, output)
    return 0


def rollback(args: Caller, environment: str, to: str, output: str) -> int:
    """Request a rollback."""
    fields: dict[str, Any] = {"to": environment}
    if to:
        fields["target"] = to
    body, headers = _signed(args, "rollback", **fields)
    _print(_call(args.server, "POST", "/api/v1/promotions", body, headers), output)
    return 0


def _open_promotion(args: Caller, promotion_id: str, pipeline: str) -> dict[str, Any]:
    """The promotion named: by id, or the one open promotion of ``pipeline``."""
    if promotion_id:
        found: dict[str, Any] = _get(args, f"/api/v1/promotions/{promotion_id}")
        return found
    if not pipeline:
        raise PromotionCommandError("name a promotion id, or --pipeline NAME for its open promotion")
    items = _get(args, "/api/v1/promotions")["promotions"]
    open_ones = [p for p in items if p.get("pipeline") == pipeline and p["phase"] in OPEN_PHASES]
    if len(open_ones) != 1:
        ids = ", ".join(p["id"] for p in open_ones) or "none"
        raise PromotionCommandError(
            f"pipeline {pipeline} has {len(open_ones)} open promotions ({ids}): name one by id"
        )
    return dict(open_ones[0])


@dataclass(frozen=True)
class Decision:
    """An approval or a rejection, as the command line gives it."""

    approve: bool
    promotion_id: str = ""
    pipeline: str = ""
    revision: str = ""
    comment: str = ""
    yes: bool = False


def decide(args: Caller, decision: Decision, output: str) -> int:
    """Approve or reject a promotion (bound to the revision it promotes), after showing it."""
    current = _open_promotion(args, decision.promotion_id, decision.pipeline)
    revision = decision.revision or current["revision"]
    if decision.revision and decision.revision != current["revision"]:
        raise PromotionCommandError(
            f"promotion {current['id']} is of revision {current['revision']}, not {decision.revision}"
        )
    action = "approve" if decision.approve else "reject"
    if not decision.yes:
        _print(current, "table")
        if not sys.stdin.isatty():
            raise PromotionCommandError(f"not a terminal: pass --yes to {action} without being asked")
        answer = input(f"{action} promotion {current['id']} of revision {revision[:12]}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was sent")
            return 1
    body, headers = _signed(
        args, action, promotion=current["id"], revision=revision, comment=decision.comment
    )
    path = f"/api/v1/promotions/{current['id']}/" + ("approvals" if decision.approve else "rejections")
    _print(_call(args.server, "POST", path, body, headers), output)
    return 0


def promotions(args: Caller, promotion_id: str, output: str) -> int:
    """List promotions (or show one)."""
    if promotion_id:
        _print(_get(args, f"/api/v1/promotions/{promotion_id}"), output)
        return 0
    items = _get(args, "/api/v1/promotions")["promotions"]
    if output != "table":
        print_data(output, items)
        return 0
    print_table(
        ("ID", "FROM", "TO", "REVISION", "APPROVALS", "PHASE", "MESSAGE"),
        [
            (
                p["id"],
                p["from"],
                p["to"],
                p["revision"][:12],
                p.get("approvalSummary", ""),
                p["phase"],
                p.get("message", ""),
            )
            for p in items
        ],
    )
    return 0


# -- the command line ---------------------------------------------------------------------------
Identity = Annotated[str, typer.Option("--as", help="the identity acting (an approver)", show_default=False)]
Key = Annotated[
    str,
    typer.Option(
        "--key", help="your SSH private key file; or its .pub file to sign with the running ssh-agent"
    ),
]
SecretFile = Annotated[
    str, typer.Option("--secret-file", help="an integration's HMAC secret file (bots and CI, not people)")
]
KeyId = Annotated[
    str,
    typer.Option("--key-id", help="the integration's name with --secret-file (default: the --as identity)"),
]
Revision = Annotated[
    str, typer.Option("--revision", help="the revision you checked (default: the promotion's)")
]


def _done(code: int) -> None:
    if code:
        raise typer.Exit(code)


def promote_command(
    source: Annotated[
        str, typer.Argument(metavar="FROM", help="source environment (for example tams-staging)")
    ],
    target: Annotated[
        str, typer.Argument(metavar="TO", help="target environment (for example tams-production)")
    ],
    identity: Identity,
    revision: Annotated[
        str, typer.Option("--revision", help="the source revision to promote (default: what FROM runs)")
    ] = "",
    key: Key = "",
    secret_file: SecretFile = "",
    key_id: KeyId = "",
    server: Server = DEFAULT_SERVER,
    output: Output = "table",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the exact commit it would write; create nothing")
    ] = False,
) -> None:
    """Request a promotion from one environment to another."""
    caller = Caller(server, identity, key, secret_file, key_id)
    _done(promote(caller, source, target, revision, output, dry_run))


def promotions_command(
    identity: Identity,
    promotion_id: Annotated[
        str, typer.Argument(metavar="ID", help="a promotion id", show_default=False)
    ] = "",
    key: Key = "",
    secret_file: SecretFile = "",
    key_id: KeyId = "",
    server: Server = DEFAULT_SERVER,
    output: Output = "table",
) -> None:
    """List promotions, or show one."""
    _done(promotions(Caller(server, identity, key, secret_file, key_id), promotion_id, output))


def _decide_command(approve: bool) -> Any:
    verb = "approve" if approve else "reject"

    def command(
        identity: Identity,
        promotion_id: Annotated[
            str,
            typer.Argument(metavar="ID", help="the promotion id (or use --pipeline)", show_default=False),
        ] = "",
        pipeline: Annotated[
            str, typer.Option("--pipeline", help="the pipeline whose one open promotion this is")
        ] = "",
        yes: Annotated[bool, typer.Option("--yes", help="do not show the promotion and ask first")] = False,
        revision: Revision = "",
        comment: Annotated[str, typer.Option("--comment", help="a note kept with the decision")] = "",
        key: Key = "",
        secret_file: SecretFile = "",
        key_id: KeyId = "",
        server: Server = DEFAULT_SERVER,
        output: Output = "table",
    ) -> None:
        caller = Caller(server, identity, key, secret_file, key_id)
        decision = Decision(approve, promotion_id, pipeline, revision, comment, yes)
        _done(decide(caller, decision, output))

    command.__doc__ = f"{verb.capitalize()} a promotion (signed, bound to its revision)."
    command.__name__ = f"{verb}_command"
    return command


def rollback_command(
    environment: Annotated[
        str, typer.Argument(metavar="ENV", help="the environment to roll back (a pipeline's target)")
    ],
    identity: Identity,
    to: Annotated[
        str,
        typer.Option(
            "--to", help="a promotion id (restore its values) or a revision (default: before the last one)"
        ),
    ] = "",
    key: Key = "",
    secret_file: SecretFile = "",
    key_id: KeyId = "",
    server: Server = DEFAULT_SERVER,
    output: Output = "table",
) -> None:
    """Request a rollback of an environment through the same gates."""
    _done(rollback(Caller(server, identity, key, secret_file, key_id), environment, to, output))


def register(app: typer.Typer) -> None:
    """Add promote, promotions, approve, reject and rollback to the top-level command."""
    app.command("promote", rich_help_panel=PANEL)(promote_command)
    app.command("promotions", rich_help_panel=PANEL)(promotions_command)
    app.command("approve", rich_help_panel=PANEL)(_decide_command(approve=True))
    app.command("reject", rich_help_panel=PANEL)(_decide_command(approve=False))
    app.command("rollback", rich_help_panel=PANEL)(rollback_command)
