"""The field names of the kustomize v5 types the render restrictions read: a kustomization's top-level
fields, and the fields of the structures and builtin plugin configurations that name files."""

from __future__ import annotations

# The json names of kustomize v5.8.1's types.Kustomization (api v0.21.1, api/types/kustomization.go,
# with the inlined TypeMeta): the only keys a kustomization file may use.
KUSTOMIZATION_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "metadata",
        "openapi",
        "namePrefix",
        "nameSuffix",
        "namespace",
        "commonLabels",
        "labels",
        "commonAnnotations",
        "patchesStrategicMerge",
        "patchesJson6902",
        "patches",
        "images",
        "imageTags",
        "replacements",
        "replicas",
        "vars",
        "sortOptions",
        "resources",
        "components",
        "crds",
        "bases",
        "configMapGenerator",
        "secretGenerator",
        "helmGlobals",
        "helmCharts",
        "helmChartInflationGenerator",
        "generatorOptions",
        "configurations",
        "generators",
        "transformers",
        "validators",
        "buildMetadata",
    }
)
# The fields of the structures the walker reads paths from (api/types: Patch, ReplacementField,
# GeneratorArgs with KvPairSources, SecretArgs, HelmGlobals, HelmChart, HelmChartArgs).
PATCH_FIELDS = frozenset({"path", "patch", "target", "options"})
JSON6902_PLUGIN_FIELDS = frozenset({"path", "jsonOp", "target"})
REPLACEMENT_FIELDS = frozenset({"path", "source", "targets", "sourceValue"})
GENERATOR_FIELDS = frozenset({"namespace", "name", "behavior", "literals", "files", "envs", "env", "options"})
SECRET_GENERATOR_FIELDS = GENERATOR_FIELDS | {"type"}
HELM_GLOBALS_FIELDS = frozenset({"chartHome", "configHome"})
HELM_CHART_FIELDS = frozenset(
    {
        "name",
        "version",
        "repo",
        "releaseName",
        "namespace",
        "additionalValuesFiles",
        "valuesFile",
        "valuesInline",
        "valuesMerge",
        "includeCRDs",
        "skipHooks",
        "apiVersions",
        "kubeVersion",
        "nameTemplate",
        "skipTests",
        "debug",
        "devel",
    }
)
HELM_ARGS_FIELDS = frozenset(
    {
        "chartName",
        "chartVersion",
        "chartRepoUrl",
        "chartHome",
        "chartRepoName",
        "helmBin",
        "helmHome",
        "values",
        "valuesLocal",
        "valuesMerge",
        "releaseName",
        "releaseNamespace",
        "extraArgs",
    }
)
# openapi is a plain map in kustomize (only the exact key "path" is read); a folding variant is refused
# all the same, so that no spelling of it is ever ambiguous.
OPENAPI_FIELDS = frozenset({"path", "version"})
# Builtin plugins (apiVersion: builtin) that read files, and their configuration fields
# (api/internal/builtins/*.go). Other builtins read no files; their keys are still checked for collisions.
BUILTIN_FIELDS: dict[str, frozenset[str]] = {
    "PatchTransformer": PATCH_FIELDS,
    "PatchStrategicMergeTransformer": frozenset({"paths", "patches"}),
    "PatchJson6902Transformer": JSON6902_PLUGIN_FIELDS,
    "ReplacementTransformer": frozenset({"replacements"}),
    "ConfigMapGenerator": GENERATOR_FIELDS | {"metadata"},
    "SecretGenerator": SECRET_GENERATOR_FIELDS | {"metadata"},
    "ValueAddTransformer": frozenset({"value", "targets", "targetFilePath"}),
    "HelmChartInflationGenerator": HELM_GLOBALS_FIELDS | HELM_CHART_FIELDS,
}
HELM_FIELDS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")
FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")
