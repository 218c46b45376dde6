"""The promotion edit: only the images: block of the target kustomization changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler.promotion.edit import EditError, merge_images, read_images, set_images

FIXTURE = Path(__file__).parent.parent / "fixtures" / "promotion" / "production-kustomization.yaml"


def test_merge_updates_named_images_keeps_others_and_appends_new_ones() -> None:
    target = [{"name": "a", "newTag": "1"}, {"name": "b", "newTag": "2"}]
    source = [{"name": "b", "newTag": "3"}, {"name": "c", "digest": "sha256:ff"}]
    assert merge_images(target, source) == [
        {"name": "a", "newTag": "1"},
        {"name": "b", "newTag": "3"},
        {"name": "c", "digest": "sha256:ff"},
    ]


def test_set_images_changes_only_the_images_block() -> None:
    text = FIXTURE.read_text()
    images = merge_images(read_images(text), [{"name": "ghcr.io/example/api", "newTag": "1.5"}])
    result = set_images(text, images)
    before, after = yaml.safe_load(text), yaml.safe_load(result)
    assert after["images"][0] == {"name": "ghcr.io/example/api", "newTag": "1.5"}
    assert after["images"][1:] == before["images"][1:]
    assert {k: v for k, v in after.items() if k != "images"} == {
        k: v for k, v in before.items() if k != "images"
    }
    # every line outside the images block is byte-identical, comments included
    head, tail = text.split("images:")[0], text.split("patches:")[1]
    assert result.startswith(head)
    assert result.endswith("patches:" + tail)
    assert "# production overlay of the shop: keep this comment" in result
    assert "../base   # the shared base" in result


def test_a_numeric_looking_tag_stays_a_string() -> None:
    result = set_images("resources: [a.yaml]\n", [{"name": "x", "newTag": "1.10"}])
    assert yaml.safe_load(result)["images"] == [{"name": "x", "newTag": "1.10"}]
    assert result.startswith("resources: [a.yaml]\n")


def test_flow_style_images_are_replaced() -> None:
    text = "images: [{name: x, newTag: '1'}]\nnamespace: n\n"
    result = set_images(text, [{"name": "x", "newTag": "2"}])
    assert yaml.safe_load(result) == {"images": [{"name": "x", "newTag": "2"}], "namespace": "n"}


def test_invalid_kustomizations_are_refused_with_the_file_named() -> None:
    with pytest.raises(EditError, match=r"overlay/kustomization\.yaml"):
        read_images("images: {name: x}\n", "overlay/kustomization.yaml")
    with pytest.raises(EditError, match="not valid YAML"):
        set_images("images: [\n", [])
