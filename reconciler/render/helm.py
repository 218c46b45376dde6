"""Helm fields of a kustomization (helmGlobals, helmCharts, the legacy helmChartInflationGenerator) and
the HelmChartInflationGenerator plugin: exact keys, chart names that are not paths, and the chart home,
values files and helm configuration directory inside the repository."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.render.fields import HELM_ARGS_FIELDS, HELM_CHART_FIELDS, HELM_GLOBALS_FIELDS
from reconciler.render.inputs import RestrictionError
from reconciler.render.shapes import ShapeReader
from reconciler.render.yamlkeys import shown


class HelmChecks(ShapeReader):
    """The checks of helm fields (only reached when helm is allowed, or when they are empty)."""

    def check_helm(self, origin: Path, base: Path, doc: Mapping[Any, Any], where: str = "") -> None:
        """Helm fields (only reached when helm is allowed, or when they are empty): exact keys, and the
        chart home, values files and helm configuration directory inside the repository."""
        prefix = f"{where}." if where else ""
        globals_list: Sequence[Mapping[Any, Any]] = [doc]
        charts: Sequence[Mapping[Any, Any]] = [doc]
        legacy: list[dict[Any, Any]] = []
        if not where:  # else a HelmChartInflationGenerator plugin configuration: globals and one chart
            top = self.mapping(origin, "helmGlobals", doc.get("helmGlobals"))
            self.check_keys(origin, "helmGlobals", top, HELM_GLOBALS_FIELDS, closed=False)
            globals_list = [top]
            charts = self.mappings(origin, "helmCharts", doc.get("helmCharts"))
            legacy = self.mappings(
                origin, "helmChartInflationGenerator", doc.get("helmChartInflationGenerator")
            )
        for helm_globals in globals_list:
            for name in ("chartHome", "configHome"):
                value = self.string(origin, f"{prefix}{name}", helm_globals.get(name))
                if value:
                    self.locate(origin, f"{prefix}{name}", value, base, required=False)
        for index, chart in enumerate(charts):
            self._check_chart(origin, base, chart, where or f"helmCharts[{index}]", plugin=bool(where))
        for index, args in enumerate(legacy):
            self._check_legacy(origin, base, args, f"helmChartInflationGenerator[{index}]")

    def _check_chart(
        self, origin: Path, base: Path, chart: Mapping[Any, Any], chart_where: str, *, plugin: bool
    ) -> None:
        """One helmCharts entry (or a plugin's chart): its name and values files."""
        if not plugin:
            self.check_keys(origin, chart_where, chart, HELM_CHART_FIELDS, closed=False)
        self.check_chart_name(origin, chart_where, chart.get("name"))
        values_file = self.string(origin, f"{chart_where}.valuesFile", chart.get("valuesFile"))
        for value in [
            *([values_file] if values_file else []),
            *self.strings(origin, f"{chart_where}.additionalValuesFiles", chart.get("additionalValuesFiles")),
        ]:
            self.file(origin, f"{chart_where} values file", value, base)

    def _check_legacy(self, origin: Path, base: Path, args: Mapping[Any, Any], args_where: str) -> None:
        """One helmChartInflationGenerator entry: its chart name, homes and values file."""
        self.check_keys(origin, args_where, args, HELM_ARGS_FIELDS, closed=False)
        self.check_chart_name(origin, args_where, args.get("chartName"))
        for name in ("chartHome", "helmHome"):
            value = self.string(origin, f"{args_where}.{name}", args.get(name))
            if value:
                self.locate(origin, f"{args_where}.{name}", value, base, required=False)
        values_file = self.string(origin, f"{args_where}.values", args.get("values"))
        if values_file:
            self.file(origin, f"{args_where}.values", values_file, base)

    def check_chart_name(self, origin: Path, where: str, name: object) -> None:
        text = self.string(origin, f"{where}.name", name)
        if text and ("/" in text or "\\" in text or text in (".", "..")):
            raise RestrictionError(
                f"{self.display(origin)}: {where}: chart name {shown(text)} is a path; a chart name may not "
                "name a directory elsewhere"
            )
