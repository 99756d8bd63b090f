"""The `jwt_authn` mode: Envoy's native `jwt_authn` (what Istio's `RequestAuthentication`
configures) verifies the signature, the filter takes the verified claims from its dynamic
metadata and does everything else. The same Envoy build and configuration shape as
`envoy/jwt-authn.yaml`, in front of server-everything."""

import json

import pytest
import requests

from harness import Envoy, McpSession, SigningKey, claims

POLICIES = [
    'permit(principal in THVGroup::"mcp-developers", action, resource);',
    'forbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"get-env");',
]


def with_jwt_authn(jwks_port, namespace="envoy.filters.http.jwt_authn"):
    """Puts Envoy's jwt_authn before the wasm filter (verify a token when one is sent, let the
    request on either way, so that the filter answers with the MCP-shaped 401), and switches the
    filter to the mode that trusts it: its issuer keeps no keys of its own."""
    def edit(config):
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        plugin = json.loads(wasm["configuration"]["value"])
        plugin["issuers"] = [{"issuer": plugin["issuers"][0]["issuer"]}]
        plugin["jwt_authn"] = {"metadata_namespace": namespace, "payload_in_metadata": "jwt_payload"}
        wasm["configuration"]["value"] = json.dumps(plugin)
        provider = {
            "issuer": plugin["issuers"][0]["issuer"],
            "remote_jwks": {"http_uri": {"uri": f"http://localhost:{jwks_port}/jwks", "cluster": "authserver",
                                         "timeout": "5s"},
                            "cache_duration": "300s"},
            "payload_in_metadata": "jwt_payload",
            "forward": False,
            "jwt_cache_config": {"jwt_cache_size": 1000},
        }
        hcm["http_filters"].insert(0, {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"idp": provider},
                "rules": [{"match": {"prefix": "/"},
                           "requires": {"requires_any": {"requirements": [
                               {"provider_name": "idp"}, {"allow_missing_or_failed": {}}]}}}],
            },
        })
    return edit


@pytest.fixture(scope="module")
def envoy(log_dir, everything, jwks):
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-jwt-authn",
                  edit=with_jwt_authn(jwks.port), filter_config={
                      "cedar": {"policies": POLICIES},
                      "headers_stop_iteration": True,
                  })
    proxy.wait_ready()
    yield proxy
    proxy.stop()


def post(envoy, token, body, session=None):
    headers = {"content-type": "application/json", "accept": McpSession.ACCEPT}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if session:
        headers["mcp-session-id"] = session
    return requests.post(envoy.url("/mcp"), headers=headers, data=json.dumps(body), timeout=10)


def test_a_token_jwt_authn_verified_is_served_and_authorized(envoy, signing_key):
    token = signing_key.sign(claims(envoy, sub="alice", groups=["mcp-developers"]))
    alice = McpSession(envoy.url("/mcp"), token).open()
    tools = [tool["name"] for tool in alice.request("tools/list")["result"]["tools"]]
    assert "echo" in tools and "get-env" not in tools, "lists are cut from the metadata claims"
    allowed = alice.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"message": "hi"}}})
    assert allowed.status_code == 200, allowed.text
    denied = alice.post({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                         "params": {"name": "get-env", "arguments": {}}})
    assert denied.status_code == 403
    assert envoy.counter("authenticated_total") >= 3


def test_no_token_gets_the_mcp_401(envoy):
    response = post(envoy, None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]


@pytest.mark.parametrize("how", ["forged signature", "unknown key", "expired", "other issuer"])
def test_a_token_jwt_authn_did_not_verify_never_passes(envoy, signing_key, how):
    body = {"jsonrpc": "2.0", "id": 2, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    good = claims(envoy, sub="mallory", groups=["mcp-developers"])
    if how == "forged signature":
        token = signing_key.sign(good)
        token = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    elif how == "unknown key":
        token = SigningKey("stranger").sign(good)
    elif how == "expired":
        token = signing_key.sign({**good, "exp": good["iat"] - 120, "iat": good["iat"] - 720})
    else:
        token = signing_key.sign({**good, "iss": "https://someone-else.example"})
    response = post(envoy, token, body)
    assert response.status_code == 401, response.text
    assert "invalid_token" in response.headers["www-authenticate"]


def test_the_filter_refuses_to_start_without_the_metadata_namespace(log_dir, everything, jwks):
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-jwt-authn-bad",
                  edit=with_jwt_authn(jwks.port, namespace=""))
    try:
        with pytest.raises(Exception):
            proxy.wait_ready(timeout=20)
        assert "jwt_authn.metadata_namespace" in proxy.process.log()
    finally:
        proxy.stop()
