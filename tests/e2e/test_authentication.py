"""The filter in a real Envoy, in front of real MCP servers, trusting a JWKS served over HTTP."""

import json
import time

import pytest
import requests

from harness import Envoy, JwksServer, McpSession, SigningKey, claims, free_port, parse_jsonrpc, wait_until


@pytest.fixture(scope="module")
def envoy(log_dir, everything, probe, jwks):
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, probe_port=probe,
                  filter_config={"required_scopes": ["mcp:tools"]}, jwks={"unknown_kid_cooldown_seconds": 1})
    proxy.wait_ready()
    yield proxy
    proxy.stop()


def mcp_post(envoy, token=None, path="/mcp", headers=None):
    all_headers = {"content-type": "application/json", "accept": McpSession.ACCEPT, **(headers or {})}
    if token:
        all_headers["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    return requests.post(envoy.url(path), headers=all_headers, data=json.dumps(body), timeout=10)


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"])
def test_both_metadata_documents_tell_clients_where_to_log_in(envoy, path):
    response = requests.get(envoy.url(path), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "resource": envoy.resource,
        "authorization_servers": [envoy.origin],
        "scopes_supported": ["mcp:tools"],
        "bearer_methods_supported": ["header"],
    }


def test_no_token_gets_a_challenge_pointing_at_the_metadata(envoy):
    response = mcp_post(envoy)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{envoy.origin}/.well-known/oauth-protected-resource/mcp", scope="mcp:tools"'
    )
    assert response.json()["error"] == "unauthorized"
    # The advertised URL really serves the document.
    assert requests.get(envoy.url("/.well-known/oauth-protected-resource/mcp"), timeout=5).status_code == 200


def bad_tokens(envoy, key):
    other = SigningKey("key-1")  # same kid, different key: a forged signature
    return {
        "malformed": "not-a-jwt",
        "bad_signature": other.sign(claims(envoy)),
        "expired": key.sign(claims(envoy, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "not_yet_valid": key.sign(claims(envoy, nbf=int(time.time()) + 3600)),
        "untrusted_issuer": key.sign(claims(envoy, iss="https://evil.example.com")),
        "wrong_audience": key.sign(claims(envoy, aud="https://other.example.com/mcp")),
        "unknown_key": SigningKey("never-published").sign(claims(envoy)),
        "algorithm_refused": _unsigned(claims(envoy)),
    }


def _unsigned(payload):
    import base64
    enc = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(payload)}."


@pytest.mark.parametrize("reason", ["malformed", "bad_signature", "expired", "not_yet_valid", "untrusted_issuer",
                                    "wrong_audience", "unknown_key", "algorithm_refused"])
def test_each_bad_token_is_refused_with_invalid_token(envoy, signing_key, reason):
    before = envoy.counter(f"decisions_total.enforce.unauthenticated.{reason}")
    response = mcp_post(envoy, bad_tokens(envoy, signing_key)[reason])
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer resource_metadata="{envoy.origin}/.well-known/oauth-protected-resource/mcp"')
    assert 'error="invalid_token"' in challenge and "error_description=" in challenge
    assert response.json()["error"] == "invalid_token"
    assert envoy.counter(f"decisions_total.enforce.unauthenticated.{reason}") == before + 1


def test_a_token_in_the_query_string_is_never_accepted(envoy, signing_key):
    token = signing_key.sign(claims(envoy))
    response = mcp_post(envoy, path=f"/mcp?access_token={token}")
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]
    assert token not in envoy.process.log(), "the token must never be logged"


def test_a_token_without_the_required_scope_gets_a_step_up(envoy, signing_key):
    response = mcp_post(envoy, signing_key.sign(claims(envoy, scope="openid")))
    assert response.status_code == 403
    assert 'error="insufficient_scope", ' in response.headers["www-authenticate"]
    assert 'scope="mcp:tools"' in response.headers["www-authenticate"]


def test_a_valid_token_reaches_tools_list_of_a_real_mcp_server(envoy, signing_key):
    session = McpSession(envoy.url("/mcp"), signing_key.sign(claims(envoy))).open()
    tools = session.request("tools/list")["result"]["tools"]
    assert "echo" in [tool["name"] for tool in tools]
    echoed = session.request("tools/call", {"name": "echo", "arguments": {"message": "hi"}})
    assert "hi" in json.dumps(echoed["result"])


