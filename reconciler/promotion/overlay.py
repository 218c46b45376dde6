"""What promotions read from environment overlays in Git: an environment's path, its kustomization
at a revision, the values a pipeline promotes from it, and the preflight check that the target
overlay can take them."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.promotion import edit
from reconciler.promotion.gitwriter import GitWriter
from reconciler.promotion.policy import Pipeline
from reconciler.promotion.views import Host, PromotionError

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def kustomization(path: str, exists: Callable[[str], bool]) -> str:
    """The kustomization file of the overlay at ``path`` (``kustomization.yaml`` when none exists)."""
    for name in KUSTOMIZATION_FILES:
        candidate = f"{path.rstrip('/')}/{name}"
        if exists(candidate):
            return candidate
    return f"{path.rstrip('/')}/kustomization.yaml"


class Overlays:
    """Reads of environment overlays through the daemon's view and the promotion writer's clone."""

    def __init__(self, host: Host, writer: GitWriter) -> None:
        self.host = host
        self.writer = writer

    def env_path(self, name: str) -> str:
        """The overlay path of environment ``name``."""
        view = self.host.environment_view(name)
        if view is None:
            raise PromotionError(404, f"no environment named {name!r}")
        return view.path

    def kustomization_text(self, env_path: str, revision: str) -> str | None:
        """The kustomization of the overlay at ``env_path`` at ``revision`` (None: there is none)."""
        path = kustomization(env_path, lambda p: self.writer.show(revision, p) is not None)
        return self.writer.show(revision, path)

    def preflight(self, target: str, images: list[dict[str, str]], restore: bool) -> None:
        """Refuse a request whose values the target overlay, as it is now, cannot take (a digest pin
        and a tag-only source, a key in another case...), before anyone approves it. The commit checks
        again against the target as it is then."""
        view = self.host.environment_view(target)
        if view is None or not images:
            return
        revision = self.host.head_revision() or view.revision  # the commit lands on the branch head
        if not revision:
            return
        text = self.kustomization_text(view.path, revision)
        if text is None:
            return
        try:
            edit.apply(text, images, f"{view.path}/kustomization.yaml", restore=restore)
        except edit.EditError as exc:
            raise PromotionError(409, f"{target} cannot take these values: {exc}") from None

    def promoted_values(
        self, pipeline: Pipeline, env_path: str, revision: str
    ) -> tuple[list[dict[str, str]], list[str]]:
        """The images (and files) ``pipeline`` promotes from the overlay at ``env_path``."""
        images: list[dict[str, str]] = []
        if pipeline.images:
            text = self.kustomization_text(env_path, revision)
            if text is None:
                raise PromotionError(409, f"{env_path} has no kustomization at {revision[:12]}")
            try:
                images = edit.read_images(text, f"{env_path}/kustomization.yaml")
            except edit.EditError as exc:
                raise PromotionError(409, str(exc)) from None
        for file in pipeline.files:
            if self.writer.show(revision, f"{env_path}/{file}") is None:
                raise PromotionError(409, f"{env_path}/{file} does not exist at {revision[:12]}")
        if not images and not pipeline.files:
            raise PromotionError(409, f"{env_path} has no images: entries to promote")
        return images, list(pipeline.files)
