"""Many clusters (issue 13): one daemon, cluster a (``cluster_a``, started for these tests) and cluster b
(the session cluster, the daemon's home). A promotion from staging on a to production on b; cluster a's
API server killed, then started again; cluster a behind a proxy that answers everything 5 s late. Pushes
to b keep their latency through all of it; a's environments say what is wrong and converge on their
own when a answers again.

Latencies are measured from ``git push`` (its post-receive hook sends the signed webhook) to the pushed
ConfigMap value being on b, and printed with the time to the status API showing the environment Ready at
that revision (run with -s to see them).
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.devcluster.cluster import Cluster
from reconciler.devcluster.provisioner import VolumeProvisioner
from tests.e2e.conftest import GIT_ENV, Admin, DaemonProcess, Repo, daemon_config, git, two_clusters
from tests.e2e.test_aiplus_promotion import ENVIRONMENTS, NAMESPACES, namespaces_gone
from tests.e2e.test_promotions import IDENTITIES, Setup
from tests.helpers import wait_for
from tests.support import ApproverKey, config_map
from tests.tcpproxy import DelayProxy, proxied_kubeconfig, server_address

pytestmark = pytest.mark.cluster

T = TypeVar("T")

PROBE_INTERVAL = 1.0  # each cluster's probe_interval in these tests
PUSHES = 10  # measured pushes per phase
SLOW = 5.0  # s the proxy holds every chunk sent to cluster a's API server
ENVS_A = ("apps-a1", "apps-a2")
ENV_B = "apps-b"
REQUEST_SECONDS = "reconciler_kube_request_duration_seconds"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def control(namespace: str, admin: Admin, admin_a: Admin) -> Iterator[str]:
    """The daemon's own namespace (Environment objects, inventories; on the cluster of each environment):
    created by the daemon, deleted afterwards on both clusters."""
    name = f"{namespace[:50]}-ctl"
    yield name
    admin.call("DELETE", f"/api/v1/namespaces/{name}")
    admin_a.call("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def started(namespace_a: str, control: str) -> Iterator[list[DaemonProcess]]:
    """Daemons a test started; stopped before the namespaces are deleted (SIGKILL if SIGTERM is not
    enough), whatever happened."""
    daemons: list[DaemonProcess] = []
    yield daemons
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            try:
                daemon.stop(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.stop(signal.SIGKILL)


@pytest.fixture
def aiplus_namespaces(admin: Admin, admin_a: Admin, namespace_a: str) -> Iterator[None]:
    """The AI Plus overlays' fixed namespaces: absent from both clusters before the test (another test
    may still be deleting them), deleted from both after it."""
    clusters = (admin, admin_a)
    wait_for(
        lambda: all(namespaces_gone(c) for c in clusters),
        timeout=120,
        interval=0.5,
        what="the aiplus namespaces to be gone from both clusters",
    )
    yield
    for cluster in clusters:
        for name in NAMESPACES:
            cluster.call("DELETE", f"/api/v1/namespaces/{name}")
    wait_for(
        lambda: all(namespaces_gone(c) for c in clusters),
        timeout=120,
        interval=0.5,
        what="the aiplus namespaces to be deleted from both clusters",
    )


# -- helpers ------------------------------------------------------------------------------------


def service(name: str, namespace: str) -> dict[str, Any]:
    """A ClusterIP Service (healthy as soon as it exists)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


@dataclass
class Workload:
    """Three environments in the test namespace: apps-a1 and apps-a2 on cluster a, apps-b on b, a few
    ConfigMaps and a Service each. ``notes`` is what each environment's ``<env>-settings`` ConfigMap
    holds; ``keeper`` on a1 never changes (it is in Git all along)."""

    repo: Repo
    namespace: str
    notes: dict[str, str] = field(default_factory=lambda: dict.fromkeys((*ENVS_A, ENV_B), "0"))

    def objects(self, env: str) -> list[dict[str, Any]]:
        ns = self.namespace
        objects = [
            config_map(f"{env}-settings", ns, note=self.notes[env]),
            config_map(f"{env}-two", ns),
            config_map(f"{env}-three", ns),
            service(f"{env}-svc", ns),
        ]
        if env == "apps-a1":
            objects.append(config_map("keeper", ns, note="in Git all along"))
        return objects

    def write(self) -> None:
        for env in (*ENVS_A, ENV_B):
            self.repo.write(f"apps/{env}/kustomization.yaml", "resources: [objects.yaml]\n")
            self.repo.write(f"apps/{env}/objects.yaml", self.objects(env))

    def commit(self, message: str, **notes: str) -> str:
        """Change the notes (``apps_b="3"``), commit without pushing; the commit."""
        self.notes.update({env.replace("_", "-"): note for env, note in notes.items()})
        self.write()
        git("add", "-A", cwd=self.repo.work)
        git("commit", "-q", "-m", message, cwd=self.repo.work)
        return git("rev-parse", "HEAD", cwd=self.repo.work)


