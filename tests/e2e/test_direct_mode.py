"""Direct mode (seeds 002 and 004): no authorization server of ours. The filter trusts the
company IdP's own tokens — a real oidc-provider shaped like an Okta custom authorization server
(RFC 8707 resource as the audience, `groups` and an `scp` array in the access token) — and MCP
clients discover that IdP from the filter's metadata, register there and log in there."""

import json
import os
import subprocess

import pytest
import requests

from harness import ROOT, SERVERS, Envoy, McpSession, Process, free_port, port_open, start_node_server, wait_until

POLICIES = [
    'permit(principal in THVGroup::"mcp-developers", action, resource);',
    'permit(principal == Client::"calculator-m2m", action == Action::"call_tool", resource);',
]
ARGS = json.dumps({"a": 2, "b": 40})


@pytest.fixture(scope="module")
def direct(log_dir):
    idp_port = free_port()
    idp = Process("idp-direct", ["node", str(ROOT / "tests" / "idp" / "server.mjs")], log_dir, cwd=ROOT / "tests",
                  env={"PORT": str(idp_port), "PROFILE": "direct"})
    wait_until(lambda: port_open(idp_port), 30, "oidc-provider")
    calculator, calculator_port = start_node_server("calculator", SERVERS / "probe-server.mjs", log_dir, env={"TOOLS": "calculator"})
    issuer = f"http://127.0.0.1:{idp_port}/oauth2/default"
    proxy = Envoy(log_dir, backend_port=calculator_port, jwks_port=idp_port, name="envoy-direct", filter_config={
        "authorization_servers": [issuer],
        "scopes_supported": ["mcp:tools", "calculator.add", "calculator.subtract"],
        "issuers": [{"issuer": issuer, "jwks": {"cluster": "authserver", "path": "/oauth2/default/jwks",
                                                "authority": f"127.0.0.1:{idp_port}"}}],
        "tool_scopes": {"add": ["calculator.add"], "subtract": ["calculator.subtract"]},
        "cedar": {"policies": POLICIES},
    })
    proxy.wait_ready()
    yield {"proxy": proxy, "issuer": issuer}
    proxy.stop()
    calculator.stop()
    idp.stop()


def m2m_token(direct, scope, resource=None):
    response = requests.post(f"{direct['issuer']}/token", auth=("calculator-m2m", "m2m-secret"), timeout=10, data={
        "grant_type": "client_credentials", "scope": scope, "resource": resource or direct["proxy"].resource})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_the_metadata_sends_clients_to_the_company_idp(direct):
    metadata = requests.get(direct["proxy"].url("/.well-known/oauth-protected-resource/mcp"), timeout=5).json()
    assert metadata["authorization_servers"] == [direct["issuer"]]


@pytest.mark.parametrize("client", ["typescript-sdk", "python-sdk"])
def test_an_sdk_client_discovers_the_idp_registers_there_and_calls_tools(direct, client):
    command = {"typescript-sdk": ["node", str(ROOT / "tests" / "clients" / "ts-sdk-client.mjs")],
               "python-sdk": [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "clients" / "py_sdk_client.py")]}[client]
    result = subprocess.run([*command, direct["proxy"].resource, "alice", "any", "add", ""], capture_output=True, text=True,
                            timeout=120, cwd=ROOT / "tests",
                            env={**os.environ, "TOOL_ARGS": ARGS, "MCP_TEST_IDP_ORIGIN": direct["issuer"].split("/oauth2")[0]})
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(seen["tools"]) == ["add", "subtract"]
    assert seen["allowed"] == {"ok": True, "text": "42"}, seen


def test_a_machine_token_with_calculator_add_may_add_and_must_step_up_to_subtract(direct):
    proxy = direct["proxy"]
    session = McpSession(proxy.url("/mcp"), m2m_token(direct, "calculator.add")).open()
    added = session.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 40}})
    assert added["result"]["content"][0]["text"] == "42"
    refused = session.post({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "subtract", "arguments": {"a": 1, "b": 1}}})
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="calculator.subtract"' in challenge


def test_a_token_minted_for_another_audience_is_refused(direct):
    token = m2m_token(direct, "calculator.add", resource="https://other.example.com/mcp")
    response = requests.post(direct["proxy"].url("/mcp"), headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
                             data='{"jsonrpc":"2.0","id":1,"method":"ping"}', timeout=10)
    assert response.status_code == 401
    assert "audience" in response.headers["www-authenticate"]
