"""Cedar authorization in the real Envoy, in front of server-everything (whose answers are SSE)."""

import json

import pytest
import requests

import threading

from harness import Envoy, JwksServer, McpSession, claims, free_port, parse_jsonrpc

# Seed 000's policies (ToolHive vMCP + Okta), with server-everything's dangerous tool in place of
# `delete_namespace`.
SEED_POLICIES = [
    'permit(\nprincipal in THVGroup::"mcp-developers",\naction,\nresource\n);',
    'forbid(\nprincipal in THVGroup::"mcp-developers",\naction == Action::"call_tool",\nresource == Tool::"get-env"\n);',
    'permit(\nprincipal in THVGroup::"mcp-platform",\naction,\nresource\n);',
    'permit(\nprincipal in THVGroup::"mcp-admin",\naction,\nresource\n);',
]
USERS = {"alice": ["mcp-developers"], "bob": ["mcp-platform"], "carol": []}


@pytest.fixture(scope="module")
def envoy(log_dir, everything, jwks):
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-authz", filter_config={
        "cedar": {"policies": SEED_POLICIES},
        "server_name": "everything",
        "max_body_bytes": 4096,
        "tool_scopes": {"get-sum": ["mcp:math"]},
        "headers_stop_iteration": True,
    })
    proxy.wait_ready()
    yield proxy
    proxy.stop()


def session(envoy, signing_key, user, scope="mcp:tools"):
    token = signing_key.sign(claims(envoy, sub=user, groups=USERS[user], scope=scope))
    return McpSession(envoy.url("/mcp"), token).open()


def names(result, key):
    return sorted(item["name" if key != "resources" else "uri"] for item in result[key])


@pytest.fixture(scope="module")
def everything_lists(envoy, signing_key):
    """What the server offers, as bob (mcp-platform: everything) sees it."""
    bob = session(envoy, signing_key, "bob")
    return {key: names(bob.request(f"{key}/list")["result"], key) for key in ("tools", "prompts", "resources")}


def test_the_platform_group_sees_everything_the_server_offers(everything_lists):
    assert "get-env" in everything_lists["tools"] and "echo" in everything_lists["tools"]
    assert everything_lists["prompts"] and everything_lists["resources"]


def test_developers_see_every_tool_but_the_forbidden_one(envoy, signing_key, everything_lists):
    alice = session(envoy, signing_key, "alice")
    tools = names(alice.request("tools/list")["result"], "tools")
    assert tools == [t for t in everything_lists["tools"] if t != "get-env"]
    assert names(alice.request("prompts/list")["result"], "prompts") == everything_lists["prompts"]
    assert names(alice.request("resources/list")["result"], "resources") == everything_lists["resources"]


def test_a_user_in_no_group_sees_empty_lists(envoy, signing_key):
    carol = session(envoy, signing_key, "carol")
    for key in ("tools", "prompts", "resources"):
        assert carol.request(f"{key}/list")["result"][key] == [], key


