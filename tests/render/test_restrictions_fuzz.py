"""Generated kustomization trees against the render restrictions and the real kustomize.

Each tree is an overlay → base → component chain whose kustomizations use every path-bearing field the
walker knows (resources, bases, components, crds, configurations, openapi, patches of each kind,
replacements, generators' files/envs/env, builtin plugin configurations under generators, transformers
and validators), with keys in any case and Unicode folding (ſ, the Kelvin sign), pointing inside the
repository or outside it: ../ escapes, absolute paths, symlinks out, http:// URLs served by a local
server and git clones of a local repository. Outside the repository lives a sentinel that kustomize
puts in its output (or fetches over http) whenever it reads one of those references; the references
are real (``test_outside_references_are_read_without_the_walker`` shows kustomize reading each one).

Properties: the walker refuses exactly the trees with a non-exact key or an outside reference (many
examples, no kustomize), and for every tree either the walker refuses it or kustomize, run on it,
reads nothing outside the repository (a bounded sample, with the real kustomize).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler.devcluster.build import Toolchain
from reconciler.render.restrictions import LoadPolicy, RestrictionError, check

SENTINEL = "OUTSIDE-SENTINEL-5e0c1f9a"
DIRECTORIES = ("overlay", "base", "component")
# field (with the generator's sub-field after a dot) -> the file outside the repository it would read
FILE_FIELDS = {
    "crds": "crd.yaml",
    "configurations": "config.yaml",
    "openapi": "schema.json",
    "patchesStrategicMerge": "patch.yaml",
    "patches": "patch.yaml",
    "patchesJson6902": "ops.yaml",
    "replacements": "replacement.yaml",
    "configMapGenerator.files": "secret.txt",
    "configMapGenerator.envs": "secret.env",
    "configMapGenerator.env": "secret.env",
    "secretGenerator.files": "secret.txt",
    "secretGenerator.envs": "secret.env",
    "secretGenerator.env": "secret.env",
}
DIR_FIELDS = ("resources", "bases", "components")
PLUGIN_FIELDS = ("generators", "transformers", "validators")
FIELDS = (*DIR_FIELDS, *FILE_FIELDS, *PLUGIN_FIELDS)
INSIDE = ("inside", "inside-link")
OUTSIDE = ("parent", "absolute", "link-out", "http", "git")
NO_HASH = {"disableNameSuffixHash": True}
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: {value}}}\n"


@dataclass(frozen=True)
class Spelling:
    """How a key is written: characters whose bit is set in ``case`` swap case, and an s or k whose bit
    is set in ``fold`` becomes ſ or the Kelvin sign (Go folds both back)."""

    case: int = 0
    fold: int = 0

    def apply(self, name: str) -> str:
        out = []
        for index, ch in enumerate(name):
            if self.fold >> index & 1 and ch in "sS":
                out.append("\u017f")
            elif self.fold >> index & 1 and ch in "kK":
                out.append("\u212a")
            else:
                out.append(ch.swapcase() if self.case >> index & 1 else ch)
        return "".join(out)


@dataclass(frozen=True)
class Slot:
    """One reference in one kustomization: the field, how its key (and the nested path key) is spelled,
    where it points, and for plugin fields whether the plugin configuration itself is the outside
    reference (else the path inside the configuration is)."""

    field: str
    key: Spelling
    nested: Spelling
    ref: str
    entry: bool

    def exact(self) -> bool:
        top, _, sub = self.field.partition(".")
        names = [(top, self.key), (sub or _NESTED.get(top, ""), self.nested)]
        return all(not name or spelling.apply(name) == name for name, spelling in names)


# the nested key that carries the path, for fields whose entries are mappings or plugin configurations
_NESTED = {
    "openapi": "path",
    "patches": "path",
    "patchesJson6902": "path",
    "replacements": "path",
    "generators": "files",
    "transformers": "path",
    "validators": "path",
}

spellings = st.one_of(
    st.just(Spelling()),
    st.builds(Spelling, st.integers(0, 2**24 - 1), st.integers(0, 2**24 - 1)),
)
slots = st.builds(
    Slot,
    field=st.sampled_from(FIELDS),
    key=spellings,
    nested=spellings,
    ref=st.sampled_from((*INSIDE, *OUTSIDE)),
    entry=st.booleans(),
)
trees = st.fixed_dictionaries({name: st.lists(slots, max_size=3) for name in DIRECTORIES})
# mostly clean trees with the odd attack, for the runs of the real kustomize
clean_slots = st.builds(
    Slot,
    field=st.sampled_from(FIELDS),
    key=st.one_of(st.just(Spelling()), st.just(Spelling()), spellings),
    nested=st.one_of(st.just(Spelling()), st.just(Spelling()), spellings),
    ref=st.sampled_from((*INSIDE, *INSIDE, *INSIDE, *OUTSIDE)),
    entry=st.booleans(),
)
clean_trees = st.fixed_dictionaries({name: st.lists(clean_slots, max_size=2) for name in DIRECTORIES})


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        return


@dataclass
class World:
    """Everything outside the repositories: the sentinel files, a git repository of them, and an http
    server serving them that records every request."""

    root: Path
    outside: Path
    git: Path
    url: str
    requests: list[str]

    def new_repo(self) -> Path:
        """A fresh repository directory beside ``outside`` (so ../../outside from a kustomization of it
        is the outside directory)."""
        return Path(tempfile.mkdtemp(prefix="repo-", dir=self.root))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_outside(outside: Path) -> None:
    """The sentinel world: every file a field could read, each surfacing the sentinel when read."""
    write(outside / "kustomization.yaml", "resources: [cm.yaml]\n")
    write(outside / "cm.yaml", CONFIGMAP.format(name="outside", value=SENTINEL))
    write(outside / "component/kustomization.yaml", "kind: Component\nresources: [cm.yaml]\n")
    write(outside / "component/cm.yaml", CONFIGMAP.format(name="outside-component", value=SENTINEL))
    write(outside / "app/kustomization.yaml", "resources: [cm.yaml]\n")
    write(outside / "app/cm.yaml", CONFIGMAP.format(name="outside-app", value=SENTINEL))
    write(
        outside / "patch.yaml",
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app}}\ndata: {{s: {SENTINEL}}}\n",
    )
    write(outside / "ops.yaml", f"- op: add\n  path: /data/s\n  value: {SENTINEL}\n")
    write(
        outside / "replacement.yaml",
        f"sourceValue: {SENTINEL}\ntargets: [{{select: {{kind: ConfigMap, name: app}}, fieldPaths: [data.s], "
        "options: {create: true}}]\n",
    )
    write(outside / "crd.yaml", f"{{}}\n# {SENTINEL}\n")
    write(outside / "config.yaml", f"{{}}\n# {SENTINEL}\n")
    write(outside / "schema.json", f'{{"{SENTINEL}": {{}}}}\n')
    write(outside / "secret.txt", f"{SENTINEL}\n")
    write(outside / "secret.env", f"S={SENTINEL}\n")
    generator = (
        "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: outside-gen}\n"
        f"literals: [s={SENTINEL}]\n"
    )
    transformer = (
        "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: outside-patch}\n"
        f"patch: '{{apiVersion: v1, kind: ConfigMap, metadata: {{name: app}}, data: {{s: {SENTINEL}}}}}'\n"
    )
    for name, config in (("generators", generator), ("transformers", transformer)):
        write(outside / f"{name[:-1]}.yaml", config)  # generator.yaml, transformer.yaml
        write(outside / name / "config.yaml", config)
        write(outside / name / "kustomization.yaml", "resources: [config.yaml]\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The outside world, its git repository and its http server (stopped at the end)."""
    root = tmp_path_factory.mktemp("world")
    outside = root / "outside"
    write_outside(outside)
    git = root / "outside-git"
    shutil.copytree(outside, git)
    environment = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    environment |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "outside"]):
        subprocess.run(["git", *args], cwd=git, check=True, env=environment, capture_output=True)
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})

    def serve(*args: Any) -> http.server.SimpleHTTPRequestHandler:
        return handler(*args, directory=str(outside))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield World(root, outside, git, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Builder:
    """Writes one generated tree into a repository."""

    def __init__(self, world: World, repo: Path) -> None:
        self.world = world
        self.repo = repo

    def reference(self, directory: Path, index: int, ref: str, outside_name: str, inside: str) -> str:
        """The value of a reference: ``inside`` (relative to ``directory``, already written) or the
        outside target ``outside_name`` reached by ``ref``."""
        target = self.world.outside / outside_name
        if ref == "inside":
            return inside
        if ref == "inside-link":
            link = directory / f"link-in-{index}-{Path(inside).name}"
            link.symlink_to(inside)
            return link.name
        if ref == "parent":
            return os.path.relpath(target, directory)
        if ref == "absolute":
            return str(target)
        if ref == "link-out":
            link = directory / f"link-out-{index}-{target.name}"
            link.symlink_to(target)
            return link.name
        if ref == "http" and target.is_dir():  # a file of that directory over http
            return f"{self.world.url}/{outside_name + '/' if outside_name else ''}cm.yaml"
        if ref == "http" or not target.is_dir():
            return f"{self.world.url}/{outside_name}"
        return f"file://{self.world.git}//{outside_name}"

    def build(self, tree: dict[str, list[Slot]]) -> None:
        for name in DIRECTORIES:
            directory = self.repo / name
            directory.mkdir()
            document: dict[str, Any] = {}
            if name == "overlay":
                document = {"resources": ["../base"], "components": ["../component"]}
            else:  # the ConfigMap "app" (patched by the slots) and "component"
                document = {"kind": "Component"} if name == "component" else {}
                document["configMapGenerator"] = [
                    {"name": "app" if name == "base" else name, "literals": ["k=v"], "options": NO_HASH}
                ]
            for index, slot in enumerate(tree[name]):
                self.add(document, directory, index, slot)
            write(
                directory / "kustomization.yaml",
                yaml.safe_dump(document, allow_unicode=True, sort_keys=False),
            )

    def add(self, document: dict[str, Any], directory: Path, index: int, slot: Slot) -> None:
        top, _, sub = slot.field.partition(".")
        key = slot.key.apply(top)
        nested = slot.nested.apply(sub or _NESTED.get(top, "path"))
        label = f"{directory.name}-{index}"
        value: Any
        if top in ("resources", "bases"):
            write(directory / f"inside-{index}.yaml", CONFIGMAP.format(name=label, value="v"))
            value = [self.reference(directory, index, slot.ref, "", f"inside-{index}.yaml")]
        elif top == "components":
            write(directory / f"comp-{index}/kustomization.yaml", "kind: Component\nresources: [cm.yaml]\n")
            write(directory / f"comp-{index}/cm.yaml", CONFIGMAP.format(name=label, value="v"))
            value = [self.reference(directory, index, slot.ref, "component", f"comp-{index}")]
        elif top in PLUGIN_FIELDS:
            value = [self.plugin(directory, index, slot, nested, label)]
        else:
            path = self.reference(
                directory,
                index,
                slot.ref,
                FILE_FIELDS[slot.field],
                self.inside_file(directory, index, slot.field),
            )
            value = {
                "crds": [path],
                "configurations": [path],
                "patchesStrategicMerge": [path],
                "openapi": {nested: path},
                "patches": [{nested: path}],
                "patchesJson6902": [
                    {nested: path, "target": {"version": "v1", "kind": "ConfigMap", "name": "app"}}
                ],
                "replacements": [{nested: path}],
            }.get(top)
            if value is None:  # a generator
                source = path if sub == "env" else [f"f{index}={path}" if sub == "files" else path]
                value = [{"name": f"g-{label}", nested: source}]
        if isinstance(document.get(key), list) and isinstance(value, list):
            document[key] = [*document[key], *value]
        else:
            document[key] = value

    def inside_file(self, directory: Path, index: int, field: str) -> str:
        """A valid file inside the repository for ``field``; its name, relative to ``directory``."""
        name = FILE_FIELDS[field]
        inside = f"in-{index}-{name}"
        content = {
            "patch.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n"
            f"data: {{p{index}: v}}\n",
            "ops.yaml": f"- op: add\n  path: /data/j{index}\n  value: v\n",
            "replacement.yaml": "sourceValue: v\ntargets: [{select: {kind: ConfigMap, name: app}, "
            f"fieldPaths: [data.r{index}], options: {{create: true}}}}]\n",
            "crd.yaml": "{}\n",
            "config.yaml": "{}\n",
            "schema.json": "{}\n",
            "secret.txt": "inside\n",
            "secret.env": "S=inside\n",
        }[name]
        write(directory / inside, content)
        return inside

    def plugin(self, directory: Path, index: int, slot: Slot, nested: str, label: str) -> str:
        """A builtin plugin configuration file for a generators/transformers/validators slot."""
        top = slot.field
        if slot.entry and slot.ref not in INSIDE:  # the configuration itself is outside
            if slot.ref == "http":
                return f"{self.world.url}/{'transformer' if top == 'validators' else top[:-1]}.yaml"
            # kustomize reads no file outside a kustomization's directory, but it builds a directory
            return self.reference(
                directory, index, slot.ref, "transformers" if top == "validators" else top, ""
            )
        if top == "generators":
            path = self.reference(
                directory,
                index,
                slot.ref,
                "secret.txt",
                self.inside_file(directory, index, "secretGenerator.files"),
            )
            config = {"kind": "ConfigMapGenerator", "metadata": {"name": f"p-{label}"}, nested: [f"f={path}"]}
        else:
            if top == "validators":  # a validator may not change anything: patch nothing new
                write(
                    directory / f"noop-{index}.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n",
                )
                inside = f"noop-{index}.yaml"
            else:
                inside = self.inside_file(directory, index, "patches")
            path = self.reference(directory, index, slot.ref, "patch.yaml", inside)
            config = {"kind": "PatchTransformer", "metadata": {"name": f"p-{label}"}, nested: path}
        write(
            directory / f"plugin-{index}.yaml",
            yaml.safe_dump({"apiVersion": "builtin", **config}, allow_unicode=True),
        )
        return f"plugin-{index}.yaml"


def expected_refusal(tree: dict[str, list[Slot]]) -> bool:
    """The walker must refuse a tree with any non-exact key or any reference leaving the repository."""
    return any(not slot.exact() or slot.ref not in INSIDE for slots in tree.values() for slot in slots)


@contextlib.contextmanager
def built(world: World, tree: dict[str, list[Slot]]) -> Iterator[Path]:
    repo = world.new_repo()
    try:
        _Builder(world, repo).build(tree)
        yield repo
    finally:
        shutil.rmtree(repo)


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tree=trees)
def test_walker_refuses_exactly_the_trees_with_case_variants_or_outside_references(
    world: World, tree: dict[str, list[Slot]]
) -> None:
    """A generated tree is refused exactly when one of its keys is not spelled exactly or one of its
    references leaves the repository; clean trees (inside references, links inside) are accepted."""
    with built(world, tree) as repo:
        refusal = ""
        try:
            check(repo, repo / "overlay", LoadPolicy())
        except RestrictionError as exc:
            refusal = str(exc) or "refused"
    event("refused" if refusal else "accepted")
    if expected_refusal(tree):
        assert refusal, "a tree with a case variant or an outside reference was accepted"
        assert SENTINEL not in refusal
    else:
        assert not refusal, f"a clean tree was refused: {refusal}"


