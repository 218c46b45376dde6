"""The daemon's configuration: validation errors name the field; secrets are required; overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.settings import ConfigError, load, parse


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "github-secret").write_text("a-long-random-webhook-secret\n")
    return tmp_path


def config(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "repository": {"url": "https://git.example.com/envs.git"},
        "clusters": [{"name": "local", "kubeconfig": "kubeconfig"}],
        "environments": [{"name": "staging", "path": "environments/staging"}],
        "webhooks": {"github": {"secret_file": "github-secret"}},
    }
    raw.update(overrides)
    return raw


def test_a_valid_configuration_loads_with_defaults(base: Path) -> None:
    """Defaults: branch main, 60 s polls, prune on, leader election on, the secret read from its file."""
    settings = parse(config(), base, environ={})
    assert settings.repository.branch == "main"
    assert settings.repository.poll_interval == 60
    assert settings.environments[0].prune
    assert settings.environments[0].cluster == "local"
    assert settings.leader_election.enabled
    assert settings.webhooks.secret("github") == "a-long-random-webhook-secret"
    assert settings.clusters[0].kubeconfig == base / "kubeconfig"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repository": {}}, "repository.url: required"),
        (
            {"environments": [{"name": "staging", "path": "../outside"}]},
            "environments[0].path: expected a relative path",
        ),
        (
            {"environments": [{"name": "Staging", "path": "x"}]},
            "environments[0].name: expected a lower-case DNS label",
        ),
        (
            {"environments": [{"name": "s", "path": "x", "cluster": "other"}]},
            "environments[0].cluster: no cluster named",
        ),
        (
            {"environments": [{"name": "s", "path": "x", "prune": "yes"}]},
            "environments[0].prune: expected true or false",
        ),
        (
            {"clusters": [{"name": "local"}]},
            "clusters[0]: set exactly one of in_cluster: true, kubeconfig or kubeconfig_secret",
        ),
        (
            {"repository": {"url": "u", "poll_interval": "soon"}},
            "repository.poll_interval: expected a number",
        ),
        ({"surprise": 1}, "config: unknown field(s) surprise"),
        ({"listen": "8080"}, "listen: expected HOST:PORT"),
    ],
)
def test_errors_name_the_field(base: Path, change: dict[str, Any], message: str) -> None:
    """Each invalid value is refused with the path of the field in the message."""
    with pytest.raises(
        ConfigError,
        match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        parse(config(**change), base, environ={})


def test_webhook_secret_is_mandatory_unless_explicitly_insecure(base: Path) -> None:
    """No secret: refused with advice; insecure_no_secret: accepted."""
    with pytest.raises(ConfigError, match="no webhook secret is configured"):
        parse(config(webhooks={}), base, environ={})
    assert parse(config(webhooks={"insecure_no_secret": True}), base, environ={}).webhooks.insecure_no_secret


def test_short_secrets_are_refused(base: Path) -> None:
    """A secret shorter than 16 characters is refused."""
    (base / "weak").write_text("short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        parse(config(webhooks={"github": {"secret_file": "weak"}}), base, environ={})


def test_environment_variables_override_the_file(base: Path) -> None:
    """RECONCILER_* variables win over the file; secrets can come from the environment."""
    settings = parse(
        config(webhooks={}),
        base,
        environ={
            "RECONCILER_LISTEN": "0.0.0.0:9090",
            "RECONCILER_REPOSITORY_BRANCH": "release",
            "RECONCILER_POLL_INTERVAL": "5m",
            "RECONCILER_LEADER_ELECTION": "false",
            "RECONCILER_WEBHOOK_GITLAB_SECRET": "secret-from-the-environment",
        },
    )
    assert settings.webhooks.secret("gitlab") == "secret-from-the-environment"
    assert settings.listen == "0.0.0.0:9090"
    assert settings.repository.branch == "release"
    assert settings.repository.poll_interval == 300
    assert not settings.leader_election.enabled


def test_load_reports_yaml_errors_with_the_line(tmp_path: Path) -> None:
    """A broken file is an error naming the file and line, not a traceback."""
    path = tmp_path / "reconciler.yaml"
    path.write_text("repository:\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(path)


def test_install_crds_defaults_to_true_and_must_be_a_boolean(base: Path) -> None:
    """The daemon installs its CRDs unless told not to (deploy/ sets false); only booleans are accepted."""
    assert parse(config(), base, environ={}).install_crds is True
    assert parse(config(install_crds=False), base, environ={}).install_crds is False
    with pytest.raises(ConfigError, match=r"config\.install_crds: expected true or false"):
        parse(config(install_crds="no"), base, environ={})


def test_depends_on_names_other_environments_of_the_same_cluster_without_cycles(base: Path) -> None:
    """Each problem names the field; a valid graph is kept in order."""
    (base / "kubeconfig-b").write_text("apiVersion: v1\nkind: Config\n")
    clusters = [
        {"name": "local", "kubeconfig": "kubeconfig"},
        {"name": "other", "kubeconfig": "kubeconfig-b"},
    ]

    def envs(*items: dict[str, Any]) -> dict[str, Any]:
        return config(clusters=clusters, environments=list(items))

    crds = {"name": "crds", "path": "crds"}
    settings = parse(envs(crds, {"name": "apps", "path": "apps", "depends_on": ["crds"]}), base, environ={})
    assert [e.depends_on for e in settings.environments] == [(), ("crds",)]
    cases = [
        (
            envs(crds, {"name": "apps", "path": "apps", "depends_on": ["nope"]}),
            r"environments\[1\]\.depends_on: 'nope' is not",
        ),
        (
            envs({"name": "apps", "path": "apps", "depends_on": ["apps"]}),
            r"environments\[0\]\.depends_on: 'apps' is not another",
        ),
        (
            envs(crds, {"name": "apps", "path": "apps", "cluster": "other", "depends_on": ["crds"]}),
            r"environments\[1\]\.depends_on: 'crds' syncs to another cluster",
        ),
        (
            envs(
                {"name": "a", "path": "a", "depends_on": ["b"]},
                {"name": "b", "path": "b", "depends_on": ["c"]},
                {"name": "c", "path": "c", "depends_on": ["a"]},
            ),
            r"environments\[0\]\.depends_on: a cycle: a → b → c → a",
        ),
        (
            envs({"name": "a", "path": "a", "depends_on": "crds"}),
            r"environments\[0\]\.depends_on: expected a list",
        ),
    ]
    for raw, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse(raw, base, environ={})


def test_clusters_take_a_kubeconfig_secret_probe_interval_timeout_and_concurrency(base: Path) -> None:
    """A second cluster reached through a kubeconfig Secret of the home cluster, with its own probe
    interval, request timeout and concurrent syncs; the home cluster is the first one by default."""
    raw = config(
        clusters=[
            {"name": "home", "kubeconfig": "kubeconfig"},
            {
                "name": "prod-eu",
                "kubeconfig_secret": {"namespace": "reconciler-system", "name": "prod-eu"},
                "probe_interval": "2s",
                "request_timeout": "10s",
                "max_concurrent_syncs": 2,
            },
        ],
        environments=[{"name": "production", "path": "production", "cluster": "prod-eu"}],
    )
    settings = parse(raw, base, environ={})
    assert settings.home_cluster == "home"
    remote = settings.cluster("prod-eu")
    assert remote.kubeconfig_secret is not None
    assert (remote.kubeconfig_secret.namespace, remote.kubeconfig_secret.key) == (
        "reconciler-system",
        "kubeconfig",
    )
    assert (remote.probe_interval, remote.request_timeout, remote.max_concurrent_syncs) == (2.0, 10.0, 2)
    assert settings.cluster("home").max_concurrent_syncs == 0  # the daemon's ``workers``


@pytest.mark.parametrize(
    ("clusters", "leader_cluster", "message"),
    [
        (
            [
                {"name": "a", "kubeconfig_secret": {"namespace": "ns", "name": "a"}},
                {"name": "b", "kubeconfig": "kubeconfig"},
            ],
            None,
            "clusters[0].kubeconfig_secret: 'a' is the home cluster",
        ),
        (
            [
                {"name": "a", "kubeconfig": "kubeconfig"},
                {"name": "b", "kubeconfig_secret": {"namespace": "ns", "name": "b"}},
            ],
            "b",
            "clusters[1].kubeconfig_secret: 'b' is the home cluster",
        ),
        (
            [
                {
                    "name": "a",
                    "kubeconfig": "kubeconfig",
                    "kubeconfig_secret": {"namespace": "ns", "name": "a"},
                }
            ],
            None,
            "clusters[0]: set exactly one of",
        ),
        (
            [{"name": "a", "kubeconfig": "kubeconfig", "probe_interval": "0s"}],
            None,
            "clusters[0].probe_interval",
        ),
        (
            [{"name": "a", "kubeconfig": "kubeconfig", "max_concurrent_syncs": 0}],
            None,
            "clusters[0].max_concurrent_syncs",
        ),
    ],
)
def test_cluster_connection_errors_name_the_field(
    base: Path, clusters: list[dict[str, Any]], leader_cluster: str | None, message: str
) -> None:
    raw = config(clusters=clusters, environments=[{"name": "staging", "path": "staging", "cluster": "a"}])
    if leader_cluster:
        raw["leader_election"] = {"cluster": leader_cluster}
    with pytest.raises(ConfigError) as error:
        parse(raw, base, environ={})
    assert message in str(error.value)


def test_sharding_replaces_leader_election_and_checks_its_timings(base: Path) -> None:
    settings = parse(
        config(sharding={"enabled": True, "group": "platform", "lease_duration": "8s"}), base, environ={}
    )
    assert settings.sharding.enabled
    assert (settings.sharding.group, settings.sharding.lease_duration) == ("platform", 8.0)
    assert not settings.leader_election.enabled  # every replica works; no leader
    assert parse(config(), base, environ={}).leader_election.enabled  # the default stays one leader
    for sharding, field in (
        ({"enabled": True, "lease_duration": "4s", "safety_margin": "2s"}, "sharding.safety_margin"),
        ({"enabled": True, "lease_duration": "10s", "renew_interval": "5s"}, "sharding.renew_interval"),
        ({"enabled": True, "group": "Not A Name"}, "sharding.group"),
    ):
        with pytest.raises(ConfigError) as error:
            parse(config(sharding=sharding), base, environ={})
        assert field in str(error.value)
