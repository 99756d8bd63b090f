"""The authorization server binary over HTTP, and the filter trusting it through its JWKS."""

import base64
import json
import re
import secrets
import subprocess
from urllib.parse import urlencode

import pytest
import requests

from authstack import AUTHSERVER, REDIRECT, AuthServer as _AuthServer, pkce, query, write_key
from browser import Browser, screenshots
from harness import ROOT, Envoy, McpSession, free_port

POLICIES = [
    # machine clients (no groups) may echo
    'permit(principal, action == Action::"call_tool", resource == Tool::"echo") when { principal.claim_scope == "mcp:tools" };',
    'permit(principal in THVGroup::"mcp-developers", action, resource);',
    'forbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"get-env");',
]
USERS = """users:
- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers, Everyone]}
- {username: carol, password: password, email: carol@example.com, name: Carol, groups: [Everyone]}
"""


@pytest.fixture(scope="module")
def stack(log_dir, everything, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authserver")
    port = free_port()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=port, name="envoy-authserver",
                  jwks={"path": "/.well-known/jwks.json", "refresh_seconds": 2, "unknown_kid_cooldown_seconds": 1},
                  filter_config={"cedar": {"policies": POLICIES}})
    key_a = write_key(workdir / "a.pem", "ec")
    server = AuthServer(log_dir, workdir, proxy.origin, proxy.resource, port, [key_a])
    proxy.wait_ready()
    state = {"proxy": proxy, "server": server, "port": port, "workdir": workdir, "keys": [key_a], "log_dir": log_dir}
    yield state
    state["server"].stop()
    proxy.stop()


def AuthServer(log_dir, workdir, issuer, resource, port, keys, name="authserver", extra=None):
    users = workdir / "users.yaml"
    users.write_text(USERS)
    config = {"issuer": issuer, "resources": [resource], "database": f"sqlite://{workdir}/auth.db",
              "scopes": ["mcp:tools", "offline_access"], "groups": {"prefix": "mcp-"},
              "upstream": {"type": "dev", "users_file": str(users)},
              "registration": {"confidential_clients": True},
              **(extra if extra is not None else {"client_metadata": {"allow_private_addresses": True, "allow_http": True}})}
    return _AuthServer(log_dir, workdir, config, port, keys, name=name)


def restart(stack, keys):
    stack["server"].stop()
    stack["keys"] = keys
    stack["server"] = AuthServer(stack["log_dir"], stack["workdir"], stack["proxy"].origin, stack["proxy"].resource,
                                 stack["port"], keys, name=f"authserver-{len(keys)}")