def environments() -> list[dict[str, Any]]:
    return [{"name": env, "path": f"apps/{env}", "cluster": "a"} for env in ENVS_A] + [
        {"name": ENV_B, "path": f"apps/{ENV_B}", "cluster": "b"}
    ]


def note_of(admin: Admin, namespace: str, name: str) -> str | None:
    """The ``note`` of a ConfigMap (None when it is not there or the API server does not answer)."""
    try:
        status, body = admin.call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    except OSError:
        return None
    return str((body.get("data") or {}).get("note")) if status == 200 else None


def a_notes(admin_a: Admin, namespace: str) -> set[str | None]:
    """The notes of a's environments' settings ConfigMaps on a."""
    return {note_of(admin_a, namespace, f"{env}-settings") for env in ENVS_A}


def uids(admin: Admin, namespace: str, objects: list[dict[str, Any]]) -> dict[str, str]:
    """kind/name -> metadata.uid of each object on the cluster ("" when absent)."""
    found = {}
    for obj in objects:
        plural = {"ConfigMap": "configmaps", "Service": "services"}[obj["kind"]]
        name = obj["metadata"]["name"]
        status, body = admin.call("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        found[f"{obj['kind']}/{name}"] = body["metadata"]["uid"] if status == 200 else ""
    return found


def wait(daemon: DaemonProcess, probe: Callable[[], T | None], what: str, timeout: float) -> T:
    """``wait_for`` whose failure carries the daemon's log."""
    try:
        return wait_for(probe, timeout=timeout, what=what)
    except AssertionError as exc:
        daemon.dump_tasks()
        raise AssertionError(f"{exc}\ndaemon log:\n{daemon.log()}") from None


def all_ready(daemon: DaemonProcess, names: tuple[str, ...], revision: str) -> list[dict[str, Any]] | None:
    """The statuses when every environment is Ready (Synced) at ``revision``."""
    states = [daemon.environment(name) for name in names]
    ok = all(
        s.get("condition") == "Ready" and s.get("sync") == "Synced" and s.get("revision") == revision
        for s in states
    )
    return states if ok else None


def readyz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of ``/readyz``."""
    try:
        with urllib.request.urlopen(daemon.url + "/readyz", timeout=5) as response:  # noqa: S310
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


def degraded(daemon: DaemonProcess, cluster: str) -> tuple[int, dict[str, Any]] | None:
    """``/readyz`` when its ``degraded`` list names ``cluster``."""
    status, body = readyz(daemon)
    named = any(str(reason).startswith(f"cluster {cluster}:") for reason in body.get("degraded", []))
    return (status, body) if named else None


def requests_over(daemon: DaemonProcess, cluster: str, seconds: str) -> float:
    """How many requests to ``cluster`` took longer than ``seconds`` (a bucket bound of the histogram)."""
    every = daemon.metric(f"{REQUEST_SECONDS}_count", cluster=cluster)
    return every - daemon.metric(f"{REQUEST_SECONDS}_bucket", cluster=cluster, le=seconds)


def clusters_up(daemon: DaemonProcess) -> dict[str, float | None]:
    """``reconciler_cluster_up`` of clusters a and b."""
    return {c: metric(daemon, "reconciler_cluster_up", cluster=c) for c in ("a", "b")}


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float | None:
    """One sample of ``name`` with ``labels``, or None when the daemon exports none (unlike
    ``DaemonProcess.metric``, which says 0 then)."""
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def push(
    daemon: DaemonProcess, workload: Workload, admin: Admin, index: int, phase: str
) -> tuple[float, float]:
    """Push a new note for apps-b; seconds from ``git push`` to the note on b, and to the status API
    showing apps-b Ready at the commit. The next push waits for both."""
    note = f"{phase}-{index}"
    sha = workload.commit(f"apps-b: {note}", apps_b=note)
    started = time.monotonic()
    hook = push_head(workload.repo)
    assert hook.endswith("-> 202"), f"the post-receive hook's webhook: {hook}"
    wait(
        daemon,
        lambda: note_of(admin, workload.namespace, f"{ENV_B}-settings") == note,
        f"{note} to be applied on b",
        timeout=30,
    )
    applied = time.monotonic() - started
    wait(daemon, lambda: all_ready(daemon, (ENV_B,), sha), f"apps-b Ready at {sha[:12]}", timeout=30)
    return applied, time.monotonic() - started


def push_head(repo: Repo) -> str:
    """``git push`` of HEAD; what the post-receive hook said of its webhook ("... -> 202")."""
    result = subprocess.run(
        ["git", "push", "origin", "HEAD:main"],
        cwd=repo.work,
        env=GIT_ENV,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    said = [line for line in result.stderr.splitlines() if "reconciler webhook" in line]
    return said[-1].removeprefix("remote:").strip() if said else f"nothing: {result.stderr!r}"


@dataclass
class Phase:
    """The latencies of one phase's pushes."""

    name: str
    applied: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.applied)

    def run(self, daemon: DaemonProcess, workload: Workload, admin: Admin, pushes: int = PUSHES) -> Phase:
        for index in range(pushes):
            applied, ready = push(daemon, workload, admin, index, self.name)
            self.applied.append(applied)
            self.ready.append(ready)
        print(
            f"[{self.name}] push -> applied on b: p50 {self.p50:.3f} s, max {max(self.applied):.3f} s; "
            f"push -> Ready at the revision: p50 {statistics.median(self.ready):.3f} s "
            f"({len(self.applied)} pushes: {', '.join(f'{t:.2f}' for t in self.applied)})"
        )
        return self


