"""The parts of the daemon (``reconciler.daemon.Daemon`` is their facade), one responsibility each:

- ``environment``: what the daemon knows about one environment (``EnvironmentState``) and its status;
- ``tasks``: the supervised asyncio tasks (a loop that dies fails liveness) and background writes;
- ``reporting``: Environment objects, Events and the metrics of a finished sync or of drift;
- ``fetching``: the Git fetch, the verified-commit gate, render-input keys, commits webhooks announced;
- ``syncing``: one environment's sync step (dependencies, options, what it leaves in the state);
- ``intake``: the HTTP server's side (push webhooks, readiness, statuses) and followers' nudges;
- ``clusters``: a connection per cluster (client, watch cache, engines, Environment objects), kubeconfigs
  held in Secrets, and a probe per cluster telling when one stops or starts answering;
- ``shard``: with sharding, this replica's membership, its share of the environments and the permit
  (claim and write fence) a sync or drift correction runs under;
- ``wiring``: the HTTP server and the periodic loops (Git poll, resync).
"""
