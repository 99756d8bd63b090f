"""`make demo`'s stack (scripts/demo.sh, envoy/demo.yaml) driven by real MCP clients."""

import json
import signal
import subprocess

import pytest
import requests

from harness import ROOT, Process, port_open, wait_until

MCP_URL = "http://localhost:8080/mcp"
DEMO_PORTS = (8080, 8081, 9000, 9901, 3101, 3102)


@pytest.fixture(scope="module")
def demo(log_dir):
    busy = [port for port in DEMO_PORTS if port_open(port)]
    if busy:
        pytest.fail(f"the demo's ports {busy} are taken on this machine")
    proc = Process("demo", ["bash", str(ROOT / "scripts" / "demo.sh")], log_dir, cwd=ROOT)

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


def run_client(client, user, allowed, forbidden):
    result = subprocess.run([*CLIENTS[client], MCP_URL, user, "mcp-demo", allowed, forbidden],
                            capture_output=True, text=True, timeout=180, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_demo_prints_what_a_user_needs(demo):
    banner = demo.log()
    for needed in ("http://localhost:8080/mcp", "alice (mcp-developers)", "password: mcp-demo", "VS Code", "Claude"):
        assert needed in banner, needed
    assert requests.get("http://localhost:8080/.well-known/oauth-protected-resource/mcp", timeout=5).status_code == 200


@pytest.mark.parametrize("user", list(EXPECTED))
@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_real_client_signs_in_and_sees_exactly_what_its_user_may_use(demo, client, user):
    """Discovery, registration, PKCE login (consent and login pages followed headlessly), the
    filtered tool list, an allowed call that passes and a forbidden one refused with 403."""
    tools, allowed, forbidden = EXPECTED[user]
    seen = run_client(client, user, allowed, forbidden)
    assert set(seen["tools"]) == tools
    if allowed:
        assert seen["allowed"]["ok"], seen
    if forbidden:
        assert not seen["forbidden"]["ok"], seen
        assert "denied by authorization policy" in seen["forbidden"]["error"] or "403" in seen["forbidden"]["error"]


def test_the_typescript_sdk_goes_through_the_401_and_gets_a_refresh_token(demo):
    seen = run_client("typescript-sdk", "alice", "", "")
    assert seen["sawUnauthorized"] and seen["gotToken"] and seen["hadRefreshToken"]


def test_ctrl_c_stops_the_whole_stack(demo):
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0
    assert "stopped." in demo.log()
    wait_until(lambda: not any(port_open(port) for port in DEMO_PORTS), 15, "every demo port to close")
