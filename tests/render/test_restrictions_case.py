"""The render restrictions see what kustomize sees: keys in any case or Unicode folding, duplicate and
colliding keys, builtin plugin configurations, remote references kustomize would clone, and the shapes
kustomize would read differently (no kustomize run: these are the walker's refusals)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from reconciler.render.restrictions import (
    KUSTOMIZATION_FIELDS,
    LoadPolicy,
    RestrictionError,
    check,
    go_fold,
)

KUSTOMIZE_TYPES = Path.home() / "go/pkg/mod/sigs.k8s.io/kustomize/api@v0.21.1/types/kustomization.go"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with an environment ``env`` (a ConfigMap and the files its fields may name) and,
    beside the repository, an ``outside`` directory that every attack points at."""
    root = tmp_path / "repo"
    write(root / "env/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {k: v}\n")
    write(root / "env/kustomization.yaml", "resources: [cm.yaml]\n")
    for name in ("patch.yaml", "ops.yaml", "replacement.yaml", "values.yaml", "targets.yaml", "schema.json"):
        write(root / "env" / name, "{}\n")
    write(root / "env/data.txt", "inside\n")
    write(root / "env/data.env", "K=inside\n")
    outside = tmp_path / "outside"
    write(outside / "kustomization.yaml", "resources: [cm.yaml]\n")
    write(outside / "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: o}\ndata: {k: OUTSIDE}\n")
    write(outside / "component/kustomization.yaml", "kind: Component\n")
    for name in ("patch.yaml", "ops.yaml", "replacement.yaml", "crd.yaml", "config.yaml", "schema.json"):
        write(outside / name, "{}\n")
    write(outside / "secret.txt", "OUTSIDE\n")
    write(outside / "secret.env", "K=OUTSIDE\n")
    return root


def refusal(root: Path, kustomization: str, policy: LoadPolicy | None = None) -> str:
    """The walker's refusal of ``env`` with this kustomization (the test fails if it is accepted)."""
    write(root / "env/kustomization.yaml", kustomization)
    with pytest.raises(RestrictionError) as error:
        check(root, root / "env", policy or LoadPolicy())
    return str(error.value)


def fold_variant(name: str) -> str | None:
    """``name`` with Unicode characters that fold to its letters (ſ for s, the Kelvin sign for k)."""
    if "s" in name:
        return name.replace("s", "\u017f")
    if "k" in name:
        return name.replace("k", "\u212a")
    return None


def alternating(name: str) -> str:
    return "".join(ch.upper() if index % 2 else ch.lower() for index, ch in enumerate(name))


def spellings(name: str) -> list[tuple[str, str]]:
    """Upper, first-letter-upper, alternating and (when the name allows) Unicode-folded spellings."""
    variants = [("upper", name.upper()), ("title", name[0].upper() + name[1:]), ("mixed", alternating(name))]
    folded = fold_variant(name)
    if folded is not None:
        variants.append(("folded", folded))
    return [(kind, spelled) for kind, spelled in variants if spelled != name]


# every top-level field the walker reads paths (or helm) from, and a value pointing outside the repository
TOP_LEVEL = {
    "resources": "[../../outside]",
    "bases": "[../../outside]",
    "components": "[../../outside/component]",
    "crds": "[../../outside/crd.yaml]",
    "configurations": "[../../outside/config.yaml]",
    "openapi": "{path: ../../outside/schema.json}",
    "patchesStrategicMerge": "[../../outside/patch.yaml]",
    "patches": "[{path: ../../outside/patch.yaml}]",
    "patchesJson6902": "[{path: ../../outside/ops.yaml, target: {kind: ConfigMap, name: app}}]",
    "replacements": "[{path: ../../outside/replacement.yaml}]",
    "configMapGenerator": "[{name: c, files: [../../outside/secret.txt]}]",
    "secretGenerator": "[{name: s, envs: [../../outside/secret.env]}]",
    "generators": "[../../outside/gen.yaml]",
    "transformers": "[../../outside/gen.yaml]",
    "validators": "[../../outside/gen.yaml]",
    "helmCharts": "[{name: redis, repo: 'https://charts.example.com'}]",
    "helmGlobals": "{chartHome: ../../outside}",
    "helmChartInflationGenerator": "[{chartName: redis}]",
}
TOP_LEVEL_CASES = [
    pytest.param(name, spelled, id=f"{name}-{kind}")
    for name in TOP_LEVEL
    for kind, spelled in spellings(name)
]


