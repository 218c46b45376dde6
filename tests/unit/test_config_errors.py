"""Malformed configurations: each is refused with one line per problem that names the field and says what
was expected, in our words (no pydantic wording or URLs), never echoing a secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from reconciler.config_fields import ConfigError
from reconciler.promotion.policy import parse as parse_policy
from reconciler.settings import parse
from tests.unit.test_settings import config

ALICE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
WEAK_SECRET = "changeme-changeme-changeme"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "github-secret").write_text("a-long-random-webhook-secret\n")
    (tmp_path / "weak-secret").write_text(WEAK_SECRET + "\n")
    return tmp_path


def pipeline(**fields: Any) -> dict[str, Any]:
    return {
        "approvers": [{"identity": "alice@example.com", "keys": [ALICE_KEY], "groups": ["sre"]}],
        "pipelines": [
            {"name": "shop", "from": "staging", "to": "staging-2", "approvers": ["group:sre"], **fields}
        ],
    }


TWO_ENVIRONMENTS = [{"name": "staging", "path": "s"}, {"name": "staging-2", "path": "s2"}]

# (the change to a valid configuration, the field the error must name, words it must say)
CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"workers": "2m"}, "config.workers", "expected a whole number, got str '2m'"),
    ({"leader_election": {"namespace": 42}}, "leader_election.namespace", "expected a namespace name"),
    ({"listen": "0.0.0.0:99999"}, "listen", "port must be between 0 and 65535"),
    ({"inventory_namespace": {"a": 1}}, "config.inventory_namespace", "expected a namespace name"),
    ({"workers": 0}, "config.workers", "must be at least 1"),
    ({"install_crds": "no"}, "config.install_crds", "expected true or false"),
    ({"log_level": "loud"}, "log_level", "one of debug, info, warning, error"),
    ({"resync_interval": "soon"}, "config.resync_interval", "a duration like 30s, 5m"),
    ({"kustomize": "no-such-binary"}, "config.kustomize", "does not exist"),
    ({"colour": "blue"}, "config", "unknown field(s) colour"),
    ({"repository": {"url": 42}}, "repository.url", "expected the Git URL"),
    ({"repository": {"url": "u", "poll_interval": "1d"}}, "repository.poll_interval", "a duration like"),
    ({"repository": {"url": "u", "branch": ["main"]}}, "repository.branch", "expected a branch name"),
    (
        {"repository": {"url": "u", "credentials": {"token": "x"}}},
        "repository.credentials",
        "unknown field(s) token",
    ),
    (
        {"repository": {"url": "u", "verify": {}}},
        "repository.verify",
        "set allowed_signers (SSH) and/or gpg_public_keys",
    ),
    ({"clusters": {"name": "local"}}, "clusters", "expected a list"),
    ({"clusters": [{"name": "local", "kubeconfig": 1}]}, "clusters[0].kubeconfig", "expected a file path"),
    ({"clusters": [{"name": "local", "in_cluster": "true"}]}, "clusters[0].in_cluster", "true or false"),
    (
        {"environments": [{"name": "a", "path": "a"}, {"name": "b", "path": "/etc"}]},
        "environments[1].path",
        "expected a relative path inside the repository",
    ),
    ({"environments": [{"name": "a", "path": "a", "depends_on": "b"}]}, "environments[0].depends_on", "list"),
    (
        {"environments": [{"name": "a", "path": "a", "namespaces": ["Team A"]}]},
        "environments[0].namespaces[0]",
        "a namespace name or glob",
    ),
    (
        {"environments": [{"name": "a", "path": "a", "service_account": "just-a-name"}]},
        "environments[0].service_account",
        "NAMESPACE/NAME of a ServiceAccount",
    ),
    (
        {"environments": [{"name": "a", "path": "a", "max_prune_share": "half"}]},
        "environments[0].max_prune_share",
        "expected a number",
    ),
    ({"webhooks": {"github": {"secret_file": "weak-secret"}}}, "webhooks.github.secret_file", "placeholder"),
    ({"webhooks": {"github": "secret"}}, "webhooks.github", "expected a mapping"),
    ({"webhooks": {"insecure_no_secret": True, "rate_limit": "60/m"}}, "webhooks.rate_limit", "whole number"),
    ({"leader_election": {"lease_duration": True}}, "leader_election.lease_duration", "expected a number"),
    (
        {"leader_election": {"renew_deadline": 30}},
        "leader_election.renew_deadline",
        "less than lease_duration",
    ),
    ({"leader_election": {"cluster": "elsewhere"}}, "leader_election.cluster", "no cluster named"),
    (
        {"environments": TWO_ENVIRONMENTS, "promotions": pipeline(approvers=["bob@example.com"])},
        "promotions.pipelines[0].approvers",
        "'bob@example.com' is not in promotions.approvers",
    ),
    (
        {"environments": TWO_ENVIRONMENTS, "promotions": pipeline(approvals="two")},
        "promotions.pipelines[0].approvals",
        "expected a whole number",
    ),
    (
        {"environments": TWO_ENVIRONMENTS, "promotions": pipeline(windows=[{"allow": True, "end": 960}])},
        "promotions.pipelines[0].windows[0].end",
        "a time HH:MM in quotes",
    ),
    (
        {"environments": TWO_ENVIRONMENTS, "promotions": pipeline(expire_after="soon")},
        "promotions.pipelines[0].expire_after",
        "a duration like",
    ),
    (
        {
            "environments": TWO_ENVIRONMENTS,
            "promotions": {"integrations": [{"name": "bot", "secret_file": 1}]},
        },
        "promotions.integrations[0].secret_file",
        "expected a file path",
    ),
    (
        {"promotions": {"approvers": [{"identity": "a@b", "keys": "ssh-ed25519 AAAA"}]}},
        "promotions.approvers[0].keys",
        "expected a list of SSH public key lines",
    ),
]


@pytest.mark.parametrize(("change", "field", "words"), CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_each_malformed_configuration_names_its_field(
    base: Path, change: dict[str, Any], field: str, words: str
) -> None:
    """The error has a line ``FIELD: ...`` that says what was expected; nothing of pydantic shows."""
    with pytest.raises(ConfigError) as caught:
        parse(config(**change), base, environ={})
    lines = str(caught.value).splitlines()
    named = [line for line in lines if line.startswith(f"{field}: ") or line.startswith(f"{field}.")]
    assert named, f"no line names {field}: {lines}"
    assert any(words in line for line in named), lines
    for line in lines:
        assert re.match(r"^[\w.\[\]]+( \(RECONCILER_\w+\))?: \S", line), line
        assert "pydantic" not in line.lower()
        assert "Input should" not in line
        assert "For further information" not in line


def test_there_are_at_least_twenty_cases_and_the_issue_s_four() -> None:
    """Issue 15's four cases are among them."""
    assert len(CASES) >= 20
    fields = {field for _, field, _ in CASES}
    assert {"config.workers", "leader_election.namespace", "listen", "config.inventory_namespace"} <= fields