def test_an_allowed_call_passes(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    result = alice.request("tools/call", {"name": "echo", "arguments": {"message": "hello"}})
    assert "hello" in json.dumps(result["result"])


def test_a_forbidden_call_gets_the_jsonrpc_403(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    before = envoy.counter("decisions_total.enforce.deny.policy_forbid")
    response = alice.post({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "get-env", "arguments": {}}})
    assert response.status_code == 403
    answer = response.json()
    assert (answer["jsonrpc"], answer["id"], answer["error"]["code"]) == ("2.0", 42, 403)
    # The message says which kind of denial it was, never which policy (that is in the log).
    assert answer["error"]["message"].startswith("call denied by authorization policy: a policy forbids")
    assert "get-env" in answer["error"]["message"]
    assert envoy.counter("decisions_total.enforce.deny.policy_forbid") == before + 1
    audit = [line for line in envoy.process.log().splitlines() if "audit" in line and '"target":"get-env"' in line]
    assert audit and '"decision":"deny"' in audit[-1] and '"subject":"alice"' in audit[-1]
    assert "policies[1]#0" in audit[-1], "the deciding forbid is named in the log"


def test_a_user_in_no_group_is_refused_every_call(envoy, signing_key, everything_lists):
    carol = session(envoy, signing_key, "carol")
    calls = [("tools/call", {"name": "echo", "arguments": {"message": "x"}}),
             ("prompts/get", {"name": everything_lists["prompts"][0], "arguments": {}}),
             ("resources/read", {"uri": everything_lists["resources"][0]})]
    for method, params in calls:
        response = carol.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert response.status_code == 403, method
        assert response.json()["error"]["code"] == 403


def test_a_batch_is_400_invalid_request(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]
    response = requests.post(alice.url, headers=alice.headers(), data=json.dumps(batch), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_a_call_naming_its_tool_twice_is_refused_before_the_server_sees_it(envoy, signing_key):
    """Parsers differ on a repeated member (first or last wins): the filter must not authorize
    `echo` while the server runs `get-env`, so the message is refused whatever the policy."""
    alice = session(envoy, signing_key, "alice")
    body = ('{"jsonrpc":"2.0","id":8,"method":"tools/call",'
            '"params":{"name":"echo","arguments":{"message":"x"},"name":"get-env"}}')
    response = requests.post(alice.url, headers=alice.headers(), data=body, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600
    assert "appears twice" in response.json()["error"]["message"]


def test_an_unparsable_body_is_400_parse_error(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    response = requests.post(alice.url, headers=alice.headers(), data="{not json", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700


def test_a_header_body_mismatch_is_400_header_mismatch(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    headers = {**alice.headers(), "mcp-method": "tools/call", "mcp-name": "echo"}
    body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "get-env", "arguments": {}}}
    response = requests.post(alice.url, headers=headers, data=json.dumps(body), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32020


def test_a_2026_client_with_matching_headers_is_served(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    headers = {**alice.headers(), "mcp-method": "tools/call", "mcp-name": "echo"}
    body = {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hdr"}}}
    response = requests.post(alice.url, headers=headers, data=json.dumps(body), timeout=10)
    assert response.status_code == 200
    assert "hdr" in json.dumps(parse_jsonrpc(response))


def test_an_oversized_body_is_413(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "x" * 8000}}}
    response = requests.post(alice.url, headers=alice.headers(), data=json.dumps(body), timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32600


def test_a_missing_tool_scope_asks_for_a_step_up(envoy, signing_key):
    alice = session(envoy, signing_key, "alice")
    response = alice.post({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                           "params": {"name": "get-sum", "arguments": {"a": 1, "b": 2}}})
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp:math"' in challenge
    scoped = session(envoy, signing_key, "alice", scope="mcp:tools mcp:math")
    result = scoped.request("tools/call", {"name": "get-sum", "arguments": {"a": 1, "b": 2}})
    assert "3" in json.dumps(result["result"])


def test_calls_held_for_the_first_keys_are_still_decided_by_cedar(log_dir, everything, signing_key):
    """Bodies that arrive while a request waits for keys must not slip past authorization."""
    jwks = JwksServer(port=free_port())  # down when Envoy starts
    jwks.keys = [signing_key]
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-authz-cold",
                  filter_config={"cedar": {"policies": SEED_POLICIES}, "headers_stop_iteration": True})
    try:
        proxy.wait_ready()
        carol = signing_key.sign(claims(proxy, sub="carol", groups=[]))
        headers = {"content-type": "application/json", "accept": McpSession.ACCEPT, "authorization": f"Bearer {carol}"}
        body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "x"}}}
        timer = threading.Timer(0.5, jwks.start)
        timer.start()
        response = requests.post(proxy.url("/mcp"), headers=headers, data=json.dumps(body), timeout=10)
        timer.join()
        assert response.status_code == 403, response.text
        assert response.json()["error"]["message"].startswith("call denied by authorization policy")
    finally:
        proxy.stop()
        jwks.stop()


def test_lists_are_filtered_behind_envoys_mcp_router(log_dir, everything, everything_b, jwks, signing_key):
    """Two backends aggregated by Envoy's native `mcp_router` (JSON answers, prefixed tool names)."""
    policies = [
        'permit(principal in THVGroup::"mcp-developers", action, resource);',
        'forbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"kube__get-env");',
    ]
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-router",
                  mcp_router={"github": everything, "kube": everything_b},
                  filter_config={"cedar": {"policies": policies}, "headers_stop_iteration": True})
    try:
        proxy.wait_ready()
        alice = McpSession(proxy.url("/mcp"), signing_key.sign(claims(proxy, sub="alice", groups=["mcp-developers"]))).open()
        tools = [tool["name"] for tool in alice.request("tools/list")["result"]["tools"]]
        assert "github__get-env" in tools and "kube__echo" in tools
        assert "kube__get-env" not in tools
        assert "hi" in json.dumps(alice.request("tools/call", {"name": "kube__echo", "arguments": {"message": "hi"}}))
        denied = alice.post({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                             "params": {"name": "kube__get-env", "arguments": {}}})
        assert denied.status_code == 403
        carol = McpSession(proxy.url("/mcp"), signing_key.sign(claims(proxy, sub="carol", groups=[]))).open()
        assert carol.request("tools/list")["result"]["tools"] == []
    finally:
        proxy.stop()



@pytest.mark.parametrize("hold", [True, False], ids=["headers-held", "headers-sent"])
def test_a_list_answer_with_result_and_error_fails_closed(log_dir, probe, jwks, signing_key, hold):
    """The probe server's /broken/mcp answers tools/list with both `result` and `error`."""
    proxy = Envoy(log_dir, backend_port=probe, jwks_port=jwks.port, name=f"envoy-broken-{hold}",
                  filter_config={"cedar": {"policies": SEED_POLICIES}, "mcp_path": "/broken/mcp",
                                 "headers_stop_iteration": hold})
    try:
        proxy.wait_ready()
        token = signing_key.sign(claims(proxy, sub="bob", groups=["mcp-platform"]))
        headers = {"content-type": "application/json", "accept": McpSession.ACCEPT, "authorization": f"Bearer {token}"}
        response = requests.post(proxy.url("/broken/mcp"), headers=headers,
                                 data=json.dumps({"jsonrpc": "2.0", "id": 31, "method": "tools/list"}), timeout=10)
        assert "leak" not in response.text
        assert response.json()["error"]["code"] == -32603
        assert response.status_code == (500 if hold else 200)
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def stateless_probe(log_dir):
    from harness import SERVERS, start_node_server
    proc, port = start_node_server("probe-stateless", SERVERS / "probe-server.mjs", log_dir, env={"STATELESS": "1"})
    yield port
    proc.stop()


def test_a_sessionless_client_with_mcp_method_and_name_headers_is_authorized(log_dir, stateless_probe, jwks, signing_key):
    """A 2026-07-28-style client: no initialize, no Mcp-Session-Id, routing headers on every call."""
    policies = ['permit(principal in THVGroup::"mcp-platform", action == Action::"call_tool", resource == Tool::"whoami");']
    proxy = Envoy(log_dir, backend_port=stateless_probe, jwks_port=jwks.port, name="envoy-sessionless",
                  filter_config={"cedar": {"policies": policies}})
    try:
        proxy.wait_ready()
        base = {"content-type": "application/json", "accept": McpSession.ACCEPT, "mcp-protocol-version": "2025-11-25",
                "authorization": f"Bearer {signing_key.sign(claims(proxy, groups=['mcp-platform']))}"}
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        ok = requests.post(proxy.url("/mcp"), headers={**base, "mcp-method": "tools/call", "mcp-name": "whoami"},
                           data=json.dumps(call), timeout=10)
        assert ok.status_code == 200, ok.text
        assert "mcp-session-id" not in ok.headers
        listed = requests.post(proxy.url("/mcp"), headers={**base, "mcp-method": "tools/list"},
                               data=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}), timeout=10)
        assert [t["name"] for t in parse_jsonrpc(listed)["result"]["tools"]] == ["whoami"]
        lying = requests.post(proxy.url("/mcp"), headers={**base, "mcp-method": "tools/list"}, data=json.dumps(call), timeout=10)
        assert lying.status_code == 400 and lying.json()["error"]["code"] == -32020
    finally:
        proxy.stop()