@pytest.mark.parametrize(("field", "key"), TOP_LEVEL_CASES)
def test_top_level_field_in_another_case_is_refused(repo: Path, field: str, key: str) -> None:
    """A path-bearing kustomization field spelled in another case or with folding Unicode letters
    (which kustomize reads as the field) is refused, naming the file, the key and the exact spelling."""
    message = refusal(repo, f"{key}: {TOP_LEVEL[field]}\n")
    assert "env/kustomization.yaml" in message
    assert repr(key) in message
    assert f"write it exactly as {field!r}" in message
    assert "OUTSIDE" not in message


# nested keys the walker reads: (id, kustomization, key expected in the message, needs helm)
NESTED: list[tuple[str, str, str, bool]] = []
for _key in ("PATH", "Path", "pAtH"):
    NESTED += [
        (f"openapi-{_key}", f"openapi: {{{_key}: ../../outside/schema.json}}\n", _key, False),
        (f"patches-{_key}", f"patches: [{{{_key}: ../../outside/patch.yaml}}]\n", _key, False),
        (
            f"patchesJson6902-{_key}",
            f"patchesJson6902: [{{{_key}: ../../outside/ops.yaml, target: {{kind: ConfigMap}}}}]\n",
            _key,
            False,
        ),
        (
            f"replacements-{_key}",
            f"replacements: [{{{_key}: ../../outside/replacement.yaml}}]\n",
            _key,
            False,
        ),
    ]
for _generator in ("configMapGenerator", "secretGenerator"):
    for _field, _value in (("files", "[../../outside/secret.txt]"), ("envs", "[../../outside/secret.env]")):
        for _kind, _key in spellings(_field):
            NESTED.append(
                (
                    f"{_generator}-{_field}-{_kind}",
                    f"{_generator}: [{{name: g, {_key}: {_value}}}]\n",
                    _key,
                    False,
                )
            )
    for _key in ("ENV", "Env", "eNv"):
        NESTED.append(
            (
                f"{_generator}-env-{_key}",
                f"{_generator}: [{{name: g, {_key}: ../../outside/secret.env}}]\n",
                _key,
                False,
            )
        )
for _field in ("valuesFile", "additionalValuesFiles"):
    _value = "../../outside/values.yaml" if _field == "valuesFile" else "[../../outside/values.yaml]"
    for _kind, _key in spellings(_field):
        NESTED.append(
            (f"helmCharts-{_field}-{_kind}", f"helmCharts: [{{name: r, {_key}: {_value}}}]\n", _key, True)
        )
for _field in ("chartHome", "configHome"):
    for _kind, _key in spellings(_field):
        NESTED.append(
            (f"helmGlobals-{_field}-{_kind}", f"helmGlobals: {{{_key}: ../../outside}}\n", _key, True)
        )
for _kind, _key in spellings("chartHome"):
    NESTED.append(
        (
            f"helmChartInflationGenerator-chartHome-{_kind}",
            f"helmChartInflationGenerator: [{{chartName: r, {_key}: ../../outside}}]\n",
            _key,
            True,
        )
    )


@pytest.mark.parametrize(
    ("kustomization", "key", "helm"), [pytest.param(k, key, h, id=i) for i, k, key, h in NESTED]
)
def test_nested_path_key_in_another_case_is_refused(
    repo: Path, kustomization: str, key: str, helm: bool
) -> None:
    """Inside patches, replacements, openapi, generators and helm fields, a key that kustomize reads as
    a path-bearing field without being spelled exactly as it is refused, naming the file and the key."""
    message = refusal(repo, "resources: [cm.yaml]\n" + kustomization, LoadPolicy(allow_helm=helm))
    assert "env/kustomization.yaml" in message
    assert repr(key) in message
    assert "write it exactly as" in message


# builtin plugin configurations (apiVersion: builtin) and the path-bearing keys they read
BUILTIN: list[tuple[str, str, str, str]] = []
for _key in ("PATH", "Path", "pAtH"):
    BUILTIN += [
        (
            f"PatchTransformer-{_key}",
            "transformers",
            f"kind: PatchTransformer\n{_key}: ../../outside/patch.yaml\ntarget: {{kind: ConfigMap}}\n",
            _key,
        ),
        (
            f"PatchJson6902Transformer-{_key}",
            "transformers",
            f"kind: PatchJson6902Transformer\n{_key}: ../../outside/ops.yaml\ntarget: {{kind: ConfigMap}}\n",
            _key,
        ),
        (
            f"ReplacementTransformer-nested-{_key}",
            "transformers",
            f"kind: ReplacementTransformer\nreplacements: [{{{_key}: ../../outside/replacement.yaml}}]\n",
            _key,
        ),
    ]
