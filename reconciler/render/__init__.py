"""Rendering environments with the pinned kustomize: load restrictions, execution, cache, parsing."""

from reconciler.render.kustomize import Renderer, RenderError, RenderOptions, RenderResult

__all__ = ["RenderError", "RenderOptions", "RenderResult", "Renderer"]
