"""Health of live objects: one pure function per kind, a kstatus-style fallback, and aggregation.

``assess(live)`` returns a ``Health`` (status plus a human message). Statuses are ordered by severity
so that the worst one wins when objects are aggregated into an environment's health.
"""

from reconciler.health.assess import Health, HealthStatus, aggregate, assess

__all__ = ["Health", "HealthStatus", "aggregate", "assess"]
