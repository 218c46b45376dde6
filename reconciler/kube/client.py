"""The one Kubernetes client of reconciler: discovery, server-side apply, get, list, delete and watch.

Built on kubernetes-asyncio's ApiClient for authentication (kubeconfig, in-cluster service account,
exec plugins) and connection pooling, but speaks raw JSON: reconciler handles arbitrary kinds,
including custom resources, so typed models would only get in the way. Every failure becomes one of
``reconciler.kube.errors``; transient failures of idempotent requests are retried with backoff and
jitter. Requests are counted by verb and status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

from reconciler import __version__, retry
from reconciler.kube import fencing, kubeconfig
from reconciler.kube.errors import (
    AlreadyExistsError,
    KubeError,
    NoMatchError,
    NotFoundError,
    TransientError,
    from_status,
)
from reconciler.kube.watch import WatchSelectors, events
from reconciler.objects import FIELD_MANAGER, Body, ObjectKey

JSON = "application/json"
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
APPLY_PATCH = "application/apply-patch+yaml"
USER_AGENT = f"reconciler/{__version__}"


@dataclass(frozen=True)
class ResourceInfo:
    """How the API server serves one kind: its group, version, plural resource name and scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``group/version``, or ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        """The REST path of the collection (or one object when ``name`` is given)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


@dataclass(frozen=True)
class ApplyOptions:
    """Options of one server-side apply."""

    field_manager: str = FIELD_MANAGER
    force: bool = True
    dry_run: bool = False


def _without_environment_lookups(api: k8s_client.ApiClient) -> None:
    """Turn off the HTTP session's ``trust_env``, which kubernetes-asyncio turns on: it looks up proxy
    variables and ~/.netrc for every request. The API server is reached directly (a proxy would be set in
    the kubeconfig, which the client honours on its own). Measured on the local cluster: 400 GETs took
    0.63-0.71 s of client CPU with it, 0.29 s without (wall 1.4 s -> 1.05 s)."""
    session = getattr(getattr(api, "rest_client", None), "pool_manager", None)
    if session is not None and hasattr(session, "_trust_env"):
        session._trust_env = False


def _ignore(_verb: str, _status: int, _seconds: float) -> None:
    """The default request observer: nothing."""


def _split_api_version(api_version: str) -> tuple[str, str]:
    if "/" in api_version:
        group, version = api_version.rsplit("/", 1)
        return group, version
    return "", api_version


class KubeClient:
    """An authenticated connection to one API server."""

    def __init__(
        self,
        api: k8s_client.ApiClient,
        *,
        request_timeout: float = 30.0,
        retries: int = 3,
        max_in_flight: int = 32,
    ) -> None:
        self.api = api
        # The API server's audit log and apiserver metrics name clients by user agent.
        self.api.user_agent = USER_AGENT
        _without_environment_lookups(api)
        # One bound for every short request of this client (watches are not counted): the connection
        # pool stays small (each new connection costs a TLS handshake) and the API server is not flooded.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.request_timeout = request_timeout
        self.retries = retries
        self.requests: Counter[tuple[str, int]] = Counter()
        # called with (verb, HTTP status or 0, seconds) after every short request (metrics per cluster)
        self.observe: Callable[[str, int, float], None] = _ignore
        self.impersonate = ""  # the user every request is made as ("" = our own identity)
        self._owns_api = True
        self._discovery: dict[tuple[str, str], dict[str, ResourceInfo]] = {}
        self._discovery_lock = asyncio.Lock()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    async def from_kubeconfig(
        cls, path: Path | str | None = None, context: str | None = None, *, request_timeout: float = 30.0
    ) -> KubeClient:
        """A client for a kubeconfig file (default: $KUBECONFIG or ~/.kube/config) and context."""
        configuration = k8s_client.Configuration()
        await k8s_config.load_kube_config(
            config_file=str(path) if path else None, context=context, client_configuration=configuration
        )
        return cls(k8s_client.ApiClient(configuration=configuration), request_timeout=request_timeout)

    @classmethod
    async def from_kubeconfig_data(
        cls, data: bytes, context: str | None, temp_dir: Path, *, request_timeout: float = 30.0
    ) -> KubeClient:
        """A client for a kubeconfig held in memory (a Secret's): inline credentials only, no
        credential plugins (``reconciler.kube.kubeconfig``); ``KubeconfigError`` otherwise."""
        configuration = await kubeconfig.configuration(data, context, temp_dir)
        return cls(k8s_client.ApiClient(configuration=configuration), request_timeout=request_timeout)

    @classmethod
    def in_cluster(cls, *, request_timeout: float = 30.0) -> KubeClient:
        """A client using the pod's service account: token and CA files (in
        ``/var/run/secrets/kubernetes.io/serviceaccount``, or ``$RECONCILER_SERVICEACCOUNT_DIR``) and
        ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``. The token file is re-read as kubelet
        rotates it."""
        directory = Path(os.environ.get("RECONCILER_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR))
        configuration = k8s_client.Configuration()
        loader = InClusterConfigLoader(
            token_filename=str(directory / "token"),
            cert_filename=str(directory / "ca.crt"),
            environ=os.environ,
        )
        loader.load_and_set(configuration)
        return cls(k8s_client.ApiClient(configuration=configuration), request_timeout=request_timeout)

    def impersonating(self, user: str) -> KubeClient:
        """A client making every request as ``user`` (``Impersonate-User``), such as
        ``system:serviceaccount:team-a:deployer``: the cluster's RBAC for that identity then bounds
        what it can do. It shares this client's connection pool, request bound and counters; closing it
        leaves them open. Our own identity needs ``impersonate`` on exactly that user."""
        other = KubeClient.__new__(KubeClient)
        other.__dict__.update(self.__dict__)
        other.impersonate = user
        other._owns_api = False
        other._discovery = {}  # what the impersonated identity may discover can differ
        other._discovery_lock = asyncio.Lock()
        return other

    @property
    def host(self) -> str:
        """The API server URL."""
        return str(self.api.configuration.host)

    async def close(self) -> None:
        """Close the connection pool (unless it belongs to the client this one impersonates from)."""
        if self._owns_api:
            await self.api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- raw requests ----------------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: Any,
        content_type: str,
        timeout: float | aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        """One HTTP request on the ApiClient's session, with its credentials and TLS settings.

        Sent directly rather than through ``ApiClient.call_api``, which deep-copies every body and header
        through its generic model serializer first: about 0.75 ms of CPU per request, a third of the
        client's CPU in a cold sync of 1,000 objects. Bearer tokens still come from the configuration
        on every request (its refresh hook re-reads a rotated service-account token or re-runs an
        expired credential plugin), client certificates and the CA from the session's TLS context."""
        api = self.api
        configuration = api.configuration
        headers = dict(api.default_headers)
        headers["Content-Type"] = content_type
        headers["Accept"] = JSON
        if self.impersonate:
            headers["Impersonate-User"] = self.impersonate
        if api.cookie:
            headers["Cookie"] = api.cookie
        bearer = (await configuration.auth_settings()).get("BearerToken")
        if bearer and bearer.get("value"):
            headers["authorization"] = bearer["value"]
        url = str(configuration.host) + path
        if query:
            url += "?" + urlencode(query)
        if timeout is None:
            timeout = self.request_timeout
        options: dict[str, Any] = {
            "headers": headers,
            "timeout": timeout
            if isinstance(timeout, aiohttp.ClientTimeout)
            else aiohttp.ClientTimeout(total=timeout),
        }
        if body is not None:
            options["data"] = json.dumps(body, separators=(",", ":")).encode()
        rest = api.rest_client
        if rest.proxy:
            options["proxy"] = rest.proxy
            if rest.proxy_headers:
                options["proxy_headers"] = rest.proxy_headers
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        session: aiohttp.ClientSession = rest.pool_manager
        return await session.request(method, url, **options)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = JSON,
        subject: str = "",
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> Body:
        """One request returning the decoded JSON body; failures raise ``KubeError`` subclasses.
        Transient failures of idempotent requests are retried (``reconciler.retry.request``; at most
        ``attempts`` tries when given, such as 1 for a probe)."""
        tries = attempts if attempts is not None else (1 if method == "POST" else self.retries)
        return await retry.request(
            lambda: self._request_once(method, path, query, body, content_type, subject, timeout), tries
        )

    async def _request_once(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: Any,
        content_type: str,
        subject: str,
        timeout: float | None,
    ) -> Body:
        started = time.monotonic()
        try:
            async with self._in_flight:
                # with sharding: no write without the environment's claim, none outlasting it
                budget = fencing.guard(method, timeout if timeout is not None else self.request_timeout)
                response = await self._send(method, path, query, body, content_type, budget)
                try:
                    data = await response.read()
                finally:
                    response.release()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.requests[(method, 0)] += 1
            self.observe(method, 0, time.monotonic() - started)
            raise TransientError(
                subject or path, f"API server unreachable: {type(exc).__name__}: {exc}"
            ) from None
        self.requests[(method, response.status)] += 1
        self.observe(method, response.status, time.monotonic() - started)
        if 200 <= response.status < 300:
            decoded = json.loads(data) if data else {}
            return decoded if isinstance(decoded, dict) else {"items": decoded}
        raise from_status(subject or path, response.status, data)

    async def text(self, path: str) -> str:
        """GET a non-JSON endpoint (such as /metrics) and return its body as text."""
        response = await self._send("GET", path, None, None, JSON, None)
        try:
            data = await response.read()
        finally:
            response.release()
        self.requests[("GET", response.status)] += 1
        if response.status != 200:
            raise from_status(path, response.status, data)
        return data.decode(errors="replace")

    # -- discovery -------------------------------------------------------------------------------
    async def _load_group_version(self, group: str, version: str) -> dict[str, ResourceInfo]:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self.request("GET", path, subject=f"discovery of {group or 'core'}/{version}")
        except NotFoundError:
            return {}
        kinds: dict[str, ResourceInfo] = {}
        for resource in listing.get("resources") or []:
            name = str(resource.get("name", ""))
            if "/" in name:  # subresources such as deployments/status
                continue
            kinds[str(resource["kind"])] = ResourceInfo(
                group, version, str(resource["kind"]), name, bool(resource.get("namespaced"))
            )
        return kinds

    async def resource(self, api_version: str, kind: str, *, refresh: bool = False) -> ResourceInfo:
        """How ``kind`` of ``api_version`` is served; refreshed once when unknown (a new CRD)."""
        group, version = _split_api_version(api_version)
        async with self._discovery_lock:
            kinds = None if refresh else self._discovery.get((group, version))
            if kinds is None or kind not in kinds:
                kinds = await self._load_group_version(group, version)
                self._discovery[(group, version)] = kinds
        info = kinds.get(kind)
        if info is None:
            raise NoMatchError(
                f"{kind}.{group}" if group else kind,
                f'no matches for kind "{kind}" in version "{api_version}": the API server does not serve it '
                "(is its CustomResourceDefinition installed and established?)",
            )
        return info

    def forget(self, api_version: str) -> None:
        """Drop cached discovery of one group-version (after a CRD change)."""
        self._discovery.pop(_split_api_version(api_version), None)

    # -- object operations -----------------------------------------------------------------------
    async def apply(self, body: Body, options: ApplyOptions | None = None) -> Body:
        """Server-side apply ``body`` and return the object the server answers with."""
        options = options or ApplyOptions()
        key = ObjectKey.of(body)
        info = await self.resource(str(body.get("apiVersion")), key.kind)
        query = [("fieldManager", options.field_manager), ("force", "true" if options.force else "false")]
        if options.dry_run:
            query.append(("dryRun", "All"))
        return await self.request(
            "PATCH",
            info.path(key.namespace, key.name),
            query=query,
            body=body,
            content_type=APPLY_PATCH,
            subject=str(key),
        )

    async def ensure_namespace(self, name: str) -> None:
        """Create namespace ``name`` unless it exists (looks first: creating needs a permission that a
        least-privilege identity does not have once the namespace is there)."""
        subject = f"Namespace/{name}"
        try:
            await self.request("GET", f"/api/v1/namespaces/{quote(name, safe='')}", subject=subject)
        except NotFoundError:
            with contextlib.suppress(AlreadyExistsError):
                await self.request(
                    "POST",
                    "/api/v1/namespaces",
                    body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                    subject=subject,
                )

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Body | None:
        """The live object, or None when it does not exist."""
        info = await self.resource(api_version, kind)
        subject = str(ObjectKey(info.group, kind, namespace if info.namespaced else "", name))
        try:
            return await self.request("GET", info.path(namespace, name), subject=subject)
        except NotFoundError:
            return None

    async def list(
        self, info: ResourceInfo, *, label_selector: str = "", namespace: str = ""
    ) -> tuple[list[Body], str]:
        """Every object of a kind (optionally filtered) and the list's resourceVersion."""
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self.request("GET", info.path(namespace), query=query, subject=f"list {info.plural}")
        items = list(result.get("items") or [])
        for item in items:
            item.setdefault("apiVersion", info.api_version)
            item.setdefault("kind", info.kind)
        return items, str((result.get("metadata") or {}).get("resourceVersion", ""))

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str = "",
        propagation: str = "Background",
    ) -> bool:
        """Delete an object; True when a deletion was requested, False when it was already gone."""
        info = await self.resource(api_version, kind)
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if uid:
            options["preconditions"] = {"uid": uid}
        subject = str(ObjectKey(info.group, kind, namespace if info.namespaced else "", name))
        try:
            await self.request("DELETE", info.path(namespace, name), body=options, subject=subject)
        except NotFoundError:
            return False
        return True

    def watch(
        self,
        info: ResourceInfo,
        resource_version: str,
        *,
        label_selector: str = "",
        field_selector: str = "",
        namespace: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, Body]]:
        """Stream (type, object) watch events from ``resource_version`` until the server ends the watch
        (``reconciler.kube.watch.events``); ``KubeError`` (410 for an expired version) to relist."""
        selectors = WatchSelectors(label_selector, field_selector, namespace, timeout_seconds)
        return events(self, info, resource_version, selectors)

    def request_counts(self) -> Mapping[tuple[str, int], int]:
        """Requests made so far, by (verb, HTTP status; 0 for no answer)."""
        return dict(self.requests)


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying later."""
    return isinstance(error, KubeError) and error.retryable
