"""The promotion edit: what a promotion changes in the target kustomization's images: entries (the
version, never the target's registry), written value by value in the file's own style, so the commit's
diff is exactly the changed values."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from reconciler.promotion.edit import EditError, apply, merge_images, read_images, set_images

FIXTURES = Path(__file__).parent.parent / "fixtures" / "promotion"
BLOCK = FIXTURES / "production-kustomization.yaml"
KUSTOMIZE_EDIT = FIXTURES / "edit" / "kustomize-edit.yaml"
FLOW = FIXTURES / "edit" / "flow.yaml"
FLOW_MULTILINE = FIXTURES / "edit" / "flow-multiline.yaml"
PIN = "sha256:" + "1" * 64
NEW_PIN = "sha256:" + "2" * 64
ENDINGS = pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])


def fixture(path: Path, newline: str) -> str:
    return path.read_text().replace("\n", newline)


def diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """The removed and the added lines (line endings kept)."""
    lines = list(difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True)))
    return [line[2:] for line in lines if line[0] == "-"], [line[2:] for line in lines if line[0] == "+"]


def assert_diff(before: str, after: str, removed: list[str], added: list[str], newline: str) -> None:
    assert diff(before, after) == ([r + newline for r in removed], [a + newline for a in added]), after


# -- the rule -------------------------------------------------------------------------------------


def test_merge_promotes_the_version_and_keeps_the_targets_registry() -> None:
    """newTag/digest are promoted; an existing entry keeps its own newName (or its absence), so the
    target never starts pulling from the source's registry; other entries stay; a new image is
    appended as the source has it (the target has no location of its own for it)."""
    target = [
        {"name": "api", "newName": "prod-mirror/api", "newTag": "1"},
        {"name": "worker", "newTag": "2"},
        {"name": "db", "newTag": "9"},
    ]
    source = [
        {"name": "api", "newName": "staging-mirror/api", "newTag": "3"},
        {"name": "worker", "newName": "staging-mirror/worker", "newTag": "4"},
        {"name": "cache", "newName": "staging-mirror/cache", "digest": NEW_PIN},
        {"name": "db", "newName": "renamed-only/db"},  # no version: nothing to promote
    ]
    assert merge_images(target, source) == [
        {"name": "api", "newName": "prod-mirror/api", "newTag": "3"},
        {"name": "worker", "newTag": "4"},
        {"name": "db", "newTag": "9"},
        {"name": "cache", "newName": "staging-mirror/cache", "digest": NEW_PIN},
    ]


def test_a_digest_pin_is_replaced_only_by_a_digest() -> None:
    """A source digest replaces the target's (and brings the source's tag, or none: a stale tag next to
    a new digest would lie); a tag-only source for a pinned target is refused, since the pin would keep
    running the old image under the new tag."""
    pinned = [{"name": "api", "newTag": "1", "digest": PIN}]
    assert merge_images(pinned, [{"name": "api", "newTag": "2", "digest": NEW_PIN}]) == [
        {"name": "api", "newTag": "2", "digest": NEW_PIN}
    ]
    assert merge_images(pinned, [{"name": "api", "digest": NEW_PIN}]) == [{"name": "api", "digest": NEW_PIN}]
    assert merge_images([{"name": "api", "newTag": "1"}], [{"name": "api", "digest": NEW_PIN}]) == [
        {"name": "api", "digest": NEW_PIN}
    ]
    with pytest.raises(EditError, match=r"api is pinned to digest sha256:1+ there.*only the tag '2'"):
        merge_images(pinned, [{"name": "api", "newTag": "2"}])


def test_a_rollback_restores_tag_and_digest_exactly_and_keeps_the_registry() -> None:
    """restore=True (the target's own earlier values): newTag and digest become exactly the recorded
    ones, removed when the record has none; newName is still the target's current one."""
    current = [{"name": "api", "newName": "prod-mirror/api", "newTag": "2", "digest": NEW_PIN}]
    previous = [{"name": "api", "newTag": "1"}]
    assert merge_images(current, previous, restore=True) == [
        {"name": "api", "newName": "prod-mirror/api", "newTag": "1"}
    ]
    assert merge_images(current, [{"name": "api"}], restore=True) == [
        {"name": "api", "newName": "prod-mirror/api"}
    ]


# -- the edit, per style ----------------------------------------------------------------------------


@ENDINGS
def test_block_indented_with_comments_changes_exactly_the_tag_line(newline: str) -> None:
    """The indented block style, with comments inside the block and keys after it: one line changes."""
    text = fixture(BLOCK, newline)
    result, before, after = apply(text, [{"name": "ghcr.io/example/api", "newTag": "1.5"}])
    assert_diff(text, result, ['    newTag: "1.4"'], ['    newTag: "1.5"'], newline)
    assert before[0] == {"name": "ghcr.io/example/api", "newTag": "1.4"}
    assert after[0] == {"name": "ghcr.io/example/api", "newTag": "1.5"}
    assert yaml.safe_load(result) == {**yaml.safe_load(text), "images": yaml.safe_load(result)["images"]}


@ENDINGS
def test_kustomize_edit_style_keeps_new_name_digest_comments_and_quoting(newline: str) -> None:
    """`kustomize edit set image`'s unindented style with newName, a digest pin, comments and three
    quoting styles: the tags change in place, each in its own quoting (plain stays plain while that
    reads back as a string), the production mirror and the pinned digest stay."""
    text = fixture(KUSTOMIZE_EDIT, newline)
    source = [
        {"name": "ghcr.io/example/api", "newName": "staging-mirror.example.com/api", "newTag": "1.5.0"},
        {"name": "ghcr.io/example/sidecar", "newTag": "7", "digest": PIN},
        {"name": "ghcr.io/example/worker", "newTag": "2.1.0"},
    ]
    result, _, merged = apply(text, source)
    assert_diff(
        text,
        result,
        ["  newTag: 1.4.0", "  newTag: '2.0.0'   # quoted by hand"],
        ["  newTag: 1.5.0", "  newTag: '2.1.0'   # quoted by hand"],
        newline,
    )
    assert merged[0]["newName"] == "mirror.example.com/example/api"
    assert merged[1]["digest"] == PIN
    # a tag that would read back as a number is quoted, in the file's first quoting style
    result, _, _ = apply(text, [{"name": "ghcr.io/example/api", "newTag": "1.5"}])
    assert_diff(text, result, ["  newTag: 1.4.0"], ['  newTag: "1.5"'], newline)


@ENDINGS
def test_a_new_digest_replaces_the_pin_value_by_value(newline: str) -> None:
    """Source with tag and digest into a pinned entry: the two values change on their own lines."""
    text = fixture(KUSTOMIZE_EDIT, newline)
    result, _, _ = apply(text, [{"name": "ghcr.io/example/sidecar", "newTag": "8", "digest": NEW_PIN}])
    assert_diff(
        text,
        result,
        ['  newTag: "7"', f"  digest: {PIN}"],
        ['  newTag: "8"', f"  digest: {NEW_PIN}"],
        newline,
    )
    with pytest.raises(EditError, match="pinned to digest"):
        apply(text, [{"name": "ghcr.io/example/sidecar", "newTag": "8"}])


@ENDINGS
def test_new_fields_and_entries_follow_the_blocks_indentation(newline: str) -> None:
    """A field the entry lacks goes after the fields kustomize orders before it, at the entry's column;
    an image the target lacks is appended as a new entry in the block's own dash and key columns."""
    text = fixture(KUSTOMIZE_EDIT, newline)
    source = [
        {"name": "ghcr.io/example/worker", "newTag": "2.0.0", "digest": NEW_PIN},
        {"name": "ghcr.io/example/cache", "newName": "mirror.example.com/cache", "newTag": "3.1"},
    ]
    result, _, _ = apply(text, source)
    assert_diff(
        text,
        result,
        [],
        [
            f"  digest: {NEW_PIN}",
            "- name: ghcr.io/example/cache",
            "  newName: mirror.example.com/cache",
            '  newTag: "3.1"',  # not plain (it would read back as a number): the block's first quoting
        ],
        newline,
    )
    indented = fixture(BLOCK, newline)
    result, _, _ = apply(indented, [{"name": "ghcr.io/example/cache", "newTag": "v3"}])
    assert_diff(indented, result, [], ["  - name: ghcr.io/example/cache", '    newTag: "v3"'], newline)
    assert result.index("ghcr.io/example/cache") < result.index("patches:")


@ENDINGS
def test_flow_style_changes_only_the_value_on_its_line(newline: str) -> None:
    """`images: [{...}, {...}]` on one line, with a comment and a key after it: the value changes in
    place, newName and digest stay, and a new image joins the same flow sequence."""
    text = fixture(FLOW, newline)
    result, _, _ = apply(text, [{"name": "ghcr.io/example/api", "newTag": "1.5"}])
    assert result == text.replace('newTag: "1.4"', 'newTag: "1.5"')
    result, _, _ = apply(text, [{"name": "ghcr.io/example/cache", "newTag": "v3"}])
    # quoted like the block's other tag, though plain would do
    assert result == text.replace(
        '"}]  # one line', '"}, {name: ghcr.io/example/cache, newTag: "v3"}]  # one line'
    )
    multiline = fixture(FLOW_MULTILINE, newline)
    result, _, _ = apply(
        multiline,
        [
            {"name": "ghcr.io/example/worker", "newTag": "2.1.0"},
            {"name": "ghcr.io/example/cache", "newTag": "v3"},
        ],
    )
    assert_diff(
        multiline,
        result,
        ["  {name: ghcr.io/example/worker, newTag: '2.0.0'}"],
        [
            "  {name: ghcr.io/example/worker, newTag: '2.1.0'},",
            "  {name: ghcr.io/example/cache, newTag: 'v3'}",
        ],
        newline,
    )


def test_fields_are_removed_in_place_in_block_and_flow_entries() -> None:
    """A rollback removing a digest, or a digest-only source removing a tag: only that field's line (or
    its `, key: value` in a flow mapping) goes, the entry's comments stay."""
    block = "images:\n  # pinned\n  - name: api  # the API\n    newTag: '2'\n    digest: sha256:22\n"
    result, _, _ = apply(block, [{"name": "api", "newTag": "1"}], restore=True)
    assert result == "images:\n  # pinned\n  - name: api  # the API\n    newTag: '1'\n"
    first = "images:\n- digest: sha256:22  # pin\n  name: api\n"
    result, _, _ = apply(first, [{"name": "api", "newTag": "v1"}], restore=True)
    assert result == "images:\n- name: api\n  newTag: v1\n"
    flow = "images: [{name: api, newTag: '2', digest: 'sha256:22'}]\n"
    assert (
        apply(flow, [{"name": "api", "newTag": "1"}], restore=True)[0]
        == "images: [{name: api, newTag: '1'}]\n"
    )
    assert (
        apply(flow, [{"name": "api", "digest": "sha256:33"}])[0]
        == "images: [{name: api, digest: 'sha256:33'}]\n"
    )


@pytest.mark.parametrize(
    ("old", "new", "written"),
    [
        ('"1.4"', "1.5", '"1.5"'),
        ("'1.4'", "it's", "'it''s'"),
        ("v1", "v2", "v2"),
        ("2.0.0", "1.10", '"1.10"'),  # plain 1.10 would read back as the float 1.1
        ("v1", "true", '"true"'),
        ("v1", "a: #b", '"a: #b"'),
        ("", "v2", "v2"),  # `newTag:` with no value yet
    ],
)
def test_quoted_values_keep_their_quoting_and_always_read_back_as_strings(
    old: str, new: str, written: str
) -> None:
    """The new value is written in the old one's quoting; plain only when it reads back as the string."""
    text = f"images:\n- name: api\n  newTag:{' ' if old else ''}{old}\nnamespace: n\n"
    result = set_images(text, [{"name": "api", "newTag": new}])
    assert result == f"images:\n- name: api\n  newTag: {written}\nnamespace: n\n"
    assert read_images(result) == [{"name": "api", "newTag": new}]


def test_values_are_read_as_written() -> None:
    """A plain `newTag: 1.10` is the tag "1.10" (as kustomize uses it), not the float 1.1."""
    assert read_images("images:\n- name: x\n  newTag: 1.10\n  newName: ~\n") == [
        {"name": "x", "newTag": "1.10"}
    ]


@ENDINGS
def test_a_file_without_images_gets_a_block_in_its_own_sequence_style(newline: str) -> None:
    """No images: key (or an empty one): a block is added, indented like the file's other sequences,
    with the file's line endings; everything before it stays."""
    unindented = f"resources:{newline}- a.yaml{newline}"
    result = set_images(unindented, [{"name": "x", "newTag": "1.10"}])
    assert result == unindented + f'images:{newline}- name: x{newline}  newTag: "1.10"{newline}'
    indented = f"resources:{newline}  - a.yaml{newline}namespace: n"  # no line break at the end
    result = set_images(indented, [{"name": "x", "newTag": "v1"}])
    assert result == indented + f"{newline}images:{newline}  - name: x{newline}    newTag: v1{newline}"
    empty = f"images:  # none yet{newline}namespace: n{newline}"
    result = set_images(empty, [{"name": "x", "newTag": "v1"}])
    assert (
        result
        == f"images:  # none yet{newline}  - name: x{newline}    newTag: v1{newline}namespace: n{newline}"
    )
    assert set_images("images: []\n", [{"name": "x", "newTag": "v1"}]) == "images: [{name: x, newTag: v1}]\n"


def test_nothing_to_change_leaves_the_file_byte_identical() -> None:
    """Promoting what the target already runs changes nothing (no commit)."""
    text = fixture(KUSTOMIZE_EDIT, "\r\n")
    result, before, after = apply(text, [{"name": "ghcr.io/example/api", "newTag": "1.4.0"}])
    assert result == text
    assert before == after


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("IMAGES:\n- name: x\n  newTag: '1'\n", r"the key 'IMAGES' \(line 1\) is not 'images'"),
        ("Images: []\n", r"the key 'Images' \(line 1\) is not 'images'"),
        ("images:\n- name: x\n  NewTag: '1'\n", r"images\[0\]: the key 'NewTag' \(line 3\) is not 'newTag'"),
        ("images:\n- Name: x\n", r"the key 'Name' .* is not 'name'"),
        ("images: []\nimages: []\n", "images appears twice"),
        ("images:\n- name: x\n  newTag: '1'\n  newTag: '2'\n", "newTag appears twice"),
        ("base: &b {name: x, newTag: '1'}\nimages: [*b]\n", "anchors and aliases"),
        ("images: &i\n- name: x\nother: *i\n", "anchors and aliases"),
        ("images:\n- <<: {name: x}\n", "merge keys"),
        ("images:\n- name: x\n  newTag: |\n    1\n", r"images\[0\]\.newTag must be a one-line string"),
        ("images: {name: x}\n", "images must be a list"),
        ("images:\n- newTag: '1'\n", r"images\[0\] needs a name"),
        ("images: [\n", "not valid YAML"),
        ("- a\n", "expected a mapping at the top level"),
    ],
)
def test_what_cannot_be_edited_safely_is_refused_with_the_reason(text: str, message: str) -> None:
    """Keys in another case (kustomize folds key case, so `IMAGES:` would be read by kustomize and
    missed by the promotion), duplicates, aliases, merge keys, block scalars and malformed files are
    refused, naming the file."""
    with pytest.raises(EditError, match=r"^overlay/kustomization\.yaml: .*" + message):
        apply(text, [{"name": "x", "newTag": "2"}], "overlay/kustomization.yaml")
    with pytest.raises(EditError, match=message):
        read_images(text, "overlay/kustomization.yaml")


def test_set_images_never_removes_or_moves_entries() -> None:
    """The edit only changes values and appends: a list that drops or reorders entries is refused."""
    text = "images:\n- name: a\n- name: b\n"
    with pytest.raises(EditError, match="never removes or moves"):
        set_images(text, [{"name": "b"}, {"name": "a"}])
    with pytest.raises(EditError, match="never removes or moves"):
        set_images(text, [{"name": "a"}])
