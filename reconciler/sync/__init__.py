"""The sync of one environment, as a pipeline of stages:

    render -> access policy -> plan (live state) -> validate (server dry-run) -> inventory (previous ∪
    desired) -> apply by stage, waiting for health -> prune -> inventory (final) -> result

``engine`` strings the stages together; each stage is a module of its own: ``access`` (the
environment's policy), ``live`` (live state, ownership, what is already as desired), ``validate``
(dry-runs), ``apply``, ``health`` (watch-driven waits), ``prune``, and ``correction`` (drift). Every
object carries one ``planned.Plan``; every sync ends on an ``outcome.Condition`` and ``Reason``.

Semantics a user can rely on:

* **Access policy before anything.** Every rendered object is checked against the environment's
  ``AccessPolicy`` (``reconciler.tenancy``: the daemon's own namespace and kinds, allowed namespaces,
  allowed cluster-scoped kinds) before the first dry-run: one violation refuses the whole revision,
  naming every offending object, with zero writes and no prune.
* **Validation before the first write.** Every object that may change is applied with
  ``dryRun=All`` first, concurrently. If any is refused, nothing is written for that revision and the
  error names every refused object with the API server's message. Objects in a namespace that the same
  change creates are dry-run in the ``default`` namespace instead (schema, defaulting and admission
  all run; only namespace-specific policy does not). Custom resources whose CustomResourceDefinition
  arrives in the same change cannot be dry-run before the CRD exists: they are validated right after
  the CRD and Namespace stage is applied and Established, before any other write; if they are refused
  then, only that stage has been written.
* **No needless writes.** An object whose manifest hash equals the one recorded in the inventory and
  whose live state already holds every desired field is not even dry-run; an object whose dry-run
  result equals the live object is not written. A no-op re-sync with warm watch caches makes no write.
* **Ordered apply.** Stages from ``plan.ordering``; each stage that wrote something is waited on until
  healthy (bounded by the health timeout, which reports every object that is not healthy and why).
* **Secret values never in a message.** Every message of the result (and of drift corrections) is
  scrubbed of the Secret values the render holds, in every form an error may quote them.
* **Safe prune.** Only after every stage succeeded, only what ``plan.prune`` allows, and never when the
  render is empty or failed, or the circuit breaker trips; never the daemon's own objects.
* **Crash safety.** The inventory is written before the first object write and after the prune, so a
  sync killed at any point leaves an inventory that covers everything it may have created.
"""

from reconciler.sync.engine import Engine
from reconciler.sync.outcome import (
    STAGES,
    Condition,
    PolicyViolationError,
    Progress,
    Reason,
    SyncFailedError,
    SyncOptions,
    SyncResult,
)
from reconciler.sync.planned import mark_owned, prepare

__all__ = [
    "STAGES",
    "Condition",
    "Engine",
    "PolicyViolationError",
    "Progress",
    "Reason",
    "SyncFailedError",
    "SyncOptions",
    "SyncResult",
    "mark_owned",
    "prepare",
]
