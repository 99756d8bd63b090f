"""`make demo`'s stack (scripts/demo.sh, envoy/demo.yaml) driven by real MCP clients."""

import json
import signal

import pytest
import requests

from democlients import CLIENTS, DEMO_PORTS, EXPECTED, run_client, start_demo
from harness import ROOT, port_open, wait_until


@pytest.fixture(scope="module")
def demo(log_dir):
    yield from start_demo(log_dir, "demo", {})


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


def test_the_demo_log_shows_allowed_and_denied_calls_at_its_log_level(demo):
    """Envoy runs at `-l warning`, which hides the filter's own lines: its JSON access log says who
    was allowed or denied what."""
    _, allowed, forbidden = EXPECTED["alice"]
    run_client(next(iter(CLIENTS)), "alice", allowed, forbidden)

    def decisions():
        lines = (ROOT / ".demo" / "envoy.log").read_text(errors="replace").splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        # The demo's users are `<provider>:<name>`.
        return {(e["mcp_target"], e["mcp_decision"], e["status"]) for e in entries
                if (e.get("mcp_principal") or "").endswith(":alice") and e.get("mcp_method") == "tools/call"}
    wanted = {(allowed, "allow", 200), (forbidden, "deny", 403)}
    wait_until(lambda: wanted <= decisions(), 10, "the access log lines of alice's calls")


def test_the_typescript_sdk_goes_through_the_401_and_gets_a_refresh_token(demo):
    seen = run_client("typescript-sdk", "alice", "", "")
    assert seen["sawUnauthorized"] and seen["gotToken"] and seen["hadRefreshToken"]


def test_ctrl_c_stops_the_whole_stack(demo):
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 0
    assert "stopped." in demo.log()
    wait_until(lambda: not any(port_open(port) for port in DEMO_PORTS), 15, "every demo port to close")
