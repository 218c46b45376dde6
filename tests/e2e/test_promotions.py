"""Promotions end to end: a real Git server, the daemon as a subprocess, signed approvals over HTTP,
the promotion commit read back from Git and its effect read from the cluster."""

from __future__ import annotations

import datetime as dt
import json
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.promotion.signing import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    make_body,
    read_message,
    signature,
)
from tests.e2e.conftest import SECRET, DaemonProcess, Repo, daemon_config, git
from tests.helpers import wait_for
from tests.support import ApproverKey, deployment

pytestmark = pytest.mark.cluster

# the approvers: each signs with an SSH key of their own (dev1 authors the test's commits)
IDENTITIES = ("alice@example.com", "bob@example.com", "carol@example.com", "dev1@example.com")


def overlay(env: str, tag: str) -> str:
    return (
        f"resources: [../base]\nnamePrefix: {env}-\n"
        "images:\n  - name: registry.invalid/api\n" + f'    newTag: "{tag}"\n'
    )


@dataclass
class Setup:
    daemon: DaemonProcess
    repo: Repo
    staging: str
    production: str
    namespace: str
    tmp_path: Path
    toolchain: Toolchain
    keys: dict[str, ApproverKey]

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        key: str = "",
        secret: str = "",
        signed: dict[str, str] | None = None,
    ) -> Any:
        """A call signed by ``key``'s own SSH key, or (``secret``) with an HMAC under that key id, or with
        the ``signed`` headers as they are."""
        headers = {"Content-Type": "application/json", **(signed or {})}
        if secret:
            headers[KEY_HEADER] = key
            headers[SIGNATURE_HEADER] = signature(secret, body or b"")
        elif key and not signed:
            headers.update(self.keys[key].headers(body or b""))
        request = urllib.request.Request(  # noqa: S310
            self.daemon.url + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise AssertionError(f"{method} {path}: {exc.code}\n{self.daemon.log()}") from None
            return exc.code, json.loads(exc.read())

    def request(self, identity: str = "carol@example.com", **fields: Any) -> tuple[int, Any]:
        body = make_body("request", identity, **{"from": self.staging, "to": self.production, **fields})
        result: tuple[int, Any] = self.call("POST", "/api/v1/promotions", body, identity)
        return result

    def decide(self, promotion: dict[str, Any], identity: str, *, approve: bool = True, **fields: Any) -> Any:
        payload = {"promotion": promotion["id"], "revision": promotion["revision"], **fields}
        body = make_body("approve" if approve else "reject", identity, **payload)
        kind = "approvals" if approve else "rejections"
        return self.call("POST", f"/api/v1/promotions/{promotion['id']}/{kind}", body, identity)

    def read(self, path: str, identity: str = "alice@example.com") -> Any:
        """A signed read of the promotions API (it names people, so reads are signed too)."""
        timestamp = str(int(time.time()))
        headers = self.keys[identity].headers(read_message("GET", path, timestamp))
        request = urllib.request.Request(  # noqa: S310
            self.daemon.url + path, headers={**headers, TIMESTAMP_HEADER: timestamp}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def promotion(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.read(f"/api/v1/promotions/{name}")
        return result

    def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            last.update(self.promotion(name))
            return dict(last) if last.get("phase") in phases else None

        try:
            return wait_for(reached, timeout=timeout, what=f"promotion {name} to reach {'/'.join(phases)}")
        except AssertionError as exc:
            seen = f"{last.get('phase')}: {last.get('message')}"
            self.daemon.dump_tasks()
            raise AssertionError(f"{exc}\nlast seen {seen}\ndaemon log:\n{self.daemon.log()}") from None

    def wait_ready(self, env: str, revision: str = "") -> dict[str, Any]:
        def ready() -> Any:
            status = self.daemon.environment(env)
            ok = status.get("condition") == "Ready" and (not revision or status.get("revision") == revision)
            return ok and status

        result: dict[str, Any] = wait_for(
            ready, timeout=60, what=f"{env} Ready at {revision[:12] or 'any revision'}"
        )
        return result

    def pull(self) -> None:
        git("pull", "-q", "--rebase", "origin", "main", cwd=self.repo.work)

    def commits_with(self, trailer: str) -> list[str]:
        git("fetch", "-q", "origin", cwd=self.repo.work)
        out = git("log", "origin/main", "--format=%H", "-F", f"--grep={trailer}", cwd=self.repo.work)
        return out.split()

    def events(self, kube_list: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kube_list(f"/api/v1/namespaces/{self.namespace}/events")
        return [e for e in items if e["involvedObject"].get("kind") == "Promotion"]


def start(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    pipeline: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Setup:
    repo.write("apps/base/kustomization.yaml", "resources: [app.yaml]\n")
    repo.write("apps/base/app.yaml", [deployment("api", namespace, image="registry.invalid/api:0")])
    repo.write("apps/staging/kustomization.yaml", overlay("staging", "1"))
    repo.write("apps/production/kustomization.yaml", overlay("production", "1"))
    repo.commit_and_push("initial")
    staging, production = f"{namespace[:40]}-s", f"{namespace[:40]}-p"
    control = f"{namespace[:50]}-ctl"
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    keys = {identity: ApproverKey.create(key_dir, identity) for identity in IDENTITIES}
    approvers = [{"identity": i, "keys": [k.public_line], "groups": ["sre"]} for i, k in keys.items()]
    settings = {
        "name": namespace[:40].rstrip("-"),
        "from": staging,
        "to": production,
        "approvals": 2,
        "approvers": ["alice@example.com", "bob@example.com", "dev1@example.com"],
        "rollback": {"approvals": 1},
        "timeout": "60s",
        **(pipeline or {}),
    }
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[
            {"name": staging, "path": "apps/staging", "health_timeout": 60},
            {"name": production, "path": "apps/production", "health_timeout": 60},
        ],
        # the daemon's own namespace (promotions, inventories) is never an environment's to write
        inventory_namespace=control,
        promotions={"approvers": approvers, "pipelines": [settings]},
    )
    daemon.extra_env.update(extra_env or {})
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    daemon.start(toolchain)
    setup = Setup(daemon, repo, staging, production, control, tmp_path, toolchain, keys)
    setup.wait_ready(staging)
    setup.wait_ready(production)
    return setup


@pytest.fixture
def setups() -> Iterator[list[Setup]]:
    started: list[Setup] = []
    yield started
    for setup in started:
        process = setup.daemon.process
        if process is not None and process.poll() is None:
            setup.daemon.stop()


def push_staging_tag(setup: Setup, tag: str) -> str:
    setup.pull()
    setup.repo.write("apps/staging/kustomization.yaml", overlay("staging", tag))
    revision = setup.repo.commit_and_push(f"staging: api {tag}")
    setup.wait_ready(setup.staging, revision)
    return revision


def approve_with_ssh_keygen_and_curl(setup: Setup, path: str, payload: bytes) -> str:
    """The documented way to approve without our CLI: ssh-keygen signs the body, curl sends it; the HTTP
    status curl saw."""
    body = setup.tmp_path / "approval.json"
    body.write_bytes(payload)
    key = setup.keys["alice@example.com"].private_key
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", "reconciler-promotion", "-f", str(key), str(body)],
        check=True,
    )
    script = (
        "curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' "
        "-H 'X-Reconciler-Key-Id: alice@example.com' "
        f"-H \"X-Reconciler-Signature: sshsig=$(sed '1d;$d' {body}.sig | tr -d '\\n')\" "
        f"--data-binary @{body} {setup.daemon.url}{path}"
    )
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True, timeout=30).stdout


def image_of(kube_sync: Any, namespace: str, name: str) -> str:
    live = kube_sync("apps/v1", "Deployment", namespace, name)
    return str(live["spec"]["template"]["spec"]["containers"][0]["image"]) if live else ""


def test_request_two_approvals_commit_production_healthy_then_rollback(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube_sync: Any,
    kube_list: Any,
    setups: list[Setup],
) -> None:
    """The whole path: request → 2 allow-listed approvals → one commit with trailers changing only the
    images → production Synced and Healthy → Succeeded; then a rollback through its own gate."""
    setup = start(tmp_path, repo, kubeconfig, toolchain, namespace)
    setups.append(setup)
    revision = push_staging_tag(setup, "2")
    production_before = (setup.repo.work / "apps/production/kustomization.yaml").read_text()

    # `promote --dry-run` prints the exact commit it would write, and creates nothing
    preview = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "promote",
            setup.staging,
            setup.production,
            "--dry-run",
            "--as",
            "carol@example.com",
            "--key",
            str(setup.keys["carol@example.com"].private_key),
            "--server",
            setup.daemon.url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert preview.returncode == 0, preview.stderr
    changed = [
        line for line in preview.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == ['-    newTag: "1"', '+    newTag: "2"'], preview.stdout
    assert setup.read("/api/v1/promotions")["promotions"] == []

    status, promotion = setup.request()
    assert status == 201, promotion
    assert (promotion["phase"], promotion["revision"]) == ("Pending", revision)
    assert promotion["images"] == [{"name": "registry.invalid/api", "newTag": "2"}]
    for approver in ("alice@example.com", "bob@example.com"):
        status, body = setup.decide(promotion, approver)
        assert status == 200, body
    done = setup.wait_phase(promotion["id"], "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done

    # Git: exactly one commit, changing only the images of the production overlay, with the trailers
    commits = setup.commits_with(f"Promotion: {promotion['id']}")
    assert commits == [done["commit"]]
    changed = git("show", "--format=", "--name-only", done["commit"], cwd=repo.work).split()
    assert changed == ["apps/production/kustomization.yaml"]
    message = git("show", "-s", "--format=%B", done["commit"], cwd=repo.work)
    assert f"Promoted-From: {setup.staging}@{revision}" in message
    assert "Approved-By: alice@example.com" in message
    assert "Approved-By: bob@example.com" in message
    setup.pull()
    production_after = (setup.repo.work / "apps/production/kustomization.yaml").read_text()
    assert production_after == production_before.replace('newTag: "1"', 'newTag: "2"')
    # the cluster: production runs the promoted image, Synced and Healthy
    assert image_of(kube_sync, namespace, "production-api") == "registry.invalid/api:2"
    env = setup.daemon.environment(setup.production)
    assert (env["sync"], env["health"]) == ("Synced", "Healthy")
    # audit: Events on the Promotion tell the story; metrics count it
    reasons = [e["reason"] for e in setup.events(kube_list) if e["involvedObject"]["name"] == promotion["id"]]
    for reason in ("Requested", "ApprovalReceived", "Approved", "Committed", "Succeeded"):
        assert reason in reasons, reasons
    assert setup.daemon.metric("reconciler_promotion_approvals_total", result="accepted") == 2
    # the gauge of promotions by phase is refreshed by the controller's next pass (a second or less)
    wait_for(
        lambda: setup.daemon.metric("reconciler_promotions", phase="Succeeded") >= 1,
        timeout=30,
        what="the promotions gauge to count the Succeeded promotion",
    )
    # kubectl shows it
    table = subprocess.run(
        [str(toolchain.kubectl), "--kubeconfig", str(kubeconfig), "get", "promotions", "-n", setup.namespace],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    row = next(line for line in table.splitlines() if line.startswith(promotion["id"]))
    assert "Succeeded" in row
    assert "2/2" in row

    # rollback: one approval (the pipeline's rollback gate), restores tag 1
    body = make_body("rollback", "carol@example.com", to=setup.production)
    status, rollback = setup.call("POST", "/api/v1/promotions", body, "carol@example.com")
    assert status == 201, rollback
    assert rollback["type"] == "Rollback"
    assert rollback["images"] == [{"name": "registry.invalid/api", "newTag": "1"}]
    assert rollback["requiredApprovals"] == 1
    status, body = setup.decide(rollback, "alice@example.com")
    assert status == 200, body
    rolled = setup.wait_phase(rollback["id"], "Succeeded", "Failed")
    assert rolled["phase"] == "Succeeded", rolled
    assert image_of(kube_sync, namespace, "production-api") == "registry.invalid/api:1"
    with urllib.request.urlopen(setup.daemon.url + "/metrics", timeout=5) as response:  # noqa: S310
        scrape = response.read().decode()
    print("\n".join(line for line in scrape.splitlines() if line.startswith("reconciler_promotion")))


def test_refusals_are_audited_and_approvals_are_bound_to_the_revision(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube_list: Any,
    setups: list[Setup],
) -> None:
    """Not on the list, self-approval, forged signature, replay: refused and audited. An approval for R
    after staging moved to R' does not count; a newer request supersedes an older one."""
    setup = start(tmp_path, repo, kubeconfig, toolchain, namespace)
    setups.append(setup)
    first_revision = push_staging_tag(setup, "2")
    status, promotion = setup.request()
    assert status == 201, promotion

    # reads name people: unsigned ones are refused, signed ones by a key of the policy answered
    assert setup.daemon.get_status("/api/v1/promotions") == 401
    assert setup.daemon.get_status(f"/api/v1/promotions/{promotion['id']}") == 401
    assert setup.read(f"/api/v1/promotions/{promotion['id']}", "carol@example.com")["id"] == promotion["id"]
    status, body = setup.decide(promotion, "carol@example.com")  # a known key, not on the list
    assert status == 403, body
    assert "not on the approver list" in body["error"]
    status, body = setup.decide(promotion, "dev1@example.com")  # authored the staging commit
    assert status == 403, body
    assert "self-approval" in body["error"]
    payload = make_body("approve", "alice@example.com", promotion=promotion["id"], revision=first_revision)
    path = f"/api/v1/promotions/{promotion['id']}/approvals"
    status, body = setup.call("POST", path, payload, "alice@example.com", secret="forged-secret-0123456789")
    assert status == 401, body
    # whoever reads the daemon's secrets (here its webhook secret) still cannot sign as alice; nor can bob's
    # key, nor a key of alice's that the policy does not list
    status, body = setup.call("POST", path, payload, "alice@example.com", secret=SECRET)
    assert status == 401, body
    for signer in (setup.keys["bob@example.com"], ApproverKey.create(tmp_path, "alice@example.com")):
        status, body = setup.call(
            "POST", path, payload, signed=signer.headers(payload, key_id="alice@example.com")
        )
        assert status == 401, body
        assert "SSH signature" in body["error"]
    # alice approves with nothing but OpenSSH and curl
    assert approve_with_ssh_keygen_and_curl(setup, path, payload) == "200"
    status, body = setup.call("POST", path, payload, "alice@example.com")  # the same request again
    assert status == 409, body
    assert "replayed" in body["error"]
    current = setup.promotion(promotion["id"])
    assert current["approvalSummary"] == "1/2"
    assert [a["identity"] for a in current["approvals"]] == ["alice@example.com"]
    refused = [
        e
        for e in setup.events(kube_list)
        if e["involvedObject"]["name"] == promotion["id"] and e["reason"] == "Refused"
    ]
    assert len(refused) >= 7, [e["message"] for e in refused]
    assert setup.daemon.metric("reconciler_promotion_approvals_total", result="refused") >= 7

    # staging moves on: the pending promotion is superseded, and a late approval for R is refused
    second_revision = push_staging_tag(setup, "3")
    setup.wait_phase(promotion["id"], "Superseded")
    status, body = setup.decide(promotion, "bob@example.com")
    assert status == 409, body
    status, newer = setup.request()
    assert status == 201, newer
    assert newer["revision"] == second_revision
    stale = {**newer, "revision": first_revision}  # an approval of R sent to the promotion of R'
    status, body = setup.decide(stale, "bob@example.com")
    assert status == 409, body
    assert "bound to the exact revision" in body["error"]
    # a newer request supersedes the pending one
    status, newest = setup.request(identity="alice@example.com")
    assert status == 201, newest
    assert setup.wait_phase(newer["id"], "Superseded")["message"] == f"superseded by {newest['id']}"
    # nothing was promoted
    assert setup.commits_with("Promotion:") == []


def test_soak_time_holds_the_promotion_pending_and_a_closed_window_holds_it_approved(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    setups: list[Setup],
) -> None:
    """Soak not met: Pending until it is. Window closed: Approved, waiting, until it opens."""
    # a time zone where it is around midday, so an allow window from "now + a few seconds" to the end
    # of the local day never wraps past midnight
    offset = (12 - dt.datetime.now(dt.UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    zone = "Etc/GMT" + (f"+{-offset}" if offset < 0 else f"-{offset}") if offset else "UTC"
    local = dt.datetime.now(dt.UTC) + dt.timedelta(hours=offset)
    # long enough for the start, a staging sync and the 8 s soak to pass first on a loaded machine
    opens = local + dt.timedelta(seconds=40)
    window = {"allow": True, "start": opens.strftime("%H:%M:%S"), "end": "24:00", "timezone": zone}
    setup = start(
        tmp_path, repo, kubeconfig, toolchain, namespace, pipeline={"soak": "8s", "windows": [window]}
    )
    setups.append(setup)
    push_staging_tag(setup, "2")
    healthy_at = time.time()
    status, promotion = setup.request()
    assert status == 201, promotion
    for approver in ("alice@example.com", "bob@example.com"):
        assert setup.decide(promotion, approver)[0] == 200

    # approved twice, but staging has not been healthy for 8 s yet: Pending, and the message says why
    def soaking() -> dict[str, Any] | None:
        current = setup.promotion(promotion["id"])
        return current if current["phase"] != "Pending" or "soak time" in current["message"] else None

    pending = wait_for(soaking, timeout=10, what="the promotion to report the soak time")
    assert pending["phase"] == "Pending", pending
    assert pending["approvalSummary"] == "2/2", pending
    approved = setup.wait_phase(promotion["id"], "Approved", "Promoting", "Succeeded", timeout=30)
    assert time.time() - healthy_at >= 8 - 1  # not before the soak time (1 s for the staging status lag)
    assert approved["phase"] == "Approved", approved  # the window is still closed
    assert "waiting for a promotion window" in approved["message"]
    done = setup.wait_phase(promotion["id"], "Succeeded", "Failed", timeout=90)
    assert done["phase"] == "Succeeded", done
    setup.commits_with("Promotion:")  # fetches the promotion commit into the work clone
    commit_time = int(git("show", "-s", "--format=%ct", done["commit"], cwd=repo.work))
    assert commit_time >= int(opens.timestamp() - offset * 3600) - 1


def test_killed_after_the_push_completes_exactly_once_and_rebases_over_a_human_push(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    kube_sync: Any,
    setups: list[Setup],
) -> None:
    """A human push lands while the promotion pushes: the commit is rebased onto it (no force-push).
    The daemon is then SIGKILLed right after its push, before recording it: after a restart the
    promotion completes with exactly one commit."""
    setup = start(
        tmp_path,
        repo,
        kubeconfig,
        toolchain,
        namespace,
        extra_env={"RECONCILER_FAULT_INJECTION": "promotion-after-push"},
    )
    setups.append(setup)
    push_staging_tag(setup, "2")
    # the first promotion push meets a human commit pushed just before it (from the server's own hook)
    bare = setup.repo.server.base / f"{repo.name}.git"
    human = tmp_path / "human"
    git("clone", "-q", repo.url, str(human), cwd=tmp_path)
    marker = tmp_path / "raced"
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(
        f"""#!/bin/sh
while read old new ref; do
  if [ ! -e {marker} ] && git log -1 --format=%B "$new" | grep -q '^Promotion:'; then
    touch {marker}
    (unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_DIR
     cd {human} && git pull -q origin main && echo human > apps/production/NOTES && git add -A &&
     git -c user.name=Human -c user.email=human@example.com commit -q -m 'human: notes' &&
     git push -q origin HEAD:main) >/dev/null 2>&1
  fi
done
exit 0
"""
    )
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)

    status, promotion = setup.request()
    assert status == 201, promotion
    for approver in ("alice@example.com", "bob@example.com"):
        assert setup.decide(promotion, approver)[0] == 200
    process = setup.daemon.process
    assert process is not None
    assert process.wait(timeout=60) == -signal.SIGKILL  # the fault fired right after the push
    assert marker.exists()
    commits = setup.commits_with(f"Promotion: {promotion['id']}")
    assert len(commits) == 1
    human_commit = git("log", "origin/main", "--format=%H", "-F", "--grep=human: notes", cwd=repo.work)
    assert human_commit
    assert git("merge-base", "--is-ancestor", human_commit, commits[0], cwd=repo.work) == ""

    setup.daemon.extra_env.pop("RECONCILER_FAULT_INJECTION")
    setup.daemon.start(toolchain)
    done = setup.wait_phase(promotion["id"], "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done
    assert setup.commits_with(f"Promotion: {promotion['id']}") == commits
    assert done["commit"] == commits[0]
    setup.pull()
    assert (repo.work / "apps/production/NOTES").read_text().strip() == "human"
    assert image_of(kube_sync, namespace, "production-api") == "registry.invalid/api:2"


def test_automatic_request_when_staging_is_healthy_at_new_inputs_then_expiry(
    tmp_path: Path,
    repo: Repo,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    setups: list[Setup],
) -> None:
    """auto_request: a healthy staging at new inputs requests a promotion by itself; a request nobody
    approves expires."""
    setup = start(
        tmp_path,
        repo,
        kubeconfig,
        toolchain,
        namespace,
        pipeline={"auto_request": True, "expire_after": "6s"},
    )
    setups.append(setup)
    revision = push_staging_tag(setup, "2")

    def automatic() -> Any:
        items = setup.read("/api/v1/promotions")["promotions"]
        return [p for p in items if p["revision"] == revision]

    found = wait_for(automatic, timeout=30, what="an automatic promotion request")
    assert len(found) == 1
    assert found[0]["requestedBy"] == "reconciler"
    assert found[0]["images"] == [{"name": "registry.invalid/api", "newTag": "2"}]
    expired = setup.wait_phase(found[0]["id"], "Expired", timeout=30)
    assert "not approved within" in expired["message"]