def assert_same_latency(baseline: Phase, measured: Phase) -> None:
    """p50 within +-50% of the baseline's. These figures are sub-second on an idle machine, where 50%
    is a few hundred ms and scheduling noise on a loaded 2-core machine is of the same order, so
    sub-second baselines also get 0.25 s of absolute slack on top of the 50%."""
    slack = 0.5 * baseline.p50 + (0.25 if baseline.p50 < 1.0 else 0.0)
    assert abs(measured.p50 - baseline.p50) <= slack, (
        f"{measured.name}: push -> applied p50 {measured.p50:.3f} s, baseline ({baseline.name}) "
        f"{baseline.p50:.3f} s, allowed +-{slack:.3f} s; {measured.applied} vs {baseline.applied}"
    )


def start_daemon(
    tmp_path: Path,
    workload: Workload,
    toolchain: Toolchain,
    started: list[DaemonProcess],
    *,
    kubeconfig_a: Path,
    kubeconfig_b: Path,
    control: str,
) -> tuple[DaemonProcess, str]:
    """The workload's initial commit pushed and a daemon on both clusters started; returns it with the
    commit, once every environment is Ready at it."""
    workload.write()
    sha = workload.repo.commit_and_push("initial")
    daemon = daemon_config(
        tmp_path,
        repo_url=workload.repo.url,
        kubeconfig=kubeconfig_b,
        environments=environments(),
        inventory_namespace=control,
        # the default is 60 signed deliveries a minute (429 beyond): a test pushes about 25 times, but
        # faster pushes or more of them must not be measured as a slow daemon
        webhooks={"rate_limit": 1000},
        **two_clusters(kubeconfig_a, kubeconfig_b, probe_interval=f"{PROBE_INTERVAL:g}s"),
    )
    workload.repo.install_hook(daemon.port, daemon.config_path.parent / "webhook-secret")
    started.append(daemon)
    daemon.start(toolchain)
    begun = time.monotonic()
    states = wait(
        daemon, lambda: all_ready(daemon, (*ENVS_A, ENV_B), sha), "every environment Ready", timeout=60
    )
    print(f"three environments on two clusters Ready {time.monotonic() - begun:.1f} s after the daemon")
    assert [s.get("cluster") for s in states] == ["a", "a", "b"], states
    for cluster in ("a", "b"):  # each cluster's requests timed apart
        assert daemon.metric(f"{REQUEST_SECONDS}_count", cluster=cluster) > 0, cluster
    return daemon, sha


