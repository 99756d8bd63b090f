"""RFC 8693 token exchange at the authorization server: a gateway client exchanges a signed-in
user's access token for a token of a backend's own — one we sign (verified against our JWKS with
the backend's audience) or the upstream OpenID provider's for the same user (verified against
the provider's JWKS) — and every kind of abuse gets the RFC's error. The user signs in through
a real code flow at a real oidc-provider (Okta-shaped); no Envoy is involved."""

import base64
import os
import time
from urllib.parse import urlencode

import jwt
import pytest
import requests

from authstack import REDIRECT, AuthServer, claims_of, pkce, query, write_key
from browser import Browser
from harness import SigningKey, free_port
from test_federation import start_idp

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
GITHUB = "https://github-mcp.internal/mcp"  # trusts us
JIRA = "https://jira-mcp.internal/mcp"  # trusts the identity provider
GATEWAY = ("mesh-gateway", "gateway-secret-0123456789abcdef")
OTHER = ("other-gateway", "other-secret-0123456789abcdef")  # may exchange for GITHUB only
IDLE = ("idle-gateway", "idle-secret-0123456789abcdef")  # declared, listed for nothing
ACCESS_SECONDS = 3


def server_config(workdir, issuer, idp_url, name, upstream_scopes):
    secrets_dir = workdir / name
    secrets_dir.mkdir()
    (secrets_dir / "idp-secret").write_text("gateway-secret\n")
    (secrets_dir / "encryption.key").write_text(base64.b64encode(os.urandom(32)).decode())
    gateways = []
    for client_id, secret in (GATEWAY, OTHER, IDLE):
        (secrets_dir / client_id).write_text(secret + "\n")
        gateways.append({"client_id": client_id, "client_secret_file": str(secrets_dir / client_id)})
    return {
        "issuer": issuer, "resources": [f"{issuer}/mcp"], "database": f"sqlite://{secrets_dir}/auth.db",
        "scopes": ["mcp:tools", "offline_access"], "groups": {"prefix": "mcp-"},
        "lifetimes": {"access_seconds": ACCESS_SECONDS},
        "encryption_key_file": str(secrets_dir / "encryption.key"),
        "upstream": {"type": "oidc", "issuer_url": idp_url, "client_id": "mcp-gateway",
                     "client_secret_file": str(secrets_dir / "idp-secret"), "allow_http_issuer": True,
                     "scopes": upstream_scopes, "groups_claim": "groups", "claims_from": ["access_token", "id_token"],
                     # RFC 8707: the sign-in asks for the provider-trusting backend too, so that its
                     # refresh token may later be exchanged for that backend's tokens.
                     "extra_params": {"resource": JIRA}},
        "token_exchange": {"lifetime_seconds": 120, "gateways": gateways, "audiences": [
            {"audience": GITHUB, "clients": [GATEWAY[0], OTHER[0]], "scopes": ["mcp:tools"]},
            {"audience": JIRA, "clients": [GATEWAY[0]], "scopes": ["mcp:tools"], "issuer": "upstream",
             "upstream_resource": JIRA, "upstream_scopes": ["openid", "groups"]},
        ]},
    }


@pytest.fixture(scope="module")
def stack(log_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("exchange")
    port, offline_port, idp_port = free_port(), free_port(), free_port()
    issuer, offline_issuer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{offline_port}"
    idp_origin = f"http://127.0.0.1:{idp_port}"
    idp = start_idp(log_dir, "okta", idp_port, [f"{issuer}/oauth/callback", f"{offline_issuer}/oauth/callback"])
    Browser.idp_origins.add(idp_origin)
    idp_url = f"{idp_origin}/oauth2/default"
    scopes = ["openid", "profile", "email", "offline_access", "groups"]
    server = AuthServer(log_dir, workdir, server_config(workdir, issuer, idp_url, "main", scopes), port,
                        [write_key(workdir / "k.pem", "ec")], name="authserver-exchange")
    # The same, but its sign-ins keep no upstream refresh token (no offline_access upstream).
    offline = AuthServer(log_dir, workdir, server_config(workdir, offline_issuer, idp_url, "offline",
                                                         [s for s in scopes if s != "offline_access"]),
                         offline_port, [write_key(workdir / "k2.pem", "ec")], name="authserver-exchange-offline")
    state = {"issuer": issuer, "offline_issuer": offline_issuer, "idp_url": idp_url}
    state["alice"] = SignIn(issuer, "alice")
    yield state
    offline.stop()
    server.stop()
    idp.stop()


class SignIn:
    """A user signed in through a public MCP client (a real code flow at the provider); its
    access tokens live ACCESS_SECONDS, so each test takes a fresh one with the refresh token."""

    def __init__(self, issuer, user):
        self.issuer = issuer
        registered = requests.post(f"{issuer}/oauth/register", json={"client_name": "MCP client", "redirect_uris": [REDIRECT]}, timeout=10)
        assert registered.status_code == 201, registered.text
        self.client_id = registered.json()["client_id"]
        verifier, challenge = pkce()
        landing = Browser().authorize(f"{issuer}/oauth/authorize?" + urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT, "code_challenge": challenge,
            "code_challenge_method": "S256", "resource": f"{issuer}/mcp", "scope": "mcp:tools offline_access"}),
            user, finish_at=REDIRECT)
        tokens = requests.post(f"{issuer}/oauth/token", data={
            "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": self.client_id}, timeout=15)
        assert tokens.status_code == 200, tokens.text
        self.refresh_token = tokens.json()["refresh_token"]

    def access_token(self):
        response = requests.post(f"{self.issuer}/oauth/token", data={
            "grant_type": "refresh_token", "client_id": self.client_id, "refresh_token": self.refresh_token}, timeout=15)
        assert response.status_code == 200, response.text
        self.refresh_token = response.json()["refresh_token"]
        return response.json()["access_token"]