def kustomize_build(toolchain: Toolchain, repo: Path) -> str:
    with tempfile.TemporaryDirectory() as home:
        result = subprocess.run(
            [str(toolchain.kustomize), "build", "overlay"],
            cwd=repo,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "XDG_CONFIG_HOME": home},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return result.stdout + result.stderr


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(tree=clean_trees)
def test_accepted_trees_never_read_outside_the_repository(
    toolchain: Toolchain, world: World, tree: dict[str, list[Slot]]
) -> None:
    """For every generated tree, either the walker refuses it, or the real kustomize, run on it, shows
    no sentinel from outside the repository and makes no http request."""
    world.requests.clear()
    with built(world, tree) as repo:
        try:
            check(repo, repo / "overlay", LoadPolicy())
        except RestrictionError:
            event("refused")
            return
        output = kustomize_build(toolchain, repo)
        event("rendered" if "Error:" not in output else "kustomize failed")
    assert SENTINEL not in output
    assert world.requests == []


ATTACKS = [
    pytest.param("resources", "parent", False, id="resources-parent"),
    pytest.param("resources", "link-out", False, id="resources-symlink-out"),
    pytest.param("resources", "http", False, id="resources-http"),
    pytest.param("resources", "git", False, id="resources-git-file-url"),
    pytest.param("bases", "parent", False, id="bases-parent"),
    pytest.param("components", "parent", False, id="components-parent"),
    pytest.param("components", "link-out", False, id="components-symlink-out"),
    pytest.param("components", "git", False, id="components-git-file-url"),
    pytest.param("patches", "http", False, id="patches-path-http"),
    pytest.param("patchesStrategicMerge", "http", False, id="patchesStrategicMerge-http"),
    pytest.param("patchesJson6902", "http", False, id="patchesJson6902-path-http"),
    pytest.param("replacements", "http", False, id="replacements-path-http"),
    pytest.param("configMapGenerator.files", "http", False, id="configMapGenerator-files-http"),
    pytest.param("secretGenerator.envs", "http", False, id="secretGenerator-envs-http"),
    pytest.param("crds", "http", False, id="crds-http"),
    pytest.param("openapi", "http", False, id="openapi-path-http"),
    pytest.param("generators", "http", False, id="generator-files-http"),
    pytest.param("transformers", "http", False, id="transformer-path-http"),
    pytest.param("generators", "parent", True, id="generator-config-parent"),
    pytest.param("generators", "link-out", True, id="generator-config-symlink-out"),
    pytest.param("transformers", "http", True, id="transformer-config-http"),
]