# -- 1. a promotion across clusters -----------------------------------------------------------------


def test_ai_plus_promotion_from_staging_on_a_to_production_on_b(
    tmp_path: Path,
    repo: Repo,
    cluster: Cluster,
    cluster_a: Cluster,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    namespace_a: str,
    admin: Admin,
    admin_a: Admin,
    aiplus_namespaces: None,
    started: list[DaemonProcess],
) -> None:
    """tests/e2e/test_aiplus_promotion.py with staging on cluster a and production on cluster b: the
    promotion succeeds once production is Synced and Healthy on b, and production's objects are on b
    only (staging's on a only)."""
    shutil.copytree(ENVIRONMENTS, repo.work / "environments")
    repo.commit_and_push("environments")
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    keys = {identity: ApproverKey.create(key_dir, identity) for identity in IDENTITIES}
    approvers = [{"identity": i, "keys": [k.public_line]} for i, k in keys.items()]
    crds = {"path": "environments/cluster-addons/crds", "health_timeout": 60}
    daemon = daemon_config(
        tmp_path,
        repo_url=repo.url,
        kubeconfig=kubeconfig,
        environments=[
            # on b, the name every test on the shared cluster gives it: the CRDs stay there after a test,
            # marked with it, and an environment of another name would be refused them
            {"name": "cluster-addons", "cluster": "b", **crds},
            {"name": "cluster-addons-a", "cluster": "a", **crds},
            {
                "name": "aiplus-staging",
                "path": "environments/aiplus/staging",
                "cluster": "a",
                "health_timeout": 90,
            },
            {
                "name": "aiplus-production",
                "path": "environments/aiplus/production",
                "cluster": "b",
                "health_timeout": 90,
            },
        ],
        inventory_namespace=namespace,  # on both clusters (namespace_a is its twin on a)
        resync_interval=5,  # the ServiceMonitor CRD comes with the add-ons: until then, retried this often
        promotions={
            "approvers": approvers,
            "pipelines": [
                {
                    "name": "aiplus",
                    "from": "aiplus-staging",
                    "to": "aiplus-production",
                    "approvals": 2,
                    "approvers": ["alice@example.com", "bob@example.com"],
                }
            ],
        },
        **two_clusters(cluster_a.kubeconfig_path, kubeconfig, probe_interval=f"{PROBE_INTERVAL:g}s"),
    )
    repo.install_hook(daemon.port, tmp_path / "webhook-secret")
    provisioners = [VolumeProvisioner(c) for c in (cluster_a, cluster)]  # the db StatefulSets' claims
    for provisioner in provisioners:
        provisioner.start()
    try:
        started.append(daemon)
        daemon.start(toolchain)
        setup = Setup(
            daemon, repo, "aiplus-staging", "aiplus-production", namespace, tmp_path, toolchain, keys
        )
        begun = time.monotonic()
        for env in ("cluster-addons", "cluster-addons-a", "aiplus-staging", "aiplus-production"):
            setup.wait_ready(env)
        print(f"four environments on two clusters Ready in {time.monotonic() - begun:.1f} s")
        assert setup.daemon.environment("aiplus-staging")["cluster"] == "a"
        assert setup.daemon.environment("aiplus-production")["cluster"] == "b"

        overlay = repo.work / "environments/aiplus/staging/kustomization.yaml"
        overlay.write_text(overlay.read_text().replace("newTag: 1.13.0-rc.2", "newTag: 1.13.0"))
        revision = repo.commit_and_push("aiplus staging: 1.13.0")
        setup.wait_ready("aiplus-staging", revision)

        status, promotion = setup.request()
        assert status == 201, promotion
        assert sorted(i["newTag"] for i in promotion["images"]) == ["1.13.0", "1.13.0"]
        for approver in ("alice@example.com", "bob@example.com"):
            status, body = setup.decide(promotion, approver)
            assert status == 200, body
        done = setup.wait_phase(promotion["id"], "Succeeded", "Failed", timeout=120)
        assert done["phase"] == "Succeeded", done
        assert setup.commits_with(f"Promotion: {promotion['id']}") == [done["commit"]]
        changed = git("show", "--format=", "--name-only", done["commit"], cwd=repo.work).split()
        assert changed == ["environments/aiplus/production/kustomization.yaml"]

        production = daemon.environment("aiplus-production")
        assert (production["sync"], production["health"]) == ("Synced", "Healthy"), production
        assert production["revision"] == done["commit"], production
        for name, image in (("aiplus-api", "api"), ("aiplus-web", "web")):
            # production on b, at the promoted tags
            _, live = admin.call("GET", f"/apis/apps/v1/namespaces/aiplus-production/deployments/{name}")
            containers = live["spec"]["template"]["spec"]["containers"]
            assert containers[0]["image"] == f"ghcr.io/example/aiplus/{image}:1.13.0"
            assert live["status"].get("updatedReplicas") == live["spec"]["replicas"]
            # staging on a, at the tags it was given
            _, live = admin_a.call("GET", f"/apis/apps/v1/namespaces/aiplus-staging/deployments/{name}")
            assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.13.0")
        # each overlay's objects on its own cluster only
        assert admin_a.call("GET", "/api/v1/namespaces/aiplus-production")[0] == 404
        assert admin.call("GET", "/api/v1/namespaces/aiplus-staging")[0] == 404
        for kind in ("deployments", "statefulsets"):
            _, on_a = admin_a.call("GET", f"/apis/apps/v1/{kind}")
            assert not [d for d in on_a["items"] if d["metadata"]["namespace"] == "aiplus-production"]
    finally:
        for provisioner in provisioners:
            provisioner.stop()