def exchange(issuer, subject_token, audience, client=GATEWAY, **fields):
    data = {"grant_type": EXCHANGE, "subject_token": subject_token, "subject_token_type": ACCESS_TOKEN,
            "audience": audience, **fields}
    data = {k: v for k, v in data.items() if v is not None}
    return requests.post(f"{issuer}/oauth/token", auth=client, data=data, timeout=15)


def verified(token, jwks_url, audience, issuer):
    """What a backend's verifier does: signature against the JWKS, then audience and issuer."""
    key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["ES256", "RS256"], audience=audience, issuer=issuer)


def refused(response, status, error):
    assert (response.status_code, response.json().get("error")) == (status, error), response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()["error_description"]


def test_metadata_lists_the_grant(stack):
    metadata = requests.get(f"{stack['issuer']}/.well-known/oauth-authorization-server", timeout=10).json()
    assert EXCHANGE in metadata["grant_types_supported"]


def test_a_backend_gets_a_short_lived_token_of_its_own_with_the_user_and_the_gateway_as_actor(stack):
    issuer = stack["issuer"]
    subject_token = stack["alice"].access_token()
    subject = claims_of(subject_token)
    response = exchange(issuer, subject_token, GITHUB)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["issued_token_type"] == ACCESS_TOKEN and answer["token_type"] == "Bearer"
    assert "refresh_token" not in answer
    assert answer["access_token"] != subject_token
    claims = verified(answer["access_token"], f"{issuer}/.well-known/jwks.json", GITHUB, issuer)
    assert claims["sub"] == "alice" and claims["groups"] == ["mcp-developers"] and claims["email"] == "alice@example.com"
    assert claims["act"] == {"sub": GATEWAY[0]} and claims["client_id"] == GATEWAY[0]
    assert claims["scope"] == "mcp:tools" == answer["scope"], "offline_access is not exchanged"
    assert claims["exp"] <= subject["exp"] and answer["expires_in"] <= ACCESS_SECONDS, "never past the caller's token"
    assert claims["jti"] != subject["jti"] and claims["sid"] == subject["sid"]
    with pytest.raises(jwt.InvalidAudienceError):
        verified(answer["access_token"], f"{issuer}/.well-known/jwks.json", f"{issuer}/mcp", issuer)
    # A backend that introspects instead (RFC 7662, as a confidential client) finds it active.
    introspected = requests.post(f"{issuer}/oauth/introspect", auth=OTHER, data={"token": answer["access_token"]}, timeout=10).json()
    assert (introspected["active"], introspected["aud"], introspected["sub"]) == (True, GITHUB, "alice")


def test_a_backend_trusting_the_provider_gets_the_providers_token_for_the_same_user(stack):
    issuer = stack["issuer"]
    response = exchange(issuer, stack["alice"].access_token(), JIRA)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["issued_token_type"] == ACCESS_TOKEN and answer["token_type"] == "Bearer"
    assert 60 < answer["expires_in"] <= 3600
    jwks_url = requests.get(f"{stack['idp_url']}/.well-known/openid-configuration", timeout=10).json()["jwks_uri"]
    claims = verified(answer["access_token"], jwks_url, JIRA, stack["idp_url"])
    assert claims["sub"] == "alice" and claims["groups"] == ["mcp-developers"]
    again = exchange(issuer, stack["alice"].access_token(), JIRA)
    assert again.json()["access_token"] == answer["access_token"], "kept, not asked of the provider again"
    # The provider's token is no subject token of ours.
    assert "not an access token this server issued" in refused(
        exchange(issuer, answer["access_token"], GITHUB), 400, "invalid_grant")