def register_m2m(proxy):
    response = requests.post(proxy.url("/oauth/register"), json={
        "client_name": "nightly-job", "redirect_uris": ["https://jobs.example.com/cb"], "scope": "mcp:tools",
        "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def m2m_token(proxy, client, scope="mcp:tools"):
    response = requests.post(proxy.url("/oauth/token"), auth=(client["client_id"], client["client_secret"]),
                             data={"grant_type": "client_credentials", "scope": scope, "resource": proxy.resource}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_metadata_and_jwks_are_served_on_the_mcp_origin(stack):
    proxy = stack["proxy"]
    metadata = requests.get(proxy.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert metadata["issuer"] == proxy.origin
    assert metadata["token_endpoint"] == f"{proxy.origin}/oauth/token"
    assert metadata["registration_endpoint"] == f"{proxy.origin}/oauth/register"
    keys = requests.get(proxy.url("/.well-known/jwks.json"), timeout=10).json()["keys"]
    assert len(keys) == 1 and len(keys[0]["kid"]) == 43 and keys[0]["alg"] == "ES256"


def test_registration_refuses_what_rfc_7591_and_8252_refuse(stack):
    proxy = stack["proxy"]
    public = requests.post(proxy.url("/oauth/register"), json={"redirect_uris": ["http://127.0.0.1:7777/cb"]}, timeout=10)
    assert public.status_code == 201 and "client_secret" not in public.json()
    bad = requests.post(proxy.url("/oauth/register"), json={"redirect_uris": ["http://evil.example.com/cb"]}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_redirect_uri"


def test_a_machine_token_from_the_server_is_accepted_and_authorized_by_the_filter(stack):
    proxy = stack["proxy"]
    client = register_m2m(proxy)
    session = McpSession(proxy.url("/mcp"), m2m_token(proxy, client)).open()
    assert "hi" in json.dumps(session.request("tools/call", {"name": "echo", "arguments": {"message": "hi"}}))
    denied = session.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get-env", "arguments": {}}})
    assert denied.status_code == 403


def test_token_endpoint_errors_follow_rfc_6749(stack):
    proxy = stack["proxy"]
    client = register_m2m(proxy)
    wrong = requests.post(proxy.url("/oauth/token"), auth=(client["client_id"], "wrong"),
                          data={"grant_type": "client_credentials"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    target = requests.post(proxy.url("/oauth/token"), auth=(client["client_id"], client["client_secret"]),
                           data={"grant_type": "client_credentials", "resource": "https://other.example.com/mcp"}, timeout=10)
    assert target.status_code == 400 and target.json()["error"] == "invalid_target"
    scope = requests.post(proxy.url("/oauth/token"), auth=(client["client_id"], client["client_secret"]),
                          data={"grant_type": "client_credentials", "scope": "mcp:admin"}, timeout=10)
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    grant = requests.post(proxy.url("/oauth/token"), data={"grant_type": "password"}, timeout=10)
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    assert requests.get(f"{stack['server'].url}/readyz", timeout=10).status_code == 200


def scrape(stack):
    """Every sample of `/metrics`, by series (name and labels as exposed)."""
    text = requests.get(f"{stack['server'].url}/metrics", timeout=10).text
    return {series: float(value) for series, value in re.findall(r"^(mcp_authserver_\S+) (\S+)$", text, re.M)}


def test_metrics_count_token_answers_by_grant_type_and_error_code(stack):
    proxy = stack["proxy"]
    client = register_m2m(proxy)
    before = scrape(stack)
    wrong = requests.post(proxy.url("/oauth/token"), auth=(client["client_id"], "wrong"),
                          data={"grant_type": "client_credentials"}, timeout=10)
    assert wrong.status_code == 401
    m2m_token(proxy, client)
    unknown = requests.post(proxy.url("/oauth/token"), data={"grant_type": "x\"}"}, timeout=10)
    assert unknown.status_code == 400
    after = scrape(stack)

    def moved(series):
        return after.get(series, 0) - before.get(series, 0)
    assert moved('mcp_authserver_token_errors_total{grant_type="client_credentials",error="invalid_client"}') == 1
    assert moved('mcp_authserver_tokens_issued_total{grant_type="client_credentials"}') == 1
    assert moved('mcp_authserver_token_errors_total{grant_type="other",error="unsupported_grant_type"}') == 1
    assert moved("mcp_authserver_token_request_duration_seconds_count") == 3
    assert moved('mcp_authserver_token_request_duration_seconds_bucket{le="+Inf"}') == 3
    assert not any('x"' in series for series in after), "a client-chosen grant_type became a label"


def test_a_restart_keeps_clients_and_a_key_rotation_keeps_old_tokens_valid(stack):
    proxy = stack["proxy"]
    client = register_m2m(proxy)
    old_token = m2m_token(proxy, client)
    key_b = write_key(stack["workdir"] / "b.pem", "rsa")
    restart(stack, [key_b, *stack["keys"]])  # B signs from now on; A is still published
    new_token = m2m_token(proxy, client)  # the client registered before the restart still works
    for token in (old_token, new_token):
        session = McpSession(proxy.url("/mcp"), token).open()
        assert "ok" in json.dumps(session.request("tools/call", {"name": "echo", "arguments": {"message": "ok"}}))
    header = json.loads(__import__("base64").urlsafe_b64decode(new_token.split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt"


def test_a_bad_configuration_stops_the_server_naming_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("issuer: http://localhost:1\nresources: []\n")
    result = subprocess.run([str(AUTHSERVER), "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "`resources`" in result.stderr


def register_public(proxy, scope=None):
    metadata = {"client_name": "Test <MCP> Client", "redirect_uris": [REDIRECT]}
    if scope:
        metadata["scope"] = scope
    response = requests.post(proxy.url("/oauth/register"), json=metadata, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def authorize_url(proxy, client, challenge, **overrides):
    params = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "st-123",
              "resource": proxy.resource, "scope": "mcp:tools offline_access"}
    params.update(overrides)
    return proxy.url("/oauth/authorize") + "?" + urlencode({k: v for k, v in params.items() if v is not None})


def exchange(proxy, client, code, verifier, **overrides):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": client["client_id"], "resource": proxy.resource}
    data.update(overrides)
    return requests.post(proxy.url("/oauth/token"), data={k: v for k, v in data.items() if v is not None}, timeout=10)


def login(proxy, client, user="alice", browser=None):
    verifier, challenge = pkce()
    landing = (browser or Browser()).authorize(authorize_url(proxy, client, challenge), user)
    answer = query(landing)
    assert landing.startswith(REDIRECT) and "code" in answer, landing
    response = exchange(proxy, client, answer["code"], verifier)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_code_flow_runs_through_consent_and_the_dev_login_into_the_mcp_server(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    browser = Browser()
    verifier, challenge = pkce()
    landing = browser.authorize(authorize_url(proxy, client, challenge), "alice")
    answer = query(landing)
    assert answer["state"] == "st-123" and answer["iss"] == proxy.origin  # RFC 9207
    assert 'action="/oauth/login"' in browser.pages[0], "login comes first, then consent"
    consent = browser.pages[1]
    assert "Alice (alice@example.com)" in consent and proxy.resource in consent
    assert "Test &lt;MCP&gt; Client" in consent and "127.0.0.1" in consent and "offline_access" in consent
    assert 'name="approve"' in consent and 'name="deny"' in consent
    tokens = exchange(proxy, client, answer["code"], verifier).json()
    assert tokens["token_type"] == "Bearer" and "refresh_token" in tokens
    claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    assert claims["sub"] == "dev:alice" and claims["aud"] == proxy.resource and claims["iss"] == proxy.origin
    assert claims["groups"] == ["mcp-developers"], "groups are prefix-filtered"
    assert claims["email"] == "alice@example.com" and claims["name"] == "Alice"
    session = McpSession(proxy.url("/mcp"), tokens["access_token"]).open()
    tools = [t["name"] for t in session.request("tools/list")["result"]["tools"]]
    assert "echo" in tools and "get-env" not in tools


def test_consent_is_asked_once_per_user_client_and_resource(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    browser = Browser()
    login(proxy, client, browser=browser)
    pages_before = len(browser.pages)
    login(proxy, client, browser=browser)
    assert not any('action="/oauth/consent"' in page for page in browser.pages[pages_before:])


def test_a_denied_consent_goes_back_with_access_denied(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    _, challenge = pkce()
    landing = Browser().authorize(authorize_url(proxy, client, challenge), "alice", approve=False)
    assert query(landing) == {"error": "access_denied", "error_description": "the user denied access",
                              "state": "st-123", "iss": proxy.origin}


@pytest.mark.parametrize("overrides, error", [
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"resource": "https://other.example.com/mcp"}, "invalid_target"),
    ({"resource": None}, "invalid_target"),
    ({"scope": "mcp:admin"}, "invalid_scope"),
    ({"response_type": "token"}, "unsupported_response_type"),
])
def test_authorization_errors_are_shown_with_their_code_never_redirected(stack, overrides, error):
    """Even for a client a user approved before: a link's errors are a page at the server, not
    a redirect (RFC 9700 §4.11.2); only the answer to the consent page goes back
    (test_a_denied_consent_goes_back_with_access_denied)."""
    proxy = stack["proxy"]
    client = register_public(proxy)
    login(proxy, client)
    _, challenge = pkce()
    response = requests.get(authorize_url(proxy, client, challenge, **overrides), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert error in response.text, "the page names the error"


def test_an_unknown_client_or_redirect_uri_is_shown_not_redirected(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    _, challenge = pkce()
    for overrides in ({"redirect_uri": "https://evil.example.com/cb"}, {"client_id": "nope"}):
        response = requests.get(authorize_url(proxy, client, challenge, **overrides), allow_redirects=False, timeout=10)
        assert response.status_code == 400 and "location" not in response.headers
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_code_exchange_checks_pkce_and_redirect_and_a_replay_revokes_the_family(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    verifier, challenge = pkce()
    code = query(Browser().authorize(authorize_url(proxy, client, challenge), "alice"))["code"]
    assert exchange(proxy, client, code, "x" * 50).json()["error"] == "invalid_grant"
    code = query(Browser().authorize(authorize_url(proxy, client, challenge), "alice"))["code"]
    assert exchange(proxy, client, code, verifier, redirect_uri="http://127.0.0.1:9999/other").json()["error"] == "invalid_grant"
    code = query(Browser().authorize(authorize_url(proxy, client, challenge), "alice"))["code"]
    first = exchange(proxy, client, code, verifier)
    assert first.status_code == 200
    replay = exchange(proxy, client, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    refreshed = requests.post(proxy.url("/oauth/token"), data={"grant_type": "refresh_token", "client_id": client["client_id"],
                                                               "refresh_token": first.json()["refresh_token"]}, timeout=10)
    assert refreshed.json()["error"] == "invalid_grant", "the replay revoked what the code had issued"


def test_refresh_tokens_rotate_and_reuse_revokes_the_family(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    tokens = login(proxy, client)

    def refresh(token):
        return requests.post(proxy.url("/oauth/token"), data={"grant_type": "refresh_token", "client_id": client["client_id"],
                                                              "refresh_token": token}, timeout=10)
    second = refresh(tokens["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != tokens["refresh_token"]
    retry = refresh(tokens["refresh_token"])
    assert retry.json()["refresh_token"] == second.json()["refresh_token"], "a retry within the grace gets the same successor"
    third = refresh(second.json()["refresh_token"])
    assert third.status_code == 200, third.text
    assert refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant", "once the client moved on, reuse is a replay"
    assert refresh(third.json()["refresh_token"]).json()["error"] == "invalid_grant", "and its family is revoked"


def test_no_refresh_token_without_offline_access(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    verifier, challenge = pkce()
    code = query(Browser().authorize(authorize_url(proxy, client, challenge, scope="mcp:tools"), "alice"))["code"]
    assert "refresh_token" not in exchange(proxy, client, code, verifier).json()


def test_revocation_ends_a_refresh_family(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    tokens = login(proxy, client)
    revoked = requests.post(proxy.url("/oauth/revoke"), data={"token": tokens["refresh_token"], "client_id": client["client_id"]}, timeout=10)
    assert revoked.status_code == 200
    again = requests.post(proxy.url("/oauth/token"), data={"grant_type": "refresh_token", "client_id": client["client_id"],
                                                           "refresh_token": tokens["refresh_token"]}, timeout=10)
    assert again.json()["error"] == "invalid_grant"


def test_refresh_tokens_survive_a_restart(stack):
    proxy = stack["proxy"]
    client = register_public(proxy)
    tokens = login(proxy, client)
    restart(stack, stack["keys"])
    again = requests.post(proxy.url("/oauth/token"), data={"grant_type": "refresh_token", "client_id": client["client_id"],
                                                           "refresh_token": tokens["refresh_token"]}, timeout=10)
    assert again.status_code == 200, again.text


def test_authlib_completes_the_flow(stack):
    """An OAuth client library nobody here wrote: Authlib's OAuth2Session with PKCE S256."""
    from authlib.integrations.requests_client import OAuth2Session

    proxy = stack["proxy"]
    client = register_public(proxy)
    metadata = requests.get(proxy.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    verifier = secrets.token_urlsafe(48)
    session = OAuth2Session(client["client_id"], redirect_uri=REDIRECT, scope="mcp:tools offline_access",
                            code_challenge_method="S256", token_endpoint_auth_method="none")
    url, state = session.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier,
                                                  resource=proxy.resource)
    landing = Browser().authorize(url, "alice")
    token = session.fetch_token(metadata["token_endpoint"], authorization_response=landing, code_verifier=verifier,
                                resource=proxy.resource, state=state)
    assert token["token_type"] == "Bearer" and token["refresh_token"]
    refreshed = session.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]


@pytest.fixture(scope="module")
def documents():
    """Serves client metadata documents from 127.0.0.1, as a client would from its own site."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    served = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(served.get(self.path, {})).encode()
            self.send_response(200 if self.path in served else 404)
            self.send_header("content-type", "application/json")
            self.send_header("cache-control", "max-age=60")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, served
    server.shutdown()


def test_a_client_id_metadata_document_client_completes_the_flow(stack, documents):
    proxy = stack["proxy"]
    base, served = documents
    client_id = f"{base}/vscode.json"
    served["/vscode.json"] = {"client_id": client_id, "client_name": "Documented Client", "redirect_uris": [REDIRECT]}
    verifier, challenge = pkce()
    browser = Browser()
    landing = browser.authorize(authorize_url(proxy, {"client_id": client_id}, challenge), "alice")
    assert any("Documented Client" in page and "127.0.0.1" in page for page in browser.pages)
    tokens = exchange(proxy, {"client_id": client_id}, query(landing)["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    claims = json.loads(base64.urlsafe_b64decode(tokens.json()["access_token"].split(".")[1] + "=="))
    assert claims["client_id"] == client_id


def test_a_metadata_document_naming_another_client_is_refused(stack, documents):
    proxy = stack["proxy"]
    base, served = documents
    served["/liar.json"] = {"client_id": "https://trusted.example.com/client.json", "redirect_uris": [REDIRECT]}
    _, challenge = pkce()
    response = requests.get(authorize_url(proxy, {"client_id": f"{base}/liar.json"}, challenge), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "location" not in response.headers
    assert "not the URL it was fetched from" in response.text


def test_a_metadata_document_on_a_private_address_is_refused(stack, tmp_path):
    port = free_port()
    server = AuthServer(stack["log_dir"], tmp_path, "http://localhost:1", "http://localhost:1/mcp", port, [],
                        name="authserver-strict", extra={})
    try:
        params = {"response_type": "code", "client_id": "https://127.0.0.1:9/client.json", "redirect_uri": REDIRECT,
                  "code_challenge": "x" * 43, "code_challenge_method": "S256", "resource": "http://localhost:1/mcp"}
        response = requests.get(f"{server.url}/oauth/authorize?{urlencode(params)}", allow_redirects=False, timeout=10)
        assert response.status_code == 400
        # Refused, and the visitor is not told why (an internal-network oracle); the log is.
        assert "could not be retrieved" in response.text and "loopback" not in response.text
        assert "private or loopback address" in server.process.log()
        # At the token endpoint a document that cannot be retrieved is a 503 to retry, not an
        # `invalid_client` a client would take as final (and drop its sessions over).
        token = requests.post(f"{server.url}/oauth/token", data={
            "grant_type": "authorization_code", "client_id": params["client_id"], "code": "c",
            "code_verifier": "v" * 43, "redirect_uri": REDIRECT}, timeout=10)
        assert (token.status_code, token.json()["error"]) == (503, "temporarily_unavailable"), token.text
        assert "loopback" not in token.text
    finally:
        server.stop()


def test_consent_and_login_pages_render_in_headless_chromium(stack):
    """Debian's Chromium, driven by playwright-core: what a person sees, then the redirect back.
    The screenshots stay in target/screenshots/ for a reviewer."""
    proxy = stack["proxy"]
    client = register_public(proxy)
    _, challenge = pkce()
    shots, prefix = screenshots(), "test_consent_and_login_pages_render_in_headless_chromium"
    result = subprocess.run(["node", str(ROOT / "tests" / "browser" / "consent-login.mjs"),
                             authorize_url(proxy, client, challenge), str(shots), prefix],
                            capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["consent"]["client"] == "Test <MCP> Client", "the name is shown as text, not markup"
    assert seen["consent"]["host"] == "127.0.0.1"
    assert seen["consent"]["user"] == "Alice (alice@example.com)" and seen["consent"]["resource"] == proxy.resource
    assert seen["consent"]["scopes"] == ["mcp:tools", "offline_access"]
    assert seen["consent"]["buttons"] == ["approve", "deny"]
    assert seen["login"]["fields"] == ["username", "password"]
    answer = query(seen["landing"])
    assert answer["iss"] == proxy.origin and answer["state"] == "st-123" and answer["code"]
    assert (shots / f"{prefix}-consent.png").stat().st_size > 1000 and (shots / f"{prefix}-login.png").stat().st_size > 1000
