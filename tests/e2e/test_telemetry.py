"""Decisions where operators look: Envoy's JSON access log (filter state `wasm.mcp_auth.*`), the
audit line, and labelled per-instance statistics at `/stats/prometheus`; and shadow mode, under
which Cedar's denials are recorded but not carried out."""

import json
import re

import pytest
import requests

from harness import Envoy, McpSession, claims, wait_until

POLICIES = [
    '@id("developers")\npermit(principal in THVGroup::"mcp-developers", action, resource);',
    '@id("no-get-env")\nforbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"get-env");',
]
GROUPS = {"alice": ["mcp-developers"], "carol": []}


def start(log_dir, everything, jwks, name, **config):
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name=name,
                  filter_config={"cedar": {"policies": POLICIES, **config.pop("cedar", {})}, **config})
    return proxy.wait_ready()


@pytest.fixture(scope="module")
def enforcing(log_dir, everything, jwks):
    proxy = start(log_dir, everything, jwks, "envoy-telemetry", headers_stop_iteration=True)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module", params=[True, False], ids=["hold-headers", "plain"])
def shadowing(request, log_dir, everything, jwks):
    proxy = start(log_dir, everything, jwks, f"envoy-shadow-{request.param}",
                  cedar={"mode": "shadow"}, headers_stop_iteration=request.param)
    yield proxy
    proxy.stop()


def session(envoy, signing_key, user):
    token = signing_key.sign(claims(envoy, sub=user, groups=GROUPS[user]))
    return McpSession(envoy.url("/mcp"), token).open()


def access_log(envoy, **match):
    """The JSON access log line whose fields include `match`, once Envoy has written it."""
    def find():
        for line in reversed(envoy.process.log().splitlines()):
            if line.startswith("{"):
                entry = json.loads(line)
                if all(entry.get(key) == value for key, value in match.items()):
                    return entry
        return None
    return wait_until(find, 10, f"an access log line with {match}")


def prometheus(envoy) -> dict[str, float]:
    """`/stats/prometheus` as {series: value}."""
    text = requests.get(f"http://127.0.0.1:{envoy.admin_port}/stats/prometheus", timeout=5).text
    return {series: float(value) for series, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line.startswith("mcp_auth_"))}