def test_clients_and_audiences_not_configured_are_refused(stack):
    issuer = stack["issuer"]
    token = stack["alice"].access_token()
    assert "may not exchange tokens" in refused(exchange(issuer, token, GITHUB, client=IDLE), 400, "unauthorized_client")
    not_allowed = refused(exchange(issuer, token, JIRA, client=OTHER), 400, "invalid_target")
    unknown = refused(exchange(issuer, token, "https://nowhere.internal/mcp"), 400, "invalid_target")
    assert not_allowed.replace(JIRA, "X") == unknown.replace("https://nowhere.internal/mcp", "X"), "no map of the configuration"
    assert exchange(issuer, token, GITHUB, client=OTHER).status_code == 200
    assert exchange(issuer, token, f"{issuer}/mcp").json()["error"] == "invalid_target", "the MCP resource itself"
    wrong_secret = exchange(issuer, token, GITHUB, client=(GATEWAY[0], "guess"))
    refused(wrong_secret, 401, "invalid_client")
    client_id = stack["alice"].client_id
    public = requests.post(f"{issuer}/oauth/token", data={
        "grant_type": EXCHANGE, "client_id": client_id, "subject_token": token, "subject_token_type": ACCESS_TOKEN,
        "audience": GITHUB}, timeout=10)
    refused(public, 401, "invalid_client")


def test_malformed_requests_are_invalid_request(stack):
    issuer = stack["issuer"]
    token = stack["alice"].access_token()
    assert "subject_token_type is required" in refused(
        exchange(issuer, token, GITHUB, subject_token_type=None), 400, "invalid_request")
    refused(exchange(issuer, token, GITHUB, subject_token_type="urn:ietf:params:oauth:token-type:id_token"), 400, "invalid_request")
    refused(exchange(issuer, None, GITHUB), 400, "invalid_request")
    refused(exchange(issuer, token, None), 400, "invalid_request")
    refused(exchange(issuer, token, GITHUB, actor_token=token), 400, "invalid_request")
    assert "mcp:admin" in refused(exchange(issuer, token, GITHUB, scope="mcp:admin"), 400, "invalid_scope")


def test_a_token_minted_by_exchange_or_signed_by_another_key_is_no_subject_token(stack):
    issuer = stack["issuer"]
    token = stack["alice"].access_token()
    minted = exchange(issuer, token, GITHUB).json()["access_token"]
    assert "not exchanged again" in refused(exchange(issuer, minted, GITHUB), 400, "invalid_grant")
    forged = SigningKey("forged", "EC").sign({**claims_of(token), "groups": ["mcp-admins"]})
    refused(exchange(issuer, forged, GITHUB), 400, "invalid_grant")


def test_an_expired_subject_token_is_refused(stack):
    issuer = stack["issuer"]
    token = stack["alice"].access_token()
    time.sleep(max(0, claims_of(token)["exp"] - time.time()) + 1)
    assert "expired" in refused(exchange(issuer, token, GITHUB), 400, "invalid_grant")


def test_a_subject_token_of_a_revoked_sign_in_is_refused(stack):
    issuer = stack["issuer"]
    dave = SignIn(issuer, "dave")
    token = dave.access_token()
    assert exchange(issuer, token, GITHUB).status_code == 200
    revoked = requests.post(f"{issuer}/oauth/revoke", data={"token": dave.refresh_token, "client_id": dave.client_id}, timeout=10)
    assert revoked.status_code == 200
    assert "revoked" in refused(exchange(issuer, token, GITHUB), 400, "invalid_grant")
    assert "revoked" in refused(exchange(issuer, token, JIRA), 400, "invalid_grant")


def test_a_sign_in_without_an_upstream_refresh_token_gets_no_provider_token(stack):
    issuer = stack["offline_issuer"]
    registered = requests.post(f"{issuer}/oauth/register", json={"redirect_uris": [REDIRECT]}, timeout=10).json()
    verifier, challenge = pkce()
    landing = Browser().authorize(f"{issuer}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": registered["client_id"], "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{issuer}/mcp", "scope": "mcp:tools"}),
        "erin", finish_at=REDIRECT)
    token = requests.post(f"{issuer}/oauth/token", data={
        "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": registered["client_id"]}, timeout=15).json()["access_token"]
    assert "kept no refresh token" in refused(exchange(issuer, token, JIRA), 400, "invalid_grant")
    assert exchange(issuer, token, GITHUB).status_code == 200, "our own tokens need no upstream session"
