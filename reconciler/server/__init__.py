"""The daemon's HTTP surface (aiohttp): push webhooks, health probes, status API and metrics."""
