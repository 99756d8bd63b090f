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


def ts_client(user, allowed, forbidden):
    result = subprocess.run(["node", str(ROOT / "tests" / "clients" / "ts-sdk-client.mjs"), MCP_URL, user, "mcp-demo",
                             allowed, forbidden], capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_demo_prints_what_a_user_needs(demo):
    banner = demo.log()
    for needed in ("http://localhost:8080/mcp", "alice (mcp-developers)", "password: mcp-demo", "VS Code", "Claude"):
        assert needed in banner, needed
    assert requests.get("http://localhost:8080/.well-known/oauth-protected-resource/mcp", timeout=5).status_code == 200


def test_alice_the_developer_signs_in_with_the_typescript_sdk_and_sees_all_but_the_forbidden_tool(demo):
    seen = ts_client("alice", "kubernetes__get_pods", "kubernetes__delete_namespace")
    assert seen["sawUnauthorized"] and seen["gotToken"] and seen["hadRefreshToken"]
    assert "kubernetes__get_pods" in seen["tools"] and "github__list_repos" in seen["tools"]
    assert "kubernetes__delete_namespace" not in seen["tools"]
    assert seen["allowed"]["ok"] and "Running" in seen["allowed"]["text"]
    assert not seen["forbidden"]["ok"] and "call denied by authorization policy" in seen["forbidden"]["error"]


def test_bob_of_the_platform_team_may_use_everything(demo):
    seen = ts_client("bob", "kubernetes__delete_namespace", "")
    assert "kubernetes__delete_namespace" in seen["tools"] and len(seen["tools"]) == 6
    assert seen["allowed"]["ok"] and "deleted" in seen["allowed"]["text"]


def test_carol_in_no_group_sees_nothing_and_may_call_nothing(demo):
    seen = ts_client("carol", "", "github__list_repos")
    assert seen["tools"] == []
    assert not seen["forbidden"]["ok"] and "403" in seen["forbidden"]["error"]


def test_the_python_sdk_signs_in_and_is_filtered_the_same_way(demo):
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "clients" / "py_sdk_client.py"),
                             MCP_URL, "alice", "mcp-demo", "github__list_repos", "kubernetes__delete_namespace"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert "github__list_repos" in seen["tools"] and "kubernetes__delete_namespace" not in seen["tools"]
    assert seen["allowed"]["ok"] and "acme/api" in seen["allowed"]["text"]
    assert not seen["forbidden"]["ok"] and "denied by authorization policy" in seen["forbidden"]["error"]
    assert seen["hadRefreshToken"]


def test_ctrl_c_stops_the_whole_stack(demo):
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0
    assert "stopped." in demo.log()
    wait_until(lambda: not any(port_open(port) for port in DEMO_PORTS), 15, "every demo port to close")
