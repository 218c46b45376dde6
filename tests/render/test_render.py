"""Rendering with the real pinned kustomize: restrictions, errors, the content cache."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.devcluster.build import Toolchain
from reconciler.render import Renderer, RenderError, RenderOptions

SECRET_LINE = "password: TOP-SECRET-CANARY-91b2"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small environments repository: base + staging overlay."""
    root = tmp_path / "repo"
    write(root / "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(root / "base/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {k: v}\n")
    write(root / "staging/kustomization.yaml", "resources: [../base]\nnamespace: staging\n")
    return root


@pytest.fixture
def options(toolchain: Toolchain) -> RenderOptions:
    return RenderOptions(kustomize=toolchain.kustomize, timeout=30)


async def test_overlay_renders_and_is_cached_by_content(repo: Path, options: RenderOptions) -> None:
    """An unchanged tree renders once; touching an input renders again."""
    renderer = Renderer()
    first = await renderer.render(repo, repo / "staging", options)
    assert [(m.key.kind, m.key.namespace, m.key.name) for m in first.manifests] == [
        ("ConfigMap", "staging", "app")
    ]
    second = await renderer.render(repo, repo / "staging", options)
    assert second.cached
    assert renderer.renders == 1
    write(
        repo / "base/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {k: changed}\n"
    )
    third = await renderer.render(repo, repo / "staging", options)
    assert not third.cached
    assert renderer.renders == 2
    assert third.manifests[0].body["data"] == {"k": "changed"}


async def test_the_cache_keeps_only_each_environments_latest_render(
    repo: Path, options: RenderOptions
) -> None:
    """A long-running daemon syncs many revisions: only the newest render of each environment is kept
    (memory does not grow with revisions), while other environments' renders stay cached."""
    renderer = Renderer()
    write(repo / "production/kustomization.yaml", "resources: [../base]\nnamespace: production\n")
    await renderer.render(repo, repo / "production", options)
    for revision in range(5):
        write(
            repo / "staging/extra.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: r{revision}}}\n"
        )
        write(repo / "staging/kustomization.yaml", "resources: [../base, extra.yaml]\nnamespace: staging\n")
        await renderer.render(repo, repo / "staging", options)
    assert len(renderer._cache) == 2  # staging's newest and production's
    assert (await renderer.render(repo, repo / "production", options)).cached
    assert (await renderer.render(repo, repo / "staging", options)).cached
    assert renderer.renders == 6


async def test_parent_outside_the_repository_is_refused(repo: Path, options: RenderOptions) -> None:
    """../ that leaves the repository is refused before kustomize runs, naming the entry."""
    outside = repo.parent / "outside"
    write(outside / "kustomization.yaml", "resources: [s.yaml]\n")
    write(
        outside / "s.yaml",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{{SECRET_LINE}}}\n",
    )
    write(repo / "staging/kustomization.yaml", "resources: [../base, ../../outside]\n")
    renderer = Renderer()
    with pytest.raises(RenderError) as error:
        await renderer.render(repo, repo / "staging", options)
    assert "'../../outside' points outside the repository" in str(error.value)
    assert "TOP-SECRET" not in str(error.value)
    assert renderer.renders == 0


async def test_symlink_escaping_the_repository_is_refused(repo: Path, options: RenderOptions) -> None:
    """A symlink inside the repository that resolves outside it is refused, without its contents."""
    secret = repo.parent / "host-secret.yaml"
    write(secret, f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{{SECRET_LINE}}}\n")
    (repo / "base/leak.yaml").symlink_to(secret)
    write(repo / "base/kustomization.yaml", "resources: [cm.yaml, leak.yaml]\n")
    with pytest.raises(RenderError) as error:
        await Renderer().render(repo, repo / "staging", options)
    assert "points through a symlink outside the repository" in str(error.value)
    assert "TOP-SECRET" not in str(error.value)