# -- 2. cluster a down --------------------------------------------------------------------------------


def test_cluster_a_down_stalls_its_environments_only_and_they_converge_when_it_is_back(
    tmp_path: Path,
    repo: Repo,
    cluster_a: Cluster,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    namespace_a: str,
    control: str,
    admin: Admin,
    admin_a: Admin,
    started: list[DaemonProcess],
) -> None:
    """Kill a's API server: within the probe interval (+ a few s) a's environments are Stalled with
    ClusterUnreachable, /readyz stays 200 and names a, reconciler_cluster_up{cluster="a"} is 0, and
    pushes to b are applied as fast as with a up. Start it again: a's environments converge (to a commit
    pushed while a was down) without a push, and nothing on a was deleted meanwhile."""
    workload = Workload(repo, namespace)
    daemon, _ = start_daemon(
        tmp_path,
        workload,
        toolchain,
        started,
        kubeconfig_a=cluster_a.kubeconfig_path,
        kubeconfig_b=kubeconfig,
        control=control,
    )
    wait(daemon, lambda: clusters_up(daemon) == {"a": 1, "b": 1}, "both clusters up", PROBE_INTERVAL + 5)
    on_a = [obj for env in ENVS_A for obj in workload.objects(env)]
    before = uids(admin_a, namespace, on_a)
    assert all(before.values()), before

    baseline = Phase("a up").run(daemon, workload, admin)

    cluster_a.stop("kube-apiserver", lambda _: None)  # SIGKILL, by its recorded pid
    stopped = time.monotonic()

    def stalled() -> list[dict[str, Any]] | None:
        states = [daemon.environment(env) for env in ENVS_A]
        ok = all((s.get("condition"), s.get("reason")) == ("Stalled", "ClusterUnreachable") for s in states)
        return states if ok else None

    states = wait(daemon, stalled, "a's environments Stalled (ClusterUnreachable)", PROBE_INTERVAL + 5)
    print(f"a's environments Stalled {time.monotonic() - stopped:.2f} s after its API server was killed")
    print(f"their message: {states[0].get('message')!r}")
    assert all(s.get("message") for s in states), states
    status, body = wait(
        daemon, lambda: degraded(daemon, "a"), "/readyz to name cluster a", PROBE_INTERVAL + 5
    )
    assert (status, body.get("ready")) == (200, True), body
    assert not any(str(d).startswith("cluster b") for d in body["degraded"]), body
    print(f"/readyz: {status} {body}")
    wait(daemon, lambda: clusters_up(daemon) == {"a": 0, "b": 1}, "cluster a down, b up", PROBE_INTERVAL + 5)
    assert daemon.environment(ENV_B)["condition"] == "Ready"

    down = Phase("a down").run(daemon, workload, admin)
    assert stalled(), [daemon.environment(env) for env in ENVS_A]
    assert readyz(daemon)[0] == 200

    # a's desired state changes while a is away; nobody pushes after a is back
    last = workload.commit("apps-a1, apps-a2: while a is down", apps_a1="while-down", apps_a2="while-down")
    assert push_head(repo).endswith("-> 202")
    wait(daemon, lambda: daemon.environment(ENV_B).get("revision") == last, "the last commit fetched", 30)
    assert stalled(), [daemon.environment(env) for env in ENVS_A]

    starting = time.monotonic()
    cluster_a.start("kube-apiserver", lambda _: None)  # returns once its /readyz says 200
    back = time.monotonic()
    wait(daemon, lambda: all_ready(daemon, ENVS_A, last), "a's environments Ready at the last commit", 60)
    print(
        f"a's environments Ready at the last commit {time.monotonic() - starting:.2f} s after a's API server "
        f"was started again (its /readyz said 200 after {back - starting:.2f} s)"
    )
    assert note_of(admin_a, namespace, "apps-a1-settings") == "while-down"
    assert note_of(admin_a, namespace, "apps-a2-settings") == "while-down"
    assert uids(admin_a, namespace, on_a) == before  # nothing on a deleted (and re-created) meanwhile
    wait(
        daemon, lambda: clusters_up(daemon) == {"a": 1, "b": 1}, "both clusters up again", PROBE_INTERVAL + 5
    )
    wait(daemon, lambda: (r := readyz(daemon))[0] == 200 and r[1].get("degraded") == [], "/readyz whole", 10)

    assert_same_latency(baseline, down)


