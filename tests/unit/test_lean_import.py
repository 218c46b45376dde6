"""reconciler loads kubernetes-asyncio without its generated API and model classes (``kube.lean``):
less memory and start-up CPU in the daemon and every CLI run, and code that wants the generated
classes still gets them, on first use."""

from __future__ import annotations

import json
import subprocess
import sys

# the current RSS (VmRSS): a child's peak (ru_maxrss) counts what it shared with pytest before exec
PROBE = """
import json, sys
import {module}
generated = [n for n in sys.modules if n.startswith("kubernetes_asyncio.client.models.v1_")]
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
rss = int(status["VmRSS"].split()[0]) // 1024
print(json.dumps({{"generated": len(generated), "rss_mib": rss}}))
"""


def probe(module: str) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found: dict[str, int] = json.loads(result.stdout)
    return found


def test_the_daemon_and_the_cli_import_none_of_the_generated_classes() -> None:
    lean, full = probe("reconciler.daemon, reconciler.cli"), probe("kubernetes_asyncio")
    print(
        f"RSS after import: reconciler {lean['rss_mib']} MiB, kubernetes_asyncio alone {full['rss_mib']} MiB"
    )
    assert lean["generated"] == 0
    assert full["generated"] > 500  # the ordinary import: every model


def test_the_generated_classes_still_load_when_asked_for() -> None:
    code = (
        "import reconciler.kube\n"
        "import kubernetes_asyncio\n"
        "from kubernetes_asyncio import client, config\n"
        "assert client.CoreV1Api.__name__ == 'CoreV1Api'\n"
        "assert client.models.V1Pod.__name__ == 'V1Pod'\n"
        "assert kubernetes_asyncio.__version__\n"
        "assert callable(config.load_kube_config)\n"
        "assert client.ApiClient is client.api_client.ApiClient\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