@pytest.mark.parametrize(("field", "ref", "entry"), ATTACKS)
@pytest.mark.parametrize(
    "spelling",
    [Spelling(), Spelling(case=0b10101), Spelling(fold=2**24 - 1)],
    ids=["exact", "mixed", "folded"],
)
def test_outside_references_are_read_without_the_walker(
    toolchain: Toolchain, world: World, field: str, ref: str, entry: bool, spelling: Spelling
) -> None:
    """The generated attacks are real: kustomize alone (no walker) reads each kind of outside reference,
    whatever the spelling of its key, and shows the sentinel or fetches it; the walker refuses each."""
    world.requests.clear()
    nested = Spelling() if field == "openapi" else spelling  # openapi is a plain map: only "path" is read
    slot = Slot(field, spelling, nested, ref, entry)
    host = "overlay" if field.startswith("configMapGenerator") else "base"  # no structural key of the field
    tree: dict[str, list[Slot]] = {name: [slot] if name == host else [] for name in DIRECTORIES}
    with built(world, tree) as repo:
        output = kustomize_build(toolchain, repo)
        with pytest.raises(RestrictionError):
            check(repo, repo / "overlay", LoadPolicy())
    assert SENTINEL in output or world.requests, output


# kustomizations that kustomize and a plain PyYAML reading disagree on, each with the decoy a plain
# reading would check instead: (kustomization of base, decoy directory inside base, symlink name → outside)
DISAGREEMENTS = {
    "binary-key": ("? !!binary cmVzb3VyY2Vz\n: [../../outside]\n", None, None),
    "binary-value": ("resources: [!!binary Li4vLi4vb3V0c2lkZQ==]\n", "outside'", None),
    "sexagesimal-path": ("resources: [190:20:30]\n", "685230", "190:20:30"),
    "merge-key-after-key": ("resources: [decoy]\n<<: {resources: [../../outside]}\n", "decoy", None),
    "git-prefix-file-url": ("resources: ['git::file://{git}//app']\n", "git::file:{git}/app", None),
    "inline-looking-path": (
        'resources: [decoy]\ntransformers: ["kind: x\\nfoo: ../../../../outside/transformers"]\n',
        "decoy",
        None,
    ),
}


