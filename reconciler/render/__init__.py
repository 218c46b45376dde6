"""Rendering environments with the pinned kustomize: load restrictions, execution, cache, parsing, and
the scrubbing of secretGenerator values from render errors."""

from reconciler.render.kustomize import Renderer, RenderError, RenderOptions, RenderResult

__all__ = ["RenderError", "RenderOptions", "RenderResult", "Renderer"]