async def test_remote_base_is_refused(repo: Path, options: RenderOptions) -> None:
    """A remote base is refused unless explicitly allowed."""
    write(
        repo / "staging/kustomization.yaml",
        "resources:\n- ../base\n- https://github.com/example/app//deploy?ref=v1\n",
    )
    with pytest.raises(RenderError, match="remote reference; remote bases are refused"):
        await Renderer().render(repo, repo / "staging", options)


async def test_exec_plugin_is_refused(repo: Path, options: RenderOptions) -> None:
    """A KRM/exec function generator is refused unless plugins are allowed."""
    write(
        repo / "staging/gen.yaml",
        """
        apiVersion: example.dev/v1
        kind: Exfiltrate
        metadata:
          name: x
          annotations:
            config.kubernetes.io/function: |
              exec:
                path: /bin/sh
        """,
    )
    write(repo / "staging/kustomization.yaml", "resources: [../base]\ngenerators: [gen.yaml]\n")
    with pytest.raises(RenderError, match="KRM/exec function plugin; plugins are refused"):
        await Renderer().render(repo, repo / "staging", options)


async def test_helm_is_refused(repo: Path, options: RenderOptions) -> None:
    """helmCharts needs an explicit opt-in."""
    write(repo / "staging/kustomization.yaml", "resources: [../base]\nhelmCharts: [{name: redis, repo: x}]\n")
    with pytest.raises(RenderError, match="helm chart inflation is disabled"):
        await Renderer().render(repo, repo / "staging", options)


async def test_duplicate_object_names_both_sources(repo: Path, options: RenderOptions) -> None:
    """The same object from two files is an error naming both files."""
    write(
        repo / "staging/dup.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {k: other}\n",
    )
    write(repo / "staging/kustomization.yaml", "resources: [../base, dup.yaml]\n")
    with pytest.raises(RenderError) as error:
        await Renderer().render(repo, repo / "staging", options)
    message = str(error.value)
    assert "ConfigMap/app is defined twice" in message
    assert "base/cm.yaml" in message
    assert "staging/dup.yaml" in message


async def test_kustomize_failure_is_reported_with_the_environment(repo: Path, options: RenderOptions) -> None:
    """A patch that targets nothing makes a RenderError that names the environment and kustomize's reason."""
    write(
        repo / "staging/patch.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: missing}\ndata: {a: b}\n",
    )
    write(repo / "staging/kustomization.yaml", "resources: [../base]\npatches: [{path: patch.yaml}]\n")
    with pytest.raises(RenderError, match=r"render of staging failed \(kustomize exit 1\)"):
        await Renderer().render(repo, repo / "staging", options)


async def test_output_cap_is_enforced(repo: Path, toolchain: Toolchain) -> None:
    """A render larger than the cap is refused rather than loaded."""
    small = RenderOptions(kustomize=toolchain.kustomize, max_output_bytes=20)
    with pytest.raises(RenderError, match="produced more than 20 bytes"):
        await Renderer().render(repo, repo / "staging", small)


def test_input_directories_name_what_a_commit_must_touch_to_change_the_key(
    repo: Path, options: RenderOptions
) -> None:
    """The directories an overlay reads (as written and through symlinks); an edit elsewhere keeps
    its key, an edit inside them changes it."""
    write(repo / "shared/real/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    (repo / "links").mkdir()
    (repo / "links/extra.yaml").symlink_to("../shared/real/extra.yaml")
    write(repo / "staging/kustomization.yaml", "resources: [../base, ../links/extra.yaml]\n")
    write(repo / "production/kustomization.yaml", "resources: [../base]\n")
    renderer = Renderer()
    key, directories = renderer.inputs_of(repo, repo / "staging", options)
    assert directories == {"staging", "base", "links", "shared/real"}
    assert key == renderer.inputs_key(repo, repo / "staging", options)
    (repo / "production/kustomization.yaml").write_text("resources: [../base]\nnamespace: p\n")
    assert renderer.inputs_of(repo, repo / "staging", options)[0] == key
    (repo / "shared/real/extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\n")
    assert renderer.inputs_of(repo, repo / "staging", options)[0] != key