def test_every_problem_is_its_own_line(base: Path) -> None:
    """Several problems at once: one line each, in our words."""
    raw = config(workers="2m", listen="0.0.0.0:99999", leader_election={"namespace": 42})
    with pytest.raises(ConfigError) as caught:
        parse(raw, base, environ={})
    assert str(caught.value).splitlines() == [
        "leader_election.namespace: expected a namespace name (a lower-case DNS label), got int 42",
        "listen: the port must be between 0 and 65535, got 99999",
        "config.workers: expected a whole number, got str '2m'",
    ]


def test_secrets_are_never_echoed(base: Path) -> None:
    """A refused secret, from a file or from the environment, is not in the message."""
    with pytest.raises(ConfigError) as caught:
        parse(config(webhooks={"github": {"secret_file": "weak-secret"}}), base, environ={})
    assert WEAK_SECRET not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse(config(), base, environ={"RECONCILER_WEBHOOK_GITLAB_SECRET": WEAK_SECRET})
    assert "webhooks.gitlab (RECONCILER_WEBHOOK_GITLAB_SECRET): the secret looks like a placeholder" in str(
        caught.value
    )
    assert WEAK_SECRET not in str(caught.value)


def test_an_invalid_override_names_its_variable(base: Path) -> None:
    """RECONCILER_LEADER_ELECTION must be true or false (it used to turn anything else into false)."""
    with pytest.raises(ConfigError, match=r"^RECONCILER_LEADER_ELECTION: expected true or false"):
        parse(config(), base, environ={"RECONCILER_LEADER_ELECTION": "maybe"})
    assert parse(config(), base, environ={"RECONCILER_LEADER_ELECTION": "0"}).leader_election.enabled is False


def test_durations_keep_their_forms(base: Path) -> None:
    """Seconds as numbers or strings with a unit; days only where the policy allowed them."""
    repository = {"url": "u", "poll_interval": "90s"}
    settings = parse(config(repository=repository, resync_interval="10m"), base, environ={})
    assert (settings.repository.poll_interval, settings.resync_interval) == (90.0, 600.0)
    assert parse(config(resync_interval=30), base, environ={}).resync_interval == 30.0
    with pytest.raises(ConfigError, match=r"^config\.resync_interval: expected a number of seconds"):
        parse(config(resync_interval="1d"), base, environ={})
    policy = parse_policy(pipeline(expire_after="1d", soak=90), Path("/"), ["staging", "staging-2"], {})
    assert (policy.pipelines[0].expire_after, policy.pipelines[0].soak) == (86400.0, 90.0)


def test_insecure_no_webhook_secret_is_an_option_of_parse(base: Path) -> None:
    """``reconciler run --insecure-no-webhook-secret`` passes it to ``parse``; no message matching."""
    with pytest.raises(ConfigError, match="no webhook secret is configured"):
        parse(config(webhooks={}), base, environ={})
    settings = parse(config(webhooks={}), base, environ={}, insecure_no_webhook_secret=True)
    assert settings.webhooks.insecure_no_secret
    with pytest.raises(
        ConfigError, match=r"webhooks\.github\.secret_file: the secret looks like a placeholder"
    ):
        parse(
            config(webhooks={"github": {"secret_file": "weak-secret"}}),
            base,
            environ={},
            insecure_no_webhook_secret=True,
        )
