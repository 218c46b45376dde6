"""Promotion commands of the CLI: ``promote``, ``promotions``, ``approve``, ``reject``, ``rollback``.

They talk to a running daemon's API. Mutating commands sign their body (which carries the identity, a
fresh nonce and the time), so the daemon can check who acts without any session or password:

* a person signs with their own SSH key: ``--key ~/.ssh/id_ed25519`` (a private key file), or
  ``--key ~/.ssh/id_ed25519.pub`` to have the running ssh-agent sign with that key;
* an integration (a bot, CI) signs with its HMAC secret: ``--secret-file FILE --key-id NAME``.

``approve`` shows what is being approved (revision, commits, images) and asks first, unless ``--yes``;
``approve --pipeline NAME`` approves the one open promotion of a pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from reconciler.promotion import sshsig
from reconciler.promotion.signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    make_body,
    read_message,
    signature,
)

OPEN_PHASES = ("Pending", "Approved")


class PromotionCommandError(Exception):
    """A promotion command failed; the message says why."""


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
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PromotionCommandError(f"cannot reach {url}: {exc}") from None


def _signature_headers(args: argparse.Namespace, data: bytes) -> dict[str, str]:
    """``data`` signed with the caller's SSH key (file or agent), or an integration's secret."""
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


def _signed(args: argparse.Namespace, action: str, **fields: Any) -> tuple[bytes, dict[str, str]]:
    body = make_body(action, args.identity, **fields)
    return body, _signature_headers(args, body)


def _get(args: argparse.Namespace, path: str) -> Any:
    """A signed read (promotions name people, so reads are signed like calls)."""
    timestamp = str(int(time.time()))
    headers = _signature_headers(args, read_message("GET", path, timestamp))
    return _call(args.server, "GET", path, headers={**headers, TIMESTAMP_HEADER: timestamp})


def _print(promotion: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(promotion, indent=2))
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


def promote(args: argparse.Namespace) -> int:
    """Request a promotion."""
    fields: dict[str, Any] = {"from": args.source, "to": args.target}
    if args.revision:
        fields["revision"] = args.revision
    body, headers = _signed(args, "request", **fields)
    _print(_call(args.server, "POST", "/api/v1/promotions", body, headers), args.output)
    return 0


def rollback(args: argparse.Namespace) -> int:
    """Request a rollback."""
    fields: dict[str, Any] = {"to": args.environment}
    if args.to:
        fields["target"] = args.to
    body, headers = _signed(args, "rollback", **fields)
    _print(_call(args.server, "POST", "/api/v1/promotions", body, headers), args.output)
    return 0


def _open_promotion(args: argparse.Namespace) -> dict[str, Any]:
    """The promotion ``args`` name: by id, or the one open promotion of ``--pipeline``."""
    if args.id:
        found: dict[str, Any] = _get(args, f"/api/v1/promotions/{args.id}")
        return found
    if not args.pipeline:
        raise PromotionCommandError("name a promotion id, or --pipeline NAME for its open promotion")
    items = _get(args, "/api/v1/promotions")["promotions"]
    open_ones = [p for p in items if p.get("pipeline") == args.pipeline and p["phase"] in OPEN_PHASES]
    if len(open_ones) != 1:
        ids = ", ".join(p["id"] for p in open_ones) or "none"
        raise PromotionCommandError(
            f"pipeline {args.pipeline} has {len(open_ones)} open promotions ({ids}): name one by id"
        )
    return dict(open_ones[0])


def decide(args: argparse.Namespace) -> int:
    """Approve or reject a promotion (bound to the revision it promotes), after showing it."""
    current = _open_promotion(args)
    revision = args.revision or current["revision"]
    if args.revision and args.revision != current["revision"]:
        raise PromotionCommandError(
            f"promotion {current['id']} is of revision {current['revision']}, not {args.revision}"
        )
    action = "approve" if args.approve else "reject"
    if not args.yes:
        _print(current, "text")
        if not sys.stdin.isatty():
            raise PromotionCommandError(f"not a terminal: pass --yes to {action} without being asked")
        answer = input(f"{action} promotion {current['id']} of revision {revision[:12]}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was sent")
            return 1
    body, headers = _signed(args, action, promotion=current["id"], revision=revision, comment=args.comment)
    path = f"/api/v1/promotions/{current['id']}/" + ("approvals" if args.approve else "rejections")
    _print(_call(args.server, "POST", path, body, headers), args.output)
    return 0


def promotions(args: argparse.Namespace) -> int:
    """List promotions (or show one)."""
    if args.id:
        _print(_get(args, f"/api/v1/promotions/{args.id}"), args.output)
        return 0
    items = _get(args, "/api/v1/promotions")["promotions"]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    print(f"{'ID':<36} {'FROM':<22} {'TO':<22} {'REVISION':<13} {'APPROVALS':<10} {'PHASE':<11} MESSAGE")
    for p in items:
        print(
            f"{p['id']:<36} {p['from']:<22} {p['to']:<22} {p['revision'][:12]:<13} "
            f"{p.get('approvalSummary', ''):<10} {p['phase']:<11} {p.get('message', '')}"
        )
    return 0


def _guard(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            result: int = handler(args)
        except PromotionCommandError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return result

    return run


def _common(parser: argparse.ArgumentParser, *, signed: bool) -> None:
    parser.add_argument("--server", default="http://127.0.0.1:8080", help="daemon URL (default: %(default)s)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    if signed:
        parser.add_argument("--as", dest="identity", required=True, help="the identity acting (an approver)")
        parser.add_argument(
            "--key",
            default="",
            help="your SSH private key file; or its .pub file to sign with the running ssh-agent",
        )
        parser.add_argument(
            "--secret-file", default="", help="an integration's HMAC secret file (bots and CI, not people)"
        )
        parser.add_argument(
            "--key-id",
            default="",
            help="the integration's name with --secret-file (default: the --as identity)",
        )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the promotion commands to the top-level parser."""
    p = subparsers.add_parser("promote", help="request a promotion from one environment to another")
    p.add_argument("source", metavar="FROM", help="source environment (for example tams-staging)")
    p.add_argument("target", metavar="TO", help="target environment (for example tams-production)")
    p.add_argument("--revision", default="", help="the source revision to promote (default: what FROM runs)")
    _common(p, signed=True)
    p.set_defaults(handler=_guard(promote))

    p = subparsers.add_parser("promotions", help="list promotions, or show one")
    p.add_argument("id", nargs="?", default="", help="a promotion id")
    _common(p, signed=True)
    p.set_defaults(handler=_guard(promotions))

    for name, approve in (("approve", True), ("reject", False)):
        p = subparsers.add_parser(name, help=f"{name} a promotion (signed, bound to its revision)")
        p.add_argument("id", nargs="?", default="", help="the promotion id (or use --pipeline)")
        p.add_argument("--pipeline", default="", help="the pipeline whose one open promotion this is")
        p.add_argument("--yes", action="store_true", help="do not show the promotion and ask first")
        p.add_argument("--revision", default="", help="the revision you checked (default: the promotion's)")
        p.add_argument("--comment", default="", help="a note kept with the decision")
        _common(p, signed=True)
        p.set_defaults(handler=_guard(decide), approve=approve)

    p = subparsers.add_parser("rollback", help="request a rollback of an environment through the same gates")
    p.add_argument("environment", metavar="ENV", help="the environment to roll back (a pipeline's target)")
    p.add_argument(
        "--to",
        default="",
        help="a promotion id (restore its values) or a revision (default: before the last one)",
    )
    _common(p, signed=True)
    p.set_defaults(handler=_guard(rollback))
