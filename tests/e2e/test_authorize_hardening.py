"""`/oauth/authorize`, login and consent against what an attacker review found: no open
redirector for clients nobody approved, consent remembered per user, client, MCP resource and
scope, bounded parameters, only verified email addresses in tokens, and no internal detail in
what clients and browsers are shown."""

import sqlite3
from urllib.parse import urlencode

import pytest
import requests

from authstack import REDIRECT, AuthServer, claims_of, pkce, query, write_key
from browser import Browser
from harness import free_port, wait_until
from test_federation import server_config, start_idp

EVIL = "https://evil.example.com/cb"
USERS = """users:
- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers]}
"""


@pytest.fixture(scope="module")
def dev(log_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authorize-hardening")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    users = workdir / "users.yaml"
    users.write_text(USERS)
    resources = [f"{origin}/mcp-a", f"{origin}/mcp-b"]
    config = {"issuer": origin, "resources": resources, "database": f"sqlite://{workdir}/auth.db",
              "scopes": ["mcp:tools", "offline_access"], "upstream": {"type": "dev", "users_file": str(users)}}
    server = AuthServer(log_dir, workdir, config, port, [write_key(workdir / "k.pem", "ec")], name="authserver-hardening")
    yield {"origin": origin, "a": resources[0], "b": resources[1], "db": workdir / "auth.db", "server": server}
    server.stop()


def register(origin, redirect=REDIRECT):
    response = requests.post(f"{origin}/oauth/register", json={"client_name": "Helpful Tool", "redirect_uris": [redirect]}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["client_id"]


def authorize_url(origin, client, target, redirect=REDIRECT, **overrides):
    _, challenge = pkce()
    params = {"response_type": "code", "client_id": client, "redirect_uri": redirect, "code_challenge": challenge,
              "code_challenge_method": "S256", "state": "st-1", "resource": target, "scope": "mcp:tools offline_access"}
    params.update(overrides)
    return f"{origin}/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


def consent_shown(browser, since):
    return any('action="/oauth/consent"' in page for page in browser.pages[since:])


@pytest.mark.parametrize("bad", [{"code_challenge_method": "plain"}, {"scope": "mcp:admin"}])
def test_a_registered_client_gets_its_errors_shown_not_redirected(dev, bad):
    """Registering `https://evil…/cb` must not turn the server into an open redirector (RFC 9700
    §4.11.2): errors before the person answers the consent page are a page at the server, also
    after the registrant approved its own client."""
    client_id = register(dev["origin"], EVIL)
    response = requests.get(authorize_url(dev["origin"], client_id, dev["a"], EVIL, **bad), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert next(iter(bad.values())) in response.text, "the page names the problem"

    landing = Browser().authorize(authorize_url(dev["origin"], client_id, dev["a"], EVIL), "alice")
    assert landing.startswith(EVIL) and "code" in query(landing)
    response = requests.get(authorize_url(dev["origin"], client_id, dev["a"], EVIL, **bad), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "location" not in response.headers, \
        "approved once (here by the registrant itself) is no licence to redirect a link's errors"


def test_consent_is_remembered_per_resource_and_for_narrower_scopes_only(dev):
    client_id = register(dev["origin"])
    browser = Browser()
    first = browser.authorize(authorize_url(dev["origin"], client_id, dev["a"]), "alice")
    assert "code" in query(first) and consent_shown(browser, 0)
    page = next(p for p in browser.pages if 'action="/oauth/consent"' in p)
    assert "Alice (alice@example.com)" in page and dev["a"] in page and "a name the client chose itself" in page

    seen = len(browser.pages)
    other = browser.authorize(authorize_url(dev["origin"], client_id, dev["b"]), "alice", approve=False)
    assert consent_shown(browser, seen), "approving resource A does not approve resource B"
    assert query(other)["error"] == "access_denied"

    seen = len(browser.pages)
    narrower = browser.authorize(authorize_url(dev["origin"], client_id, dev["a"], scope="mcp:tools"), "alice")
    assert "code" in query(narrower) and not consent_shown(browser, seen), "a narrower scope is remembered"


def pending_requests(db):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(params)), 0) FROM auth_requests").fetchone()


@pytest.mark.parametrize("name, value", [
    ("state", "s" * 60_000),
    ("scope", "mcp:tools " * 200),
    ("resource", "https://mcp.example.com/" + "r" * 3000),
    ("redirect_uri", "http://127.0.0.1:8765/" + "u" * 3000),
    ("code_challenge", "A" * 44),
    ("client_id", "https://client.example.com/" + "c" * 3000),
])
def test_over_long_parameters_are_refused_and_nothing_is_stored(dev, name, value):
    client_id = register(dev["origin"])
    before = pending_requests(dev["db"])
    response = requests.get(authorize_url(dev["origin"], client_id, dev["a"], **{name: value}), allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "location" not in response.headers
    assert name in response.text and ("at most" in response.text or "43-character" in response.text), response.text
    assert pending_requests(dev["db"]) == before


def test_login_and_consent_pages_without_their_parameter_answer_with_a_page(dev):
    for path in ("/oauth/login", "/oauth/consent"):
        response = requests.get(f"{dev['origin']}{path}", timeout=10)
        assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
        assert "Start again from your MCP client" in response.text
    response = requests.post(f"{dev['origin']}/oauth/consent", data={"request": "x"}, timeout=10)
    assert response.status_code == 400 and "form is incomplete" in response.text


@pytest.fixture(scope="module")
def oidc(log_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authorize-hardening-oidc")
    port, idp_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{port}"
    idp_origin = f"http://127.0.0.1:{idp_port}"
    idp = start_idp(log_dir, "okta", idp_port, [f"{origin}/oauth/callback"])
    Browser.idp_origins.add(idp_origin)
    config = server_config(workdir, origin, f"{origin}/mcp", f"{idp_origin}/oauth2/default", "okta", "gateway-secret")
    server = AuthServer(log_dir, workdir, config, port, [write_key(workdir / "k.pem", "ec")], name="authserver-hardening-oidc")
    yield {"origin": origin, "resource": f"{origin}/mcp", "server": server}
    server.stop()
    idp.stop()


def oidc_login(oidc, user):
    client_id = register(oidc["origin"])
    verifier, challenge = pkce()
    url = authorize_url(oidc["origin"], client_id, oidc["resource"], code_challenge=challenge)
    landing = Browser().authorize(url, user, finish_at=REDIRECT)
    response = requests.post(f"{oidc['origin']}/oauth/token", data={
        "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id}, timeout=15)
    assert response.status_code == 200, response.text
    return claims_of(response.json()["access_token"])


def test_an_email_the_provider_did_not_verify_stays_out_of_our_token(oidc):
    assert oidc_login(oidc, "alice")["email"] == "alice@example.com"
    frank = oidc_login(oidc, "frank")
    assert frank["sub"] == "frank" and "email" not in frank, "ceo@example.com was never verified"


def test_a_provider_error_is_shown_without_its_detail(oidc):
    """A provider error on the way back is a page with a fixed description (no redirect before
    the consent answer); the provider's text (which may carry internal URLs or stack traces) is
    only in our log."""
    client_id = register(oidc["origin"])
    browser = Browser()
    landing = browser.authorize(authorize_url(oidc["origin"], client_id, oidc["resource"]), "alice", finish_at=REDIRECT)
    assert "code" in query(landing), "the client is approved now"
    callback = browser.authorize(authorize_url(oidc["origin"], client_id, oidc["resource"]), "alice",
                                 finish_at=f"{oidc['origin']}/oauth/callback")
    upstream_state = query(callback)["state"]
    leak = "db01.internal.corp:5432 timeout at handler.js:42"
    answer = browser.get(f"{oidc['origin']}/oauth/callback?" + urlencode(
        {"state": upstream_state, "error": "server_error", "error_description": leak}))
    assert answer.status_code >= 400 and "location" not in answer.headers
    assert "server_error" in answer.text
    assert "internal" not in answer.text and "handler.js" not in answer.text
    wait_until(lambda: "handler.js:42" in oidc["server"].process.log(), 10, "the provider's detail in the log")
