"""`make demo` federated to a real OpenID provider (oidc-provider shaped like Okta's custom
authorization server) — UPSTREAM_ISSUER, UPSTREAM_CLIENT_ID, UPSTREAM_CLIENT_SECRET — with the
three real MCP clients signing in there, then refreshing (re-checked upstream) and carrying on."""

import json
import os
import re
import subprocess
import time

import pytest
import requests

from democlients import CLIENTS, EXPECTED, run_client, start_demo
from harness import ROOT, Process, free_port, port_open, wait_until

ACCESS_TOKEN_SECONDS = 5


@pytest.fixture(scope="module")
def idp(log_dir):
    port = free_port()
    proc = Process("idp-demo", ["node", str(ROOT / "tests" / "idp" / "server.mjs")], log_dir, cwd=ROOT / "tests",
                   env={"PORT": str(port), "PROFILE": "okta", "REDIRECT_URIS": "http://localhost:8080/oauth/callback"})
    wait_until(lambda: port_open(port), 30, "oidc-provider")
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="module")
def demo(log_dir, idp):
    env = {"UPSTREAM_ISSUER": f"{idp}/oauth2/default", "UPSTREAM_CLIENT_ID": "mcp-gateway",
           "UPSTREAM_CLIENT_SECRET": "gateway-secret", "UPSTREAM_ALLOW_HTTP": "1",
           "ACCESS_TOKEN_SECONDS": str(ACCESS_TOKEN_SECONDS)}
    yield from start_demo(log_dir, "demo-oidc", env)


def test_the_demo_names_the_identity_provider(demo, idp):
    assert f"your identity provider's users ({idp}/oauth2/default)" in demo.log()


@pytest.mark.parametrize("user", list(EXPECTED))
@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_real_client_signs_in_at_the_identity_provider_and_carries_on_after_a_refresh(demo, idp, client, user):
    tools, allowed, forbidden = EXPECTED[user]
    env = {"MCP_TEST_IDP_ORIGIN": idp}
    if user == "alice" and client != "typescript-sdk":
        env["REFRESH_AFTER"] = str(ACCESS_TOKEN_SECONDS + 2)  # the SDK refreshes the expired token itself
    seen = run_client(client, user, allowed, forbidden, password="any", env=env)
    assert set(seen["tools"]) == tools
    if allowed:
        assert seen["allowed"]["ok"], seen
    if forbidden:
        assert not seen["forbidden"]["ok"], seen
    if user == "alice":
        after = seen["afterRefresh"]
        assert after["tools"] == len(tools), "the session carries on after the refresh"
        if "refreshed" in after:
            assert after["refreshed"], "a new access token came from the refresh"


def tokens_issued():
    """The demo authorization server's count of issued tokens, every grant type (one log line each
    is at debug)."""
    metrics = requests.get("http://127.0.0.1:9000/metrics", timeout=5).text
    return sum(int(n) for n in re.findall(r"^mcp_authserver_tokens_issued_total\{[^}]*\} (\d+)$", metrics, re.M))


def test_a_session_survives_a_restart_of_the_authorization_server(demo, idp):
    """The Python SDK signs in, the authorization server is killed (the demo restarts it) while the
    client waits for its token to expire; the live token keeps working and the refresh goes through."""
    command = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "clients" / "py_sdk_client.py"),
               "http://localhost:8080/mcp", "alice", "any", "kubernetes__get_pods", ""]
    env = {**os.environ, "MCP_TEST_IDP_ORIGIN": idp, "REFRESH_AFTER": str(ACCESS_TOKEN_SECONDS + 4)}
    issued_before = tokens_issued()
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT / "tests", env=env)
    wait_until(lambda: tokens_issued() > issued_before, 60, "the client's sign-in")
    time.sleep(1)  # its calls with the live token
    subprocess.run(["pkill", "-f", "mcp-mesh-authserver --config .demo/authserver.yaml"], check=True)
    wait_until(lambda: "restarting it" in (ROOT / ".demo" / "authserver.log").read_text(), 10, "the restart")
    out, err = client.communicate(timeout=120)
    assert client.returncode == 0, err[-3000:]
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["allowed"]["ok"]
    assert seen["afterRefresh"]["refreshed"] and seen["afterRefresh"]["tools"] == len(EXPECTED["alice"][0])
