"""Pure planning: ordering into stages, pairing desired/inventory/live, HPA safety, prune sets, diffs.

Nothing in this package does I/O: every function takes plain data and returns plain data, and is
unit-tested with YAML fixtures.
"""