def test_the_backend_never_sees_the_token_and_gets_the_identity(envoy, signing_key):
    token = signing_key.sign(claims(envoy, sub="carol", client_id="vscode"))
    session = McpSession(envoy.url("/probe/mcp"), token).open()
    session.token = token
    response = session.post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                             "params": {"name": "whoami", "arguments": {}}})
    seen = json.loads(parse_jsonrpc(response)["result"]["content"][0]["text"])
    assert "authorization" not in seen
    assert seen["x-mcp-subject"] == "carol"
    assert seen["x-mcp-client-id"] == "vscode"


def test_spoofed_identity_headers_are_replaced(envoy, signing_key):
    token = signing_key.sign(claims(envoy, sub="dave"))
    session = McpSession(envoy.url("/probe/mcp"), token).open()
    response = requests.post(envoy.url("/probe/mcp"), headers={**session.headers(), "x-mcp-subject": "admin",
                                                               "x-mcp-client-id": "spoofed"},
                             data=json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                                              "params": {"name": "whoami", "arguments": {}}}), timeout=10)
    seen = json.loads(parse_jsonrpc(response)["result"]["content"][0]["text"])
    assert seen["x-mcp-subject"] == "dave"
    assert seen["x-mcp-client-id"] == "test-client"


def test_a_rotated_key_is_picked_up_on_first_use(envoy, jwks, signing_key):
    rotated = SigningKey("key-2", kind="EC")
    jwks.keys = [signing_key, rotated]
    time.sleep(1.1)  # past the unknown-kid cooldown left by the unknown_key test
    before = jwks.requests
    response = mcp_post(envoy, rotated.sign(claims(envoy)), headers={})
    # tools/list without a session is the server's 400, which proves the request got through.
    assert response.status_code != 401, response.text
    assert jwks.requests > before, "the unknown kid made the filter refetch the JWKS"
    assert envoy.counter("jwks_fetches_total.success") >= 2


def test_cached_keys_keep_working_while_the_jwks_server_is_down(log_dir, everything, signing_key):
    jwks = JwksServer()
    jwks.keys = [signing_key]
    jwks.start()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-jwks-down",
                  jwks={"refresh_seconds": 1})
    try:
        proxy.wait_ready()
        assert McpSession(proxy.url("/mcp"), signing_key.sign(claims(proxy))).open().session_id
        jwks.stop()
        failures = proxy.counter("jwks_fetches_total.failure")
        wait_until(lambda: proxy.counter("jwks_fetches_total.failure") > failures, 15, "a failed JWKS refresh")
        fresh = signing_key.sign(claims(proxy))  # never seen before: verified with the kept keys
        session = McpSession(proxy.url("/mcp"), fresh).open()
        assert "echo" in [t["name"] for t in session.request("tools/list")["result"]["tools"]]
        assert "keeping the last good keys" in proxy.process.log()
    finally:
        proxy.stop()
        jwks.stop()


def test_requests_wait_for_the_first_keys_then_fail_closed_or_go_through(log_dir, everything, signing_key):
    jwks = JwksServer(port=free_port())  # not started yet: the JWKS endpoint is down
    jwks.keys = [signing_key]
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name="envoy-cold",
                  filter_config={"jwks_wait_ms": 1500})
    try:
        proxy.wait_ready()
        token = signing_key.sign(claims(proxy))
        started = time.monotonic()
        response = mcp_post(proxy, token)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert time.monotonic() - started >= 1.0, "the request was held before failing closed"

        # A request held while the endpoint comes up is resumed and let through.
        timer = __import__("threading").Timer(0.5, jwks.start)
        timer.start()
        response = mcp_post(proxy, token)
        timer.join()
        assert response.status_code != 503 and response.status_code != 401, response.text
    finally:
        proxy.stop()
        jwks.stop()


@pytest.mark.parametrize("bad, message", [
    ({"audience": ["typo"]}, "unknown field `audience`"),
    ({"resource": "not a url"}, "`resource` = `not a url` is not an absolute http(s) URL"),
    ({"issuers": []}, "`issuers` is empty"),
    ({"issuers": [{"issuer": "https://i.example.com", "jwks_inline": {"keys": [{"kty": "oct", "k": "AA"}]}}]},
     "`jwks_inline` of issuer `https://i.example.com` is unusable"),
])
def test_an_invalid_configuration_is_refused_with_what_to_fix(log_dir, everything, bad, message):
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=free_port(), name=f"envoy-bad-{len(message)}",
                  filter_config=bad)
    try:
        with pytest.raises(RuntimeError):
            proxy.wait_ready(timeout=60)
        refusal = [line for line in proxy.process.log().splitlines() if "configuration refused:" in line]
        assert refusal and message in refusal[0], refusal
    finally:
        proxy.stop()