for _kind, _key in spellings("paths"):
    BUILTIN.append(
        (
            f"PatchStrategicMergeTransformer-{_kind}",
            "transformers",
            f"kind: PatchStrategicMergeTransformer\n{_key}: [../../outside/patch.yaml]\n",
            _key,
        )
    )
for _kind, _key in spellings("replacements"):
    BUILTIN.append(
        (
            f"ReplacementTransformer-{_kind}",
            "transformers",
            f"kind: ReplacementTransformer\n{_key}: [{{path: ../../outside/replacement.yaml}}]\n",
            _key,
        )
    )
for _kind, _key in spellings("targetFilePath"):
    BUILTIN.append(
        (
            f"ValueAddTransformer-{_kind}",
            "transformers",
            f"kind: ValueAddTransformer\n{_key}: ../../outside/targets.yaml\n",
            _key,
        )
    )
for _generator in ("ConfigMapGenerator", "SecretGenerator"):
    for _field, _value in (
        ("files", "[../../outside/secret.txt]"),
        ("envs", "[../../outside/secret.env]"),
        ("env", "../../outside/secret.env"),
    ):
        for _kind, _key in spellings(_field):
            BUILTIN.append(
                (
                    f"{_generator}-{_field}-{_kind}",
                    "generators",
                    f"kind: {_generator}\n{_key}: {_value}\n",
                    _key,
                )
            )


@pytest.mark.parametrize(("field", "config", "key"), [pytest.param(f, c, k, id=i) for i, f, c, k in BUILTIN])
def test_builtin_plugin_path_key_in_another_case_is_refused(
    repo: Path, field: str, config: str, key: str
) -> None:
    """A builtin plugin configuration (in a file listed under generators/transformers) whose
    path-bearing key is spelled in another case is refused, naming the kustomization, the plugin file
    and the key; kustomize would read the file it names."""
    write(repo / "env/plugin.yaml", "apiVersion: builtin\nmetadata: {name: p}\n" + config)
    message = refusal(repo, f"resources: [cm.yaml]\n{field}: [plugin.yaml]\n")
    assert "env/kustomization.yaml" in message
    assert "env/plugin.yaml" in message
    assert repr(key) in message
    assert "write it exactly as" in message


@pytest.mark.parametrize(
    ("field", "config", "key"), [pytest.param(f, c, k, id=i) for i, f, c, k in BUILTIN[:6]]
)
def test_inline_builtin_plugin_path_key_in_another_case_is_refused(
    repo: Path, field: str, config: str, key: str
) -> None:
    """The same builtin configurations written inline in the kustomization are refused too."""
    inline = textwrap.indent("apiVersion: builtin\nmetadata: {name: p}\n" + config, "    ")
    message = refusal(repo, f"resources: [cm.yaml]\n{field}:\n  - |\n{inline}")
    assert "env/kustomization.yaml" in message
    assert repr(key) in message


def test_exact_builtin_plugin_paths_outside_are_refused(repo: Path) -> None:
    """Exactly spelled builtin plugin paths are checked like the kustomization's own: outside is refused."""
    write(
        repo / "env/plugin.yaml",
        "apiVersion: builtin\nkind: PatchTransformer\nmetadata: {name: p}\npath: ../../outside/patch.yaml\n",
    )
    message = refusal(repo, "resources: [cm.yaml]\ntransformers: [plugin.yaml]\n")
    assert "'../../outside/patch.yaml' points outside the repository" in message


def test_builtin_plugin_in_a_list_and_with_a_bare_builtin_version_is_checked(repo: Path) -> None:
    """kustomize inlines FooList items and takes ``/builtin`` as the builtin version: both are checked."""
    write(
        repo / "env/plugin.yaml",
        """
        apiVersion: v1
        kind: PluginList
        items:
        - apiVersion: /builtin
          kind: PatchTransformer
          metadata: {name: p}
          Path: ../../outside/patch.yaml
        """,
    )
    message = refusal(repo, "resources: [cm.yaml]\ntransformers: [plugin.yaml]\n")
    assert "'Path'" in message


def test_helm_builtin_plugin_is_refused_without_helm(repo: Path) -> None:
    """A HelmChartInflationGenerator plugin configuration is helm too: refused unless helm is allowed."""
    write(
        repo / "env/plugin.yaml",
        "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata: {name: p}\nname: redis\n",
    )
    message = refusal(repo, "resources: [cm.yaml]\ngenerators: [plugin.yaml]\n")
    assert "helm chart inflation is disabled" in message