# -- 3. cluster a slow ----------------------------------------------------------------------------------


def test_a_slow_cluster_a_leaves_pushes_to_b_as_fast(
    tmp_path: Path,
    repo: Repo,
    cluster_a: Cluster,
    kubeconfig: Path,
    toolchain: Toolchain,
    namespace: str,
    namespace_a: str,
    control: str,
    admin: Admin,
    admin_a: Admin,
    started: list[DaemonProcess],
) -> None:
    """The daemon reaches a through a proxy; after a baseline, every chunk sent to a's API server is
    held 5 s (on the connections already open too) and a change to a's environments is pushed, so a
    sync to a is under way: pushes to b are applied as fast as before."""
    workload = Workload(repo, namespace)
    with DelayProxy(*server_address(cluster_a.kubeconfig_path)) as proxy:
        try:
            daemon, _ = start_daemon(
                tmp_path,
                workload,
                toolchain,
                started,
                kubeconfig_a=proxied_kubeconfig(cluster_a.kubeconfig_path, tmp_path / "kubeconfig-a", proxy),
                kubeconfig_b=kubeconfig,
                control=control,
            )
            baseline = Phase("a fast").run(daemon, workload, admin)

            slow_before = requests_over(daemon, "a", "2.5")
            proxy.delay = SLOW
            workload.commit("apps-a1, apps-a2: to a slow cluster", apps_a1="slow", apps_a2="slow")
            pushed = time.monotonic()
            assert push_head(repo).endswith("-> 202")
            slow = Phase(f"a {SLOW:g} s slow").run(daemon, workload, admin)
            measured = time.monotonic() - pushed
            states = {env: daemon.environment(env) for env in ENVS_A}
            print(
                "a's environments at the end of the slow phase: "
                + "; ".join(f"{e}: {s.get('condition')} {s.get('reason')}" for e, s in states.items())
            )
            # the delay was in force: a's change took at least one delay to reach a (what b's pushes were
            # measured beside)
            wait(daemon, lambda: a_notes(admin_a, namespace) == {"slow"}, "a's change applied on a", 120)
            took = time.monotonic() - pushed
            print(
                f"a's change applied {took:.1f} s after its push; b's slow-phase pushes took {measured:.1f} s"
            )
            assert took >= SLOW
            slow_requests = requests_over(daemon, "a", "2.5") - slow_before
            print(f"requests to a over 2.5 s meanwhile ({REQUEST_SECONDS}): {slow_requests:g}")
            assert slow_requests > 0
            print(f"connections through the proxy: {proxy.connections}")
            assert proxy.connections > 0
            assert readyz(daemon)[0] == 200
            assert_same_latency(baseline, slow)
        finally:
            proxy.delay = 0.0  # let the daemon's calls to a end before it is stopped
