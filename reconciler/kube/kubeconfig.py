"""Kubeconfigs held in Secrets: parsed, checked and turned into a client without ever touching the
local filesystem's credentials or running a command.

A kubeconfig read from a Secret names a remote cluster the daemon should reach with what is written in
it, and nothing else: it must carry its credentials inline (``certificate-authority-data``,
``client-certificate-data``/``client-key-data``, ``token``, ``username``/``password``). File references
(``certificate-authority``, ``client-certificate``, ``client-key``, ``tokenFile``) would make the daemon
read its own files (its service account token, its keys), and ``exec``/``auth-provider`` would make it
run a command or call a cloud: both are refused with the field named. Errors never include the
kubeconfig's content.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")
PLUGIN_FIELDS = ("exec", "auth-provider")


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used; the message names the field, never a credential."""


def _entries(config: dict[str, Any], section: str, field: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for item in config.get(section) or []:
        if not isinstance(item, dict) or not isinstance(item.get(field), dict):
            raise KubeconfigError(f"{section}: every entry needs a name and a {field!r} mapping")
        found.append((str(item.get("name", "?")), item[field]))
    return found


def check(config: object) -> dict[str, Any]:
    """``config`` as a kubeconfig mapping whose credentials are all inline; else ``KubeconfigError``."""
    if not isinstance(config, dict) or not config.get("clusters"):
        raise KubeconfigError("not a kubeconfig (no clusters)")
    for name, cluster in _entries(config, "clusters", "cluster"):
        if not isinstance(cluster.get("server"), str):
            raise KubeconfigError(f"clusters[{name}]: no server")
        if "certificate-authority" in cluster:
            raise KubeconfigError(
                f"clusters[{name}].certificate-authority: a file path; use certificate-authority-data"
            )
    for name, user in _entries(config, "users", "user"):
        for field in PLUGIN_FIELDS:
            if field in user:
                raise KubeconfigError(
                    f"users[{name}].{field}: credential plugins are not run from a Secret's kubeconfig; "
                    "use a token or client certificate data"
                )
        for field in FILE_FIELDS:
            if field in user:
                raise KubeconfigError(f"users[{name}].{field}: a file path; put the credential inline")
    return config


def parse(data: bytes) -> dict[str, Any]:
    """The kubeconfig in ``data`` (YAML or JSON), checked (see ``check``)."""
    try:
        loaded = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        # the YAML error's context can quote the content: only its position is said
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KubeconfigError(f"not valid YAML{where}") from None
    return check(loaded)


async def configuration(data: bytes, context: str | None, temp_dir: Path) -> k8s_client.Configuration:
    """A client configuration for the kubeconfig in ``data`` (its certificates are written to files
    in ``temp_dir``, readable by this user only)."""
    config = parse(data)
    await asyncio.to_thread(temp_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
    result = k8s_client.Configuration()
    try:
        await k8s_config.load_kube_config_from_dict(
            config, context=context, client_configuration=result, temp_file_path=str(temp_dir)
        )
    except k8s_config.ConfigException as exc:
        # its messages name contexts and fields, not credentials
        raise KubeconfigError(str(exc).splitlines()[0][:300]) from None
    return result
