"""The pure parts of the dev-cluster builder: wrapper go.mod, linker flags, Go version checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.devcluster import build, versions
from reconciler.devcluster.errors import DevClusterError

UPSTREAM = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-aggregator => ./staging/src/k8s.io/kube-aggregator
)
"""


def test_wrapper_gomod_replaces_every_staging_module_with_its_published_version() -> None:
    """Each ./staging replacement becomes the v0.<minor>.<patch> release of that module."""
    gomod = build.kubernetes_wrapper_gomod(UPSTREAM, "v1.36.3", "1.26.0")
    assert "require k8s.io/kubernetes v1.36.3" in gomod
    assert "\tk8s.io/api => k8s.io/api v0.36.3\n" in gomod
    assert "\tk8s.io/client-go => k8s.io/client-go v0.36.3\n" in gomod
    assert "\tk8s.io/kube-aggregator => k8s.io/kube-aggregator v0.36.3\n" in gomod
    assert "./staging" not in gomod
    assert "go 1.26.0" in gomod


def test_wrapper_gomod_refuses_a_gomod_without_staging_modules() -> None:
    """A go.mod that is not Kubernetes's is an error, not an empty replace block."""
    with pytest.raises(ValueError, match="staging"):
        build.kubernetes_wrapper_gomod("module example.com/x\n", "v1.36.3", "1.26.0")


def test_wrapper_gomod_refuses_a_non_release_version() -> None:
    """Only vMAJOR.MINOR.PATCH releases map onto staging versions."""
    with pytest.raises(ValueError, match="release version"):
        build.kubernetes_wrapper_gomod(UPSTREAM, "master", "1.26.0")


def test_ldflags_stamp_the_version() -> None:
    """Without the stamp, kubectl and clients would report v0.0.0."""
    flags = build.kubernetes_ldflags("v1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("go version go1.26.8 linux/amd64", (1, 26, 8)),
        ("go version go1.27 linux/arm64", (1, 27, 0)),
        ("something else", None),
    ],
)
def test_parse_go_version(output: str, expected: tuple[int, int, int] | None) -> None:
    """`go version` output parses into a comparable tuple."""
    assert build.parse_go_version(output) == expected


def test_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Go on PATH, the error names the step and what to install, with no traceback."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("RECONCILER_GO", raising=False)
    with pytest.raises(DevClusterError) as error:
        build.ensure_toolchain(lambda _: None, root=tmp_path / "cache")
    assert error.value.step == "find the Go toolchain"
    assert "RECONCILER_GO" in str(error.value)


def test_failed_build_step_names_the_step_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A go command that fails makes an error naming the step, the log file and its last lines."""
    fake_go = tmp_path / "go"
    fake_go.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo "go version go1.26.8 linux/amd64"; exit 0; fi\n'
        'echo "proxy said: 404 Not Found" >&2\n'
        "exit 1\n"
    )
    fake_go.chmod(0o755)
    monkeypatch.setenv("RECONCILER_GO", str(fake_go))
    with pytest.raises(DevClusterError) as error:
        build.ensure_toolchain(lambda _: None, root=tmp_path / "cache")
    message = str(error.value)
    assert error.value.step == f"download k8s.io/kubernetes@{versions.KUBERNETES_VERSION}"
    assert error.value.log_file is not None
    assert str(error.value.log_file) in message
    assert "proxy said: 404 Not Found" in message
    # The failed build left no half-built component behind.
    assert not build.is_built(versions.KUBERNETES, tmp_path / "cache")


def test_old_go_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Go older than the pinned Kubernetes needs is refused before any download."""
    fake_go = tmp_path / "go"
    fake_go.write_text('#!/bin/sh\necho "go version go1.22.1 linux/amd64"\n')
    fake_go.chmod(0o755)
    monkeypatch.setenv("RECONCILER_GO", str(fake_go))
    with pytest.raises(DevClusterError) as error:
        build.ensure_toolchain(lambda _: None, root=tmp_path / "cache")
    assert error.value.step == "check the Go version"
    assert "too old" in str(error.value)


def test_missing_apt_get_for_prometheus_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every Go-built component cached but no apt-get, the Prometheus step fails by name."""
    root = tmp_path / "cache"
    for component in versions.ALL_COMPONENTS:
        if component != versions.PROMETHEUS:
            directory = build.component_dir(component, root)
            directory.mkdir(parents=True)
            for name in build._binaries_of(component):
                (directory / name).write_text("")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevClusterError) as error:
        build.ensure_toolchain(lambda _: None, root=root)
    assert error.value.step == f"download prometheus {versions.PROMETHEUS_DEBIAN_VERSION} with apt-get"
    assert "apt-get" in str(error.value)
    assert not build.is_built(versions.PROMETHEUS, root)


def test_prometheus_is_cached_by_version() -> None:
    """prometheus and promtool live under bin/prometheus-<version>/."""
    paths = build.toolchain_paths(Path("/cache"))
    assert paths.prometheus == Path(f"/cache/bin/prometheus-{versions.PROMETHEUS_VERSION}/prometheus")
    assert paths.promtool.parent == paths.prometheus.parent
