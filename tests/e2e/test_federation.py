"""The authorization server federating the login to a real OpenID provider (npm oidc-provider),
shaped like an Okta custom authorization server and like Entra ID, with the filter in front of a
real MCP server trusting the tokens it issues."""

import base64
import os
from urllib.parse import urlencode

import pytest
import requests

from authstack import REDIRECT, AuthServer, claims_of, pkce, query, write_key
from browser import Browser
from harness import ROOT, Envoy, McpSession, Process, free_port, port_open, wait_until

POLICIES = [
    'permit(principal in THVGroup::"mcp-developers", action, resource);',
    'permit(principal in THVGroup::"MCP.Developer", action, resource);',
    'forbid(principal, action == Action::"call_tool", resource == Tool::"get-env");',
]
PROFILES = {
    "okta": {"path": "/oauth2/default", "upstream": {
        "scopes": ["openid", "profile", "email", "offline_access", "groups"], "groups_claim": "groups",
        "claims_from": ["access_token", "id_token"], "auth_method": "client_secret_basic"}},
    "entra": {"path": "/tenant/v2.0", "upstream": {
        "subject_claim": "oid", "roles_claim": "roles", "claims_from": ["id_token"],
        "auth_method": "client_secret_post"}},
}


def start_idp(log_dir, profile, port, redirect_uris):
    env = {"PORT": str(port), "PROFILE": profile, "REDIRECT_URIS": ",".join(redirect_uris)}
    proc = Process(f"idp-{profile}-{port}", ["node", str(ROOT / "tests" / "idp" / "server.mjs")], log_dir, env=env, cwd=ROOT / "tests")
    wait_until(lambda: port_open(port) or (not proc.alive() and _died(proc)), 30, "oidc-provider")
    return proc


def _died(proc):
    raise RuntimeError(f"{proc.name} exited:\n{proc.log()}")


def server_config(workdir, issuer, resource, idp_url, profile, secret):
    secret_file = workdir / f"secret-{len(secret)}"
    secret_file.write_text(secret + "\n")
    key_file = workdir / "encryption.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    return {"issuer": issuer, "resources": [resource], "database": f"sqlite://{workdir}/auth-{len(secret)}.db",
            "scopes": ["mcp:tools", "offline_access"], "groups": {"prefix": "mcp-"},
            "encryption_key_file": str(key_file),
            "upstream": {"type": "oidc", "issuer_url": idp_url, "client_id": "mcp-gateway",
                         "client_secret_file": str(secret_file), "allow_http_issuer": True,
                         **PROFILES[profile]["upstream"]}}


@pytest.fixture(scope="module", params=list(PROFILES))
def fed(request, log_dir, everything, tmp_path_factory):
    profile = request.param
    workdir = tmp_path_factory.mktemp(f"federation-{profile}")
    as_port, idp_port, strict_port = free_port(), free_port(), free_port()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=as_port, name=f"envoy-fed-{profile}",
                  jwks={"path": "/.well-known/jwks.json"}, filter_config={"cedar": {"policies": POLICIES}})
    idp_origin = f"http://127.0.0.1:{idp_port}"
    idp_url = f"{idp_origin}{PROFILES[profile]['path']}"
    idp = start_idp(log_dir, profile, idp_port, [f"{proxy.origin}/oauth/callback", f"http://127.0.0.1:{strict_port}/oauth/callback"])
    Browser.idp_origins.add(idp_origin)
    config = server_config(workdir, proxy.origin, proxy.resource, idp_url, profile, "gateway-secret")
    server = AuthServer(log_dir, workdir, config, as_port, [write_key(workdir / "k.pem", "ec")], name=f"authserver-{profile}")
    proxy.wait_ready()
    state = {"profile": profile, "proxy": proxy, "idp": idp, "idp_origin": idp_origin, "idp_url": idp_url,
             "workdir": workdir, "log_dir": log_dir, "other_port": strict_port}
    yield state
    server.stop()
    state["idp"].stop()
    proxy.stop()


