"""reconciler: an event-driven GitOps reconciler for kustomize environments.

The package is organised by domain: ``devcluster`` owns the local Kubernetes control plane used by the
demo and the tests; ``cli`` owns the command line.
"""

__version__ = "0.1.0"