def test_external_plugin_is_refused_without_plugins(repo: Path) -> None:
    """A configuration that is not builtin would be an external plugin: refused unless plugins are allowed."""
    write(repo / "env/plugin.yaml", "apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: p}\n")
    message = refusal(repo, "resources: [cm.yaml]\ntransformers: [plugin.yaml]\n")
    assert "is not a builtin plugin" in message


def test_plugin_entry_that_is_a_directory_is_refused(repo: Path) -> None:
    """A kustomization directory as a transformers entry (its output would be the configurations, beyond
    what the walker can check) is refused."""
    write(repo / "env/plugins/kustomization.yaml", "resources: []\n")
    message = refusal(repo, "resources: [cm.yaml]\ntransformers: [plugins]\n")
    assert "is a directory" in message


def test_plugin_entry_that_looks_inline_but_is_a_path_out_is_refused(repo: Path) -> None:
    """kustomize reads an entry that is YAML but no resource as a path: 'kind: x\\nfoo: ../../../..'
    names a directory outside the repository, and is refused."""
    message = refusal(repo, 'resources: [cm.yaml]\ntransformers: ["kind: x\\nfoo: ../../../../outside"]\n')
    assert "points outside the repository" in message


@pytest.mark.parametrize(
    "reference",
    [
        "git::file:///srv/outside//app",
        "GIT::https://example.com/org/repo//app",
        "deploy@host.example:org/repo//app",
        "github.com/org/repo//app",
        "GitHub.com:org/repo//app",
        "FILE:///srv/outside//app",
        "HTTP://127.0.0.1:1/cm.yaml",
    ],
)
def test_references_kustomize_would_clone_or_fetch_are_refused(repo: Path, reference: str) -> None:
    """Every spelling kustomize treats as a git repository or an http file is a remote reference, even
    when a directory of that name exists in the repository (as it can for ``git::file:...``)."""
    (repo / "env" / reference).mkdir(parents=True, exist_ok=True)
    write(repo / "env" / reference / "kustomization.yaml", "resources: []\n")
    message = refusal(repo, f"resources: [cm.yaml, {reference!r}]\n")
    assert "remote reference; remote bases are refused" in message


def test_unknown_top_level_key_is_refused_with_a_suggestion(repo: Path) -> None:
    """A key that is no kustomization field is refused, naming it and the closest field."""
    message = refusal(repo, "resources: [cm.yaml]\nresource: [../../outside]\n")
    assert "'resource' is not a kustomization field of kustomize v5 (did you mean 'resources'?)" in message


def test_keys_that_fold_together_are_refused_naming_both(repo: Path) -> None:
    """Two keys kustomize folds to one field (one of them silently wins) are refused, naming both."""
    message = refusal(repo, "resources: [cm.yaml]\nre\u017fources: [../../outside]\n")
    assert "'resources' and 're\u017fources' name the same field" in message
    nested = refusal(
        repo, "resources: [cm.yaml]\npatches: [{target: {kind: ConfigMap}, TARGET: {kind: Secret}}]\n"
    )
    assert "'target' and 'TARGET' name the same field" in nested


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        (
            "resources: [../../outside]\nresources: [cm.yaml]\n",
            "the key 'resources' appears twice (lines 1 and 2)",
        ),
        (
            "resources: [cm.yaml]\npatches:\n- path: ../../outside/patch.yaml\n  path: patch.yaml\n",
            "'path' appears twice",
        ),
        # PyYAML lets the explicit key win; kustomize's YAML decoder lets a later merge key win
        ("resources: [cm.yaml]\n<<: {resources: [../../outside]}\n", "YAML merge keys (<<) are refused"),
    ],
)
def test_duplicate_and_merge_keys_are_refused(repo: Path, kustomization: str, expected: str) -> None:
    """Duplicate keys (anywhere) and YAML merge keys are refused rather than resolved one way."""
    assert expected in refusal(repo, kustomization)


def test_non_string_keys_and_values_are_refused(repo: Path) -> None:
    """A binary key or path decodes to text for kustomize but not for PyYAML: both are refused."""
    key = refusal(repo, "resources: [cm.yaml]\n? !!binary cmVzb3VyY2Vz\n: [../../outside]\n")
    assert "is not text" in key
    value = refusal(repo, "resources: [cm.yaml, !!binary Li4vLi4vb3V0c2lkZQ==]\n")
    assert "resources[1] must be a string" in value


def test_two_kustomization_files_are_refused_naming_both(repo: Path) -> None:
    """kustomize refuses a directory with two kustomization files; so does the walker, naming both."""
    write(repo / "env/Kustomization", "resources: [../../outside]\n")
    message = refusal(repo, "resources: [cm.yaml]\n")
    assert "has both kustomization.yaml and Kustomization" in message