def decisions(envoy, **labels) -> float:
    """The sum of `mcp_auth_decisions_total` over series carrying `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(value for series, value in prometheus(envoy).items()
               if series.startswith("mcp_auth_decisions_total{") and all(w in series for w in wanted))


def call(who: McpSession, tool: str) -> requests.Response:
    return who.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                     "params": {"name": tool, "arguments": {"message": "hi"} if tool == "echo" else {}}})


def test_an_allowed_call_is_in_the_access_log_with_who_what_and_why(enforcing, signing_key):
    alice = session(enforcing, signing_key, "alice")
    assert call(alice, "echo").status_code == 200
    entry = access_log(enforcing, mcp_target="echo", mcp_decision="allow")
    assert entry["status"] == 200 and entry["method"] == "POST" and entry["path"] == "/mcp"
    assert (entry["mcp_principal"], entry["mcp_client_id"], entry["mcp_issuer"]) == (
        "alice", "test-client", enforcing.issuer)
    assert (entry["mcp_method"], entry["mcp_reason"], entry["mcp_policies"], entry["mcp_shadow"]) == (
        "tools/call", "policy_permit", "developers", "false")


def test_an_authenticated_request_without_a_decision_still_names_its_caller(enforcing, signing_key):
    token = signing_key.sign(claims(enforcing, sub="dave", groups=[]))
    McpSession(enforcing.url("/mcp"), token).open()
    entry = access_log(enforcing, mcp_principal="dave", status=200)
    assert (entry["mcp_client_id"], entry["mcp_decision"], entry["mcp_method"]) == ("test-client", None, None)


def test_a_denied_call_is_in_the_access_log_with_the_deciding_policy(enforcing, signing_key):
    alice = session(enforcing, signing_key, "alice")
    before = decisions(enforcing, mode="enforce", decision="deny", reason="policy_forbid")
    assert call(alice, "get-env").status_code == 403
    entry = access_log(enforcing, mcp_target="get-env")
    assert (entry["status"], entry["mcp_decision"], entry["mcp_reason"], entry["mcp_policies"]) == (
        403, "deny", "policy_forbid", "no-get-env")
    assert decisions(enforcing, mcp_auth_instance="mcp_mesh_auth", mode="enforce", decision="deny",
                     reason="policy_forbid") == before + 1


def test_a_default_deny_is_logged_with_its_reason(enforcing, signing_key):
    carol = session(enforcing, signing_key, "carol")
    assert call(carol, "echo").status_code == 403
    entry = access_log(enforcing, mcp_principal="carol", mcp_target="echo")
    assert (entry["mcp_decision"], entry["mcp_reason"]) == ("deny", "default_deny")
    audit = [line for line in enforcing.process.log().splitlines()
             if "mcp-mesh-auth: audit" in line and '"subject":"carol"' in line]
    assert audit and '"reason":"default_deny"' in audit[-1]


def test_a_cut_list_says_what_was_removed_and_for_whom(enforcing, signing_key):
    alice = session(enforcing, signing_key, "alice")
    tools = [tool["name"] for tool in alice.request("tools/list")["result"]["tools"]]
    assert "get-env" not in tools and "echo" in tools
    entry = access_log(enforcing, mcp_method="tools/list", mcp_principal="alice")
    assert (entry["status"], entry["mcp_decision"], entry["mcp_reason"]) == (200, "allow", "list_cut")
    assert (entry["mcp_removed"], entry["mcp_removed_names"]) == ("1", "get-env")
    audit = [line for line in enforcing.process.log().splitlines()
             if "mcp-mesh-auth: audit" in line and '"method":"tools/list"' in line]
    assert audit and '"removed_names":["get-env"]' in audit[-1] and '"client_id":"test-client"' in audit[-1]
    removed = prometheus(enforcing)
    assert removed['mcp_auth_list_items_removed_total{mcp_auth_instance="mcp_mesh_auth",mode="enforce"}'] >= 1


def test_a_refused_token_is_in_the_access_log_without_the_token(enforcing):
    response = requests.post(enforcing.url("/mcp?access_token=secret-in-query"), timeout=5,
                             headers={"content-type": "application/json"}, data="{}")
    assert response.status_code in (400, 401)
    entry = access_log(enforcing, path="/mcp", mcp_decision="unauthenticated")
    assert entry["status"] == response.status_code and entry["mcp_reason"] == "token_in_query"
    assert "secret-in-query" not in enforcing.process.log()
    response = requests.post(enforcing.url("/mcp"), timeout=5, headers={"content-type": "application/json"}, data="{}")
    assert response.status_code == 401
    entry = access_log(enforcing, status=401, mcp_reason="missing_token")
    assert entry["mcp_decision"] == "unauthenticated"


def test_decision_time_is_a_histogram_per_instance(enforcing, signing_key):
    call(session(enforcing, signing_key, "alice"), "echo")
    series = prometheus(enforcing)
    count = series.get('mcp_auth_decision_time_us_count{mcp_auth_instance="mcp_mesh_auth"}', 0)
    assert count >= 1, sorted(series)
    assert any(re.match(r'mcp_auth_decision_time_us_bucket\{mcp_auth_instance="mcp_mesh_auth",le="[0-9.e+]+"\}', s)
               for s in series)


def test_in_shadow_mode_a_denied_call_passes_and_is_recorded_as_a_would_be_deny(shadowing, signing_key):
    alice = session(shadowing, signing_key, "alice")
    response = call(alice, "get-env")
    assert response.status_code == 200, response.text
    entry = access_log(shadowing, mcp_target="get-env")
    assert (entry["status"], entry["mcp_decision"], entry["mcp_reason"], entry["mcp_shadow"]) == (
        200, "deny", "policy_forbid", "true")
    assert decisions(shadowing, mode="shadow", decision="deny", reason="policy_forbid") >= 1
    assert decisions(shadowing, mode="enforce", decision="deny") == 0
    audit = [line for line in shadowing.process.log().splitlines()
             if "mcp-mesh-auth: audit" in line and '"target":"get-env"' in line]
    assert audit and '"shadow":true' in audit[-1] and '"decision":"deny"' in audit[-1]


def test_in_shadow_mode_a_list_passes_whole_and_says_what_would_have_been_cut(shadowing, signing_key):
    alice = session(shadowing, signing_key, "alice")
    tools = [tool["name"] for tool in alice.request("tools/list")["result"]["tools"]]
    assert "get-env" in tools
    entry = access_log(shadowing, mcp_method="tools/list", mcp_principal="alice")
    assert (entry["mcp_removed_names"], entry["mcp_shadow"]) == ("get-env", "true")


def test_in_shadow_mode_authentication_still_refuses(shadowing):
    response = requests.post(shadowing.url("/mcp"), timeout=5, headers={"content-type": "application/json"}, data="{}")
    assert response.status_code == 401