def register(base):
    response = requests.post(f"{base}/oauth/register", json={"client_name": "Federated Client", "redirect_uris": [REDIRECT]}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["client_id"]


def authorize_url(base, resource, client_id, challenge):
    return f"{base}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": "fed-1", "resource": resource, "scope": "mcp:tools offline_access"})


def login(fed, user):
    proxy = fed["proxy"]
    client_id = register(proxy.origin)
    verifier, challenge = pkce()
    # The issuer is http://localhost:<port>; the browser must stay on that origin for its cookie.
    landing = Browser().authorize(authorize_url(proxy.origin, proxy.resource, client_id, challenge), user, finish_at=REDIRECT)
    answer = query(landing)
    assert "code" in answer, landing
    response = requests.post(proxy.url("/oauth/token"), data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id}, timeout=15)
    assert response.status_code == 200, response.text
    return client_id, response.json()


def refresh(fed, client_id, token):
    return requests.post(fed["proxy"].url("/oauth/token"), data={
        "grant_type": "refresh_token", "client_id": client_id, "refresh_token": token}, timeout=15)


def admin(fed, user, action="", body=None):
    path = f"/admin/users/{user}" + (f"/{action}" if action else "")
    assert requests.post(fed["idp_origin"] + path, json=body or {}, timeout=10).status_code == 204


def membership(fed, claims):
    return claims.get("groups", []) if fed["profile"] == "okta" else claims.get("roles", [])


def test_a_developer_gets_their_group_into_our_token_and_nothing_unrelated(fed):
    _, tokens = login(fed, "alice")
    claims = claims_of(tokens["access_token"])
    if fed["profile"] == "okta":
        assert claims["groups"] == ["mcp-developers"], "hr-payroll and Everyone stay out"
        assert claims["sub"] == "alice"
    else:
        assert claims["roles"] == ["MCP.Developer"]
        assert claims["sub"] == "00000000-0000-0000-0000-00000000a11c", "Entra: the oid is the subject"
    assert claims["email"] == "alice@example.com" and claims["name"] == "Alice"
    session = McpSession(fed["proxy"].url("/mcp"), tokens["access_token"]).open()
    tools = [t["name"] for t in session.request("tools/list")["result"]["tools"]]
    assert "echo" in tools and "get-env" not in tools


