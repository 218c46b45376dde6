"""The access policy of an environment (reconciler.tenancy): pure rules over rendered object keys."""

from __future__ import annotations

import pytest

from reconciler.config_fields import ConfigError
from reconciler.config_fields import secret as check_secret
from reconciler.kube.errors import from_status
from reconciler.objects import ObjectKey
from reconciler.plan.diff import scrub, secret_values
from reconciler.tenancy import AccessPolicy, Target, check, message, own_namespaces

RESERVED = frozenset({"reconciler-system"})


def deployment(namespace: str) -> Target:
    return Target(ObjectKey("apps", "Deployment", namespace, "web"), True)


def namespace(name: str) -> Target:
    return Target(ObjectKey("", "Namespace", "", name), False)


def rules(targets: list[Target], policy: AccessPolicy, own: set[str] | None = None) -> list[tuple[str, str]]:
    return [(str(v.key), v.rule) for v in check(targets, policy, own or set())]


def test_default_policy_allows_only_the_namespaces_the_render_creates() -> None:
    """Without configured namespaces, objects may go only into namespaces the render itself declares."""
    policy = AccessPolicy(reserved_namespaces=RESERVED)
    own = own_namespaces(["team-a"], foreign=[], policy=policy)
    targets = [namespace("team-a"), deployment("team-a"), deployment("team-b")]
    assert rules(targets, policy, own) == [("Deployment/team-b/web", "namespace")]


def test_a_declared_namespace_that_exists_unmanaged_or_belongs_to_another_environment_is_not_own() -> None:
    """Declaring another team's (or an administrator's) namespace does not make it the render's own."""
    policy = AccessPolicy(reserved_namespaces=RESERVED)
    own = own_namespaces(
        ["team-a", "payments", "default", "kube-system"], foreign=["payments"], policy=policy
    )
    assert own == {"team-a"}
    violations = rules([namespace("payments"), deployment("payments")], policy, own)
    assert violations == [("Namespace/payments", "namespace"), ("Deployment/payments/web", "namespace")]


def test_the_daemon_namespace_and_kinds_are_reserved_whatever_the_policy() -> None:
    """Even an unrestricted policy or a "*" glob cannot write in the daemon's namespace or its kinds."""
    targets = [
        Target(ObjectKey("", "ConfigMap", "reconciler-system", "reconciler-config"), True),
        Target(ObjectKey("", "Secret", "reconciler-system", "reconciler-webhooks"), True),
        namespace("reconciler-system"),
        Target(ObjectKey("reconciler.dev", "Environment", "elsewhere", "shop"), True),
        Target(ObjectKey("reconciler.dev", "Promotion", "", "p"), None),
        Target(
            ObjectKey("apiextensions.k8s.io", "CustomResourceDefinition", "", "promotions.reconciler.dev"),
            False,
        ),
    ]
    for policy in (
        AccessPolicy(unrestricted=True, reserved_namespaces=RESERVED),
        AccessPolicy(namespaces=("*",), cluster_scoped=("*",), reserved_namespaces=RESERVED),
    ):
        assert {rule for _, rule in rules(targets, policy)} == {"reserved"}
        assert len(rules(targets, policy)) == len(targets)


def test_cluster_scoped_kinds_need_to_be_listed_by_kind_or_group_and_kind() -> None:
    """ClusterRoleBindings are refused unless listed; a group-qualified entry must match the group."""
    binding = Target(ObjectKey("rbac.authorization.k8s.io", "ClusterRoleBinding", "", "admin"), False)
    assert rules([binding], AccessPolicy()) == [("ClusterRoleBinding/admin", "cluster-scoped")]
    assert rules([binding], AccessPolicy(cluster_scoped=("ClusterRoleBinding",))) == []
    assert (
        rules([binding], AccessPolicy(cluster_scoped=("rbac.authorization.k8s.io/ClusterRoleBinding",))) == []
    )
    assert rules([binding], AccessPolicy(cluster_scoped=("example.com/ClusterRoleBinding",))) != []


def test_globs_and_unknown_scopes() -> None:
    """Globs match namespaces; an object whose scope is unknown must pass both rules."""
    policy = AccessPolicy(namespaces=("team-a-*",))
    assert rules([deployment("team-a-web"), deployment("team-ab")], policy) == [
        ("Deployment/team-ab/web", "namespace")
    ]
    unknown = Target(ObjectKey("example.com", "Widget", "team-a-web", "w"), None)
    assert rules([unknown], policy) == [("Widget/team-a-web/w", "cluster-scoped")]
    namespaced_without_namespace = Target(ObjectKey("", "ConfigMap", "", "c"), True)
    assert rules([namespaced_without_namespace], policy) == [("ConfigMap/c", "namespace")]


def test_the_message_names_every_object_and_where_the_policy_lives() -> None:
    """One error lists each offending object with its rule and says the policy is in the configuration."""
    policy = AccessPolicy(reserved_namespaces=RESERVED)
    violations = check([deployment("b"), deployment("reconciler-system")], policy, set())
    text = message(violations, policy)
    assert "Deployment/b/web" in text
    assert "Deployment/reconciler-system/web" in text
    assert "[reserved]" in text
    assert "[namespace]" in text
    assert "daemon's configuration" in text


def test_secret_values_are_scrubbed_in_every_form() -> None:
    """A Secret's value is removed from a message as written, base64-decoded, escaped and line by line."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": "Y2FuYXJ5LXZhbHVlLTQy"},  # canary-value-42
        "stringData": {"b": 'first-line-secret\nsecond "quoted" line'},
    }
    values = secret_values([secret])
    text = (
        'data[a]: Invalid value: "canary-value-42"; b: first-line-secret; '
        'raw Y2FuYXJ5LXZhbHVlLTQy; escaped second \\"quoted\\" line'
    )
    cleaned = scrub(text, values)
    for leaked in ("canary-value-42", "first-line-secret", "Y2FuYXJ5LXZhbHVlLTQy", "quoted"):
        assert leaked not in cleaned
    assert "data[a]: Invalid value:" in cleaned


def test_api_errors_about_secrets_redact_quoted_values() -> None:
    """Whatever the API server quotes back in an error about a Secret is redacted in the message."""
    body = (
        b'{"kind":"Status","message":"Secret \\"x\\" is invalid: data[.dockerconfigjson]: '
        b'Invalid value: \\"<secret contents>hunter2-canary\\": invalid character","reason":"Invalid"}'
    )
    error = from_status("Secret/shop/x", 422, body)
    assert "hunter2-canary" not in str(error)
    assert "Invalid value: [redacted]" in str(error)
    other = from_status("ConfigMap/shop/x", 422, body)
    assert "hunter2-canary" in str(other)


@pytest.mark.parametrize(
    "value",
    [
        "REPLACE-ME-with-a-random-secret-of-at-least-16-characters",
        "changeme-changeme-changeme",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "s3cr3t",
        "example-webhook-secret-value",
    ],
)
def test_placeholder_secrets_are_refused_without_echoing_them(value: str) -> None:
    """Template values, short or repetitive secrets are refused, and the error never repeats them."""
    with pytest.raises(ConfigError) as caught:
        check_secret(value, "webhooks.github.secret_file")
    assert "webhooks.github.secret_file" in str(caught.value)
    assert value not in str(caught.value)


def test_a_random_secret_is_accepted() -> None:
    """A random hex secret passes."""
    assert check_secret("9f86d081884c7d659a2feaa0c55ad015", "x") == "9f86d081884c7d659a2feaa0c55ad015"