def test_timestamp_like_paths_stay_text(repo: Path) -> None:
    """A directory named like a date is a path for kustomize (Go keeps it as text) and for the walker."""
    write(repo / "env/2024-01-01/kustomization.yaml", "resources: []\n")
    write(repo / "env/kustomization.yaml", "resources: [cm.yaml, 2024-01-01]\n")
    inputs = check(repo, repo / "env", LoadPolicy())
    assert (repo / "env/2024-01-01/kustomization.yaml").resolve() in inputs.files


def test_every_exact_field_is_accepted(repo: Path) -> None:
    """Every kustomization field of kustomize v5, spelled exactly, passes the key check."""
    body = "".join(f"{name}: null\n" for name in sorted(KUSTOMIZATION_FIELDS))
    write(repo / "env/kustomization.yaml", body)
    check(repo, repo / "env", LoadPolicy())


def test_exact_plugin_configuration_inside_is_accepted(repo: Path) -> None:
    """Correct builtin configurations inside the repository are accepted and their files are inputs."""
    write(
        repo / "env/plugin.yaml",
        """
        apiVersion: builtin
        kind: PatchTransformer
        metadata: {name: p}
        path: patch.yaml
        target: {kind: ConfigMap}
        ---
        apiVersion: builtin
        kind: SecretGenerator
        metadata: {name: s}
        envs: [data.env]
        """,
    )
    write(repo / "env/kustomization.yaml", "resources: [cm.yaml]\ntransformers: [plugin.yaml]\n")
    inputs = check(repo, repo / "env", LoadPolicy())
    assert {
        (repo / "env" / name).resolve() for name in ("plugin.yaml", "patch.yaml", "data.env")
    } <= inputs.files
    assert [source.name for source in inputs.secrets] == ["s"]


@pytest.mark.skipif(not KUSTOMIZE_TYPES.is_file(), reason="kustomize's module source is not in the Go cache")
def test_known_fields_are_kustomize_v5_8_1s() -> None:
    """The walker's field list is exactly the json names of kustomize v5.8.1's Kustomization type."""
    text = KUSTOMIZE_TYPES.read_text()
    body = text[
        text.index("type Kustomization struct") : text.index("\n}\n", text.index("type Kustomization struct"))
    ]
    names = set(re.findall(r'json:"([A-Za-z0-9]+)[,"]', body)) | {"apiVersion", "kind"}
    assert names == KUSTOMIZATION_FIELDS


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("resources", "RESOURCES", True),
        ("resources", "re\u017fources", True),  # long s folds to s
        ("kind", "\u212aind", True),  # the Kelvin sign folds to k
        ("\u00e5", "\u212b", True),  # the Angstrom sign folds to å
        ("stra\u00dfe", "STRA\u1e9eE", True),  # ß and ẞ fold together
        ("\u03b8", "\u03d1", True),  # θ and ϑ
        ("stra\u00dfe", "strasse", False),  # full folding would expand ß; Go's simple folding does not
        ("i", "\u0131", False),  # dotless i is its own
        ("i", "\u0130", False),  # dotted capital I is its own
        ("re_sources", "resources", False),  # no delimiter folding (Go's json v1)
    ],
)
def test_go_fold_matches_go_simple_folding(a: str, b: str, same: bool) -> None:
    """``go_fold`` equates exactly the keys Go's encoding/json matches case-insensitively."""
    assert (go_fold(a) == go_fold(b)) is same


def test_helm_paths_outside_are_refused_when_helm_is_allowed(repo: Path) -> None:
    """With helm allowed, a chart home, values file or helm configuration outside the repository is
    refused; inside it is accepted."""
    helm = LoadPolicy(allow_helm=True)
    assert "points outside" in refusal(repo, "helmGlobals: {chartHome: ../../outside}\n", helm)
    assert "points outside" in refusal(repo, "helmGlobals: {configHome: /etc}\n", helm)
    assert "points outside" in refusal(
        repo, "helmCharts: [{name: r, valuesFile: ../../outside/v.yaml}]\n", helm
    )
    assert "chart name '../x' is a path" in refusal(repo, "helmCharts: [{name: ../x}]\n", helm)
    write(repo / "env/kustomization.yaml", "helmCharts: [{name: r, valuesFile: values.yaml}]\n")
    check(repo, repo / "env", helm)


def test_yaml_nested_too_deep_is_refused(repo: Path) -> None:
    """YAML nested deeper than the parser can follow is a refusal naming the file, not a crash."""
    message = refusal(repo, "commonLabels: " + "[" * 50000 + "]" * 50000 + "\n")
    assert "env/kustomization.yaml: nests too deep to be checked" in message