@pytest.mark.parametrize("case", list(DISAGREEMENTS))
def test_yaml_and_reference_disagreements_are_real_and_refused(
    toolchain: Toolchain, world: World, case: str
) -> None:
    """Where kustomize's decoding differs from a plain PyYAML reading (binary keys and values,
    sexagesimal numbers, a merge key after the key it overrides, git's forced-protocol prefix, an
    inline-looking entry that is a path), kustomize reads outside the repository even with an innocent
    decoy for the plain reading, and the walker refuses the kustomization."""
    text, decoy, link = DISAGREEMENTS[case]
    tree: dict[str, list[Slot]] = {name: [] for name in DIRECTORIES}
    with built(world, tree) as repo:
        base = repo / "base"
        if decoy is not None:
            decoy_dir = base / decoy.replace("{git}", str(world.git))
            write(decoy_dir / "kustomization.yaml", "resources: [cm.yaml]\n")
            write(decoy_dir / "cm.yaml", CONFIGMAP.format(name="decoy", value="v"))
        if link is not None:
            (base / link).symlink_to(world.outside)
        generated = (base / "kustomization.yaml").read_text()
        write(base / "kustomization.yaml", generated + text.replace("{git}", str(world.git)))
        output = kustomize_build(toolchain, repo)
        with pytest.raises(RestrictionError):
            check(repo, repo / "overlay", LoadPolicy())
    assert SENTINEL in output, output
