"""kubernetes-asyncio without its generated API and model classes until someone asks for them.

reconciler uses the library's connection handling (``ApiClient``, ``Configuration``, the REST client,
kubeconfig and in-cluster loading, credential refresh) but none of its ~1,000 generated API and model
classes: every request is raw JSON. Importing ``kubernetes_asyncio`` the ordinary way executes all of
them (the package ``__init__`` imports every API, the ``client`` package every model): about 60 MiB of
memory and a second of CPU in every process, the daemon's and each CLI run's.

``install()`` (called before reconciler's first import of the library) registers the two packages
``kubernetes_asyncio`` and ``kubernetes_asyncio.client`` (and ``client.models``) as *lazy* modules:
created from their real specs, so their submodules import as usual, but with their ``__init__`` not
run. The names reconciler and the library's own config loaders take from ``kubernetes_asyncio.client``
(``ApiClient``, ``Configuration``) are set from their submodules; any other name asked of a lazy package
(``client.CoreV1Api``, ``client.models.V1Pod``) runs its real ``__init__`` then, in place, so code that
uses the generated classes still works, it just pays for them when it does. When the library was
imported before ``install`` (by a test, say), nothing is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

PACKAGES = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


def _lazy(name: str) -> ModuleType:
    """The package ``name`` from its spec, its ``__init__`` run on the first unknown attribute."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an importable package")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    state = {"loaded": False}

    def __getattr__(attribute: str) -> object:
        if attribute.startswith("__") and attribute not in ("__version__", "__project__", "__all__"):
            raise AttributeError(attribute)  # probes by tools (__wrapped__, __test__, ...) load nothing
        if importlib.util.find_spec(f"{name}.{attribute}") is not None:
            return importlib.import_module(f"{name}.{attribute}")  # a submodule: import just it
        if not state["loaded"]:
            state["loaded"] = True
            loader.exec_module(module)  # the real __init__, in place: every generated class
        if attribute in module.__dict__:
            return module.__dict__[attribute]
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def install() -> bool:
    """Make the library's packages lazy (see the module docstring); False when it was imported
    already or its layout is not the expected one (then nothing is changed)."""
    if any(name in sys.modules for name in PACKAGES):
        return False
    installed: list[str] = []
    try:
        for name in PACKAGES:
            _lazy(name)
            installed.append(name)
        client = sys.modules["kubernetes_asyncio.client"]
        api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
        configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
        client.ApiClient = api_client.ApiClient  # type: ignore[attr-defined]
        client.Configuration = configuration.Configuration  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        for name in [*installed, *(n for n in sys.modules if n.startswith("kubernetes_asyncio."))]:
            sys.modules.pop(name, None)
        return False
    return True
