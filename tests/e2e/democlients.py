"""Running `make demo`'s stack and real MCP clients against it, for the demo tests."""

import json
import os
import signal
import subprocess

import pytest

from harness import ROOT, Process, port_open, wait_until

MCP_URL = "http://localhost:8080/mcp"
DEMO_PORTS = (8080, 8081, 9000, 9901, 3101, 3102)
CLIENTS = {
    "typescript-sdk": ["node", str(ROOT / "tests" / "clients" / "ts-sdk-client.mjs")],
    "python-sdk": [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "clients" / "py_sdk_client.py")],
    "fastmcp": [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "clients" / "fastmcp_client.py")],
}
ALL_TOOLS = {"github__list_repos", "github__create_issue", "github__delete_repo",
             "kubernetes__get_pods", "kubernetes__scale_deployment", "kubernetes__delete_namespace"}
# Seed 000: developers everything but delete_namespace, platform everything, anyone else nothing.
EXPECTED = {
    "alice": (ALL_TOOLS - {"kubernetes__delete_namespace"}, "kubernetes__get_pods", "kubernetes__delete_namespace"),
    "bob": (ALL_TOOLS, "kubernetes__delete_namespace", ""),
    "carol": (set(), "", "github__list_repos"),
}


def run_client(client, user, allowed, forbidden, password="mcp-demo", env=None):
    result = subprocess.run([*CLIENTS[client], MCP_URL, user, password, allowed, forbidden],
                            capture_output=True, text=True, timeout=180, cwd=ROOT / "tests",
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])




def start_demo(log_dir, name, env):
    """scripts/demo.sh with `env`, until it says it is running; stopped with Ctrl-C after."""
    busy = [port for port in DEMO_PORTS if port_open(port)]
    if busy:
        pytest.fail(f"the demo's ports {busy} are taken on this machine")
    proc = Process(name, ["bash", str(ROOT / "scripts" / "demo.sh")], log_dir, cwd=ROOT, env=env)

    def ready():
        if not proc.alive():
            raise RuntimeError(f"the demo exited:\n{proc.log()}")
        return "demo is running" in proc.log()
    wait_until(ready, 180, "the demo stack", interval=0.5)
    yield proc
    if proc.alive():
        proc.proc.send_signal(signal.SIGINT)
        proc.proc.wait(timeout=30)
    proc.stop()
