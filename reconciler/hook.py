"""A Git ``post-receive`` hook that sends a signed GitHub-style push webhook to the daemon.

    python -m reconciler.hook --url http://127.0.0.1:8080/webhooks/git --secret-file FILE

Reads ``<old> <new> <ref>`` lines on standard input (as Git passes them) and posts one ``push`` event
per ref, signed with ``X-Hub-Signature-256``. Used by the demo and the end-to-end tests; a failure is
printed but never fails the push.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from reconciler.server.webhooks import sign


def post(url: str, secret: str, ref: str, after: str, before: str = "0" * 40, timeout: float = 5.0) -> int:
    """Send one signed push event; returns the HTTP status (0 when the daemon is unreachable)."""
    body = json.dumps({"ref": ref, "before": before, "after": after}).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own daemon
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={sign(secret, body)}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def main() -> int:
    """Entry point of the hook."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret-file", required=True, type=Path)
    args = parser.parse_args()
    secret = args.secret_file.read_text(encoding="utf-8").strip()
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3:
            continue
        before, after, ref = parts
        status = post(args.url, secret, ref, after, before)
        print(f"reconciler webhook for {ref} -> {status or 'unreachable'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