def test_a_user_taken_out_of_a_group_loses_it_at_the_next_refresh(fed):
    client_id, tokens = login(fed, "bob")
    assert membership(fed, claims_of(tokens["access_token"])) in (["mcp-platform"], ["MCP.Platform"])
    admin(fed, "bob", body={"groups": ["Everyone"], "roles": []})
    try:
        refreshed = refresh(fed, client_id, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert membership(fed, claims_of(refreshed.json()["access_token"])) == []
    finally:
        admin(fed, "bob", body={"groups": ["mcp-platform", "Everyone"], "roles": ["MCP.Platform"]})


def test_a_revoked_upstream_grant_fails_our_refresh_and_revokes_the_family(fed):
    client_id, tokens = login(fed, "dave")
    admin(fed, "dave", "revoke")
    refused = refresh(fed, client_id, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert "sign in again" in refused.json()["error_description"]
    again = refresh(fed, client_id, tokens["refresh_token"])
    assert again.json()["error"] == "invalid_grant"


def test_a_disabled_user_fails_our_refresh(fed):
    client_id, tokens = login(fed, "carol")
    admin(fed, "carol", body={"disabled": True})
    try:
        assert refresh(fed, client_id, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    finally:
        admin(fed, "carol", body={"disabled": False})


def test_a_replayed_callback_state_is_refused(fed):
    proxy = fed["proxy"]
    client_id = register(proxy.origin)
    _, challenge = pkce()
    browser = Browser()
    callback = browser.authorize(authorize_url(proxy.origin, proxy.resource, client_id, challenge), "alice",
                                 finish_at=f"{proxy.origin}/oauth/callback")
    first = browser.get(callback)
    assert first.status_code == 303 and first.headers["location"].startswith("/oauth/consent?"), "signed in: consent next"
    replay = browser.get(callback)
    assert replay.status_code == 400 and "already used" in replay.text


def test_a_wrong_client_secret_is_a_clear_error_in_the_log_only(fed):
    """The administrator's advice (which file, which setting) goes to the log; the browser gets
    a generic page (the client was never approved, so nothing is redirected to it)."""
    port = fed["other_port"]
    base = f"http://127.0.0.1:{port}"
    workdir = fed["workdir"]
    config = server_config(workdir, base, f"{base}/mcp", fed["idp_url"], fed["profile"], "not-the-secret")
    server = AuthServer(fed["log_dir"], workdir, config, port, [], name=f"authserver-wrong-{fed['profile']}")
    try:
        client_id = register(base)
        _, challenge = pkce()
        browser = Browser()
        callback = browser.authorize(authorize_url(base, f"{base}/mcp", client_id, challenge), "alice",
                                     finish_at=f"{base}/oauth/callback")
        answer = browser.get(callback)
        assert answer.status_code == 500 and "location" not in answer.headers
        assert "server_error" in answer.text and "client_secret_file" not in answer.text
        wait_until(lambda: "client_secret_file" in server.process.log(), 10, "the advice in the log")
    finally:
        server.stop()


def test_a_plain_oauth2_provider_works_through_userinfo(fed):
    """The `oauth2` upstream: explicit endpoints, the user from userinfo through a field mapping.
    (Against the Entra-shaped provider, whose opaque access tokens its userinfo accepts.)"""
    if fed["profile"] != "entra":
        pytest.skip("the Okta-shaped provider issues JWT access tokens, which its userinfo refuses")
    port = fed["other_port"]
    base = f"http://127.0.0.1:{port}"
    workdir = fed["workdir"]
    config = server_config(workdir, base, f"{base}/mcp", fed["idp_url"], "entra", "gateway-secret")
    config["database"] = f"sqlite://{workdir}/auth-oauth2.db"
    idp = fed["idp_url"]
    config["upstream"] = {
        "type": "oauth2", "authorization_url": f"{idp}/auth", "token_url": f"{idp}/token", "userinfo_url": f"{idp}/me",
        "client_id": "mcp-gateway", "client_secret_file": config["upstream"]["client_secret_file"],
        "scopes": ["openid", "email", "profile", "offline_access"], "auth_method": "client_secret_post",
        "fields": {"subject": "oid", "roles": "roles", "email_verified": "email_verified"}}
    server = AuthServer(fed["log_dir"], workdir, config, port, [], name="authserver-oauth2")
    try:
        client_id = register(base)
        verifier, challenge = pkce()
        landing = Browser().authorize(authorize_url(base, f"{base}/mcp", client_id, challenge), "alice", finish_at=REDIRECT)
        tokens = requests.post(f"{base}/oauth/token", data={
            "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client_id}, timeout=15).json()
        claims = claims_of(tokens["access_token"])
        assert claims["sub"] == "00000000-0000-0000-0000-00000000a11c" and claims["roles"] == ["MCP.Developer"]
        assert claims["email"] == "alice@example.com"
        refreshed = requests.post(f"{base}/oauth/token", data={
            "grant_type": "refresh_token", "client_id": client_id, "refresh_token": tokens["refresh_token"]}, timeout=15)
        assert refreshed.status_code == 200, refreshed.text
    finally:
        server.stop()


def test_zz_an_unreachable_idp_is_a_clear_error_and_loses_nothing(fed):
    client_id, tokens = login(fed, "erin")
    fed["idp"].stop()
    for _ in range(2):  # the second try proves the first consumed nothing
        response = refresh(fed, client_id, tokens["refresh_token"])
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "temporarily_unavailable"
        assert "unreachable" in response.json()["error_description"]
