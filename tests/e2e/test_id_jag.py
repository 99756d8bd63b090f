"""Enterprise-managed authorization (Okta cross-app access, MCP's ID-JAG profile): the official
Python SDK's `IdentityAssertionOAuthProvider` presents an ID-JAG to our authorization server
(RFC 7523 jwt-bearer grant) and calls tools through Envoy and the filter as Cedar decides.

The enterprise IdP is a real OpenID provider (npm oidc-provider, shaped like Okta) that mints the
ID-JAGs with its own signing key by RFC 8693 token exchange of the user's ID token; the user's
single sign-on to the client is its own authorization code flow. A second provider process is an
issuer our server does not trust."""

import asyncio
import threading
from urllib.parse import urlencode

import httpx2
import pytest
import requests
from mcp import Client
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from authstack import REDIRECT, AuthServer, claims_of, pkce, query, write_key
from browser import Browser
from harness import ROOT, Envoy, Process, free_port, port_open, wait_until

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
POLICIES = [
    'permit(principal in THVGroup::"mcp-developers", action, resource);',
    'forbid(principal, action == Action::"call_tool", resource == Tool::"get-env");',
]
OTHER_AS = "https://other-as.example.com"


class Idp:
    """An Okta-shaped oidc-provider with cross-app access; `mcp-agent` is the client users sign in
    to with it (the MCP client's own SSO)."""

    def __init__(self, log_dir, name):
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.origin}/oauth2/default"
        env = {"PORT": str(self.port), "PROFILE": "okta", "REDIRECT_URIS": REDIRECT}
        self.process = Process(name, ["node", str(ROOT / "tests" / "idp" / "server.mjs")], log_dir, env=env, cwd=ROOT / "tests")
        Browser.idp_origins.add(self.origin)

    def wait(self):
        def up():
            if not self.process.alive():
                raise RuntimeError(f"{self.process.name} exited:\n{self.process.log()}")
            return port_open(self.port)
        wait_until(up, 30, self.process.name)
        return self

    def admin(self, **body):
        assert requests.post(f"{self.origin}/admin/xaa", json=body, timeout=10).status_code == 204

    def sign_in(self, user):
        """The user's single sign-on to the MCP client: an ID token issued to `mcp-agent`."""
        verifier, challenge = pkce()
        url = f"{self.issuer}/auth?" + urlencode({
            "client_id": "mcp-agent", "response_type": "code", "scope": "openid profile email groups",
            "redirect_uri": REDIRECT, "code_challenge": challenge, "code_challenge_method": "S256",
            "state": "sso", "nonce": "sso"})
        landing = Browser().authorize(url, user, finish_at=REDIRECT)
        response = requests.post(f"{self.issuer}/token", auth=("mcp-agent", "agent-secret"), timeout=10, data={
            "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier})
        assert response.status_code == 200, response.text
        return response.json()["id_token"]

    def id_jag(self, id_token, audience, resource, scope="mcp:tools mcp:admin"):
        """RFC 8693 token exchange at the IdP: the ID token for an ID-JAG."""
        response = requests.post(f"{self.issuer}/token", auth=("mcp-agent", "agent-secret"), timeout=10, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "audience": audience, "resource": resource, "scope": scope,
            "subject_token": id_token, "subject_token_type": "urn:ietf:params:oauth:token-type:id_token"})
        assert response.status_code == 200, response.text
        assert response.json()["issued_token_type"] == "urn:ietf:params:oauth:token-type:id-jag"
        return response.json()["access_token"]

    def stop(self):
        self.process.stop()


@pytest.fixture(scope="module")
def stack(log_dir, everything, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("id-jag")
    idp, stranger = Idp(log_dir, "idp-xaa"), Idp(log_dir, "idp-xaa-untrusted")
    as_port = free_port()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=as_port, name="envoy-id-jag",
                  jwks={"path": "/.well-known/jwks.json"}, filter_config={"cedar": {"policies": POLICIES}})
    config = {
        "issuer": proxy.origin, "resources": [proxy.resource], "database": f"sqlite://{workdir}/auth.db",
        "scopes": ["mcp:tools", "mcp:admin", "offline_access"], "groups": {"prefix": "mcp-"},
        "registration": {"confidential_clients": True},
        "enterprise": {"issuers": [{"issuer": idp.issuer, "allow_http_issuer": True, "groups_claim": "groups"}]},
    }
    server = AuthServer(log_dir, workdir, config, as_port, [write_key(workdir / "k.pem", "ec")], name="authserver-id-jag")
    idp.wait()
    stranger.wait()
    proxy.wait_ready()
    # The MCP client, registered at our server as a confidential client for the grant; the IdP's
    # administrator links it (as `mcp-agent` there) to our server, and the untrusted IdP too.
    registered = requests.post(f"{proxy.origin}/oauth/register", timeout=10, json={
        "client_name": "Enterprise agent", "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "client_secret_post", "grant_types": [JWT_BEARER]})
    assert registered.status_code == 201, registered.text
    client = registered.json()
    for provider, audience in ((idp, proxy.origin), (idp, OTHER_AS), (stranger, proxy.origin)):
        provider.admin(client="mcp-agent", audience=audience, as_client_id=client["client_id"])
    yield {"proxy": proxy, "idp": idp, "stranger": stranger, "client": client, "server": server}
    server.stop()
    proxy.stop()
    stranger.stop()
    idp.stop()


def exchange(stack, assertion, **extra):
    client = stack["client"]
    return requests.post(stack["proxy"].url("/oauth/token"), timeout=10, data={
        "grant_type": JWT_BEARER, "assertion": assertion, "client_id": client["client_id"],
        "client_secret": client["client_secret"], **extra})


def run_sdk(stack, user, allowed, forbidden):
    """The Python SDK's ID-JAG provider against our stack: it discovers our server from its issuer,
    asks its assertion provider (the IdP's token exchange) for an ID-JAG, gets a token, calls tools."""
    proxy, idp, client = stack["proxy"], stack["idp"], stack["client"]
    id_token = idp.sign_in(user)
    asked = []

    async def fetch_id_jag(audience, resource):
        asked.append((audience, resource))
        return await asyncio.to_thread(idp.id_jag, id_token, audience, resource)

    class Storage:
        tokens = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

    storage = Storage()
    auth = IdentityAssertionOAuthProvider(
        server_url=proxy.resource, storage=storage, client_id=client["client_id"],
        client_secret=client["client_secret"], issuer=proxy.origin, assertion_provider=fetch_id_jag,
        scope="mcp:tools")

    async def main():
        seen = {}
        async with httpx2.AsyncClient(auth=auth) as http:
            async with Client(streamable_http_client(proxy.resource, http_client=http)) as mcp:
                seen["tools"] = sorted(tool.name for tool in (await mcp.list_tools()).tools)
                if allowed:
                    result = await mcp.call_tool(allowed, {"message": "hi"})
                    seen["allowed"] = {"ok": not result.is_error, "text": result.content[0].text}
                try:
                    result = await mcp.call_tool(forbidden, {"message": "hi"})
                    seen["forbidden"] = {"ok": not result.is_error}
                except Exception as err:  # the filter's 403 surfaces as an error
                    seen["forbidden"] = {"ok": False, "error": str(err)}
        return seen

    seen = asyncio.run(main())
    seen["asked"] = asked
    seen["token"] = claims_of(storage.tokens.access_token)
    seen["refresh_token"] = storage.tokens.refresh_token
    return seen


def test_the_metadata_advertises_the_grant_and_the_id_jag_profile(stack):
    metadata = requests.get(stack["proxy"].url("/.well-known/oauth-authorization-server"), timeout=5).json()
    assert JWT_BEARER in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE]
    assert stack["idp"].issuer not in str(metadata), "which IdPs are trusted is not published"


def test_the_python_sdk_provider_exchanges_an_id_jag_and_calls_tools_as_cedar_decides(stack):
    proxy = stack["proxy"]
    seen = run_sdk(stack, "alice", "echo", "get-env")
    assert seen["asked"] == [(proxy.origin, proxy.resource)], "the ID-JAG is asked for our issuer and resource"
    assert "echo" in seen["tools"] and "get-env" not in seen["tools"]
    assert seen["allowed"] == {"ok": True, "text": "Echo: hi"}, seen
    assert seen["forbidden"]["ok"] is False, seen
    token = seen["token"]
    assert (token["sub"], token["aud"], token["client_id"]) == ("alice", proxy.resource, stack["client"]["client_id"])
    assert token["groups"] == ["mcp-developers"], "mapped like a federated login: Everyone and hr-payroll stay out"
    assert token["scope"] == "mcp:tools"
    assert seen["refresh_token"] is None, "no refresh token: a fresh ID-JAG replaces it"


def test_a_user_outside_the_policy_groups_is_refused_every_tool(stack):
    seen = run_sdk(stack, "carol", None, "echo")
    assert seen["tools"] == []
    assert seen["forbidden"]["ok"] is False, seen
    assert "groups" not in seen["token"]


def test_the_scope_is_what_the_request_and_the_id_jag_share(stack):
    proxy, idp = stack["proxy"], stack["idp"]
    assertion = idp.id_jag(idp.sign_in("bob"), proxy.origin, proxy.resource, scope="mcp:tools mcp:admin")
    assert claims_of(assertion)["scope"] == "mcp:tools mcp:admin"
    response = exchange(stack, assertion, scope="mcp:admin offline_access", resource=proxy.resource)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "mcp:admin" and "refresh_token" not in response.json()
    assert claims_of(response.json()["access_token"])["groups"] == ["mcp-platform"]


def test_replayed_expired_wrong_audience_and_unknown_issuer_assertions_are_refused(stack):
    proxy, idp, stranger = stack["proxy"], stack["idp"], stack["stranger"]
    id_token = idp.sign_in("alice")

    def refused(assertion, why):
        response = exchange(stack, assertion)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant", response.text
        assert why in response.json()["error_description"], response.text

    assertion = idp.id_jag(id_token, proxy.origin, proxy.resource)
    assert exchange(stack, assertion).status_code == 200
    refused(assertion, "already used")

    idp.admin(clock_offset=-3600)
    try:
        refused(idp.id_jag(id_token, proxy.origin, proxy.resource), "expired")
    finally:
        idp.admin(clock_offset=0)

    refused(idp.id_jag(id_token, OTHER_AS, proxy.resource), f"it must be this authorization server's issuer, {proxy.origin}")
    refused(stranger.id_jag(stranger.sign_in("alice"), proxy.origin, proxy.resource), "not a trusted enterprise identity provider")

    # The IdP's own ID token is no grant (explicit typing).
    refused(id_token, "oauth-id-jag+jwt")
    wrong_resource = idp.id_jag(id_token, proxy.origin, "https://elsewhere.example.com/mcp")
    response = exchange(stack, wrong_resource)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_target"), response.text
    assert "refused" in stack["server"].process.log() and assertion not in stack["server"].process.log(), "no assertion in the log"


def test_a_client_not_authenticated_gets_nothing_for_a_good_assertion(stack):
    proxy, idp = stack["proxy"], stack["idp"]
    assertion = idp.id_jag(idp.sign_in("alice"), proxy.origin, proxy.resource)
    response = requests.post(proxy.url("/oauth/token"), timeout=10, data={
        "grant_type": JWT_BEARER, "assertion": assertion, "client_id": stack["client"]["client_id"]})
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert exchange(stack, assertion).status_code == 200, "the refusal did not spend it"


def test_an_id_jag_sent_to_two_replicas_at_once_is_exchanged_once(stack, log_dir, database, tmp_path_factory):
    """The `jti` record is in the shared PostgreSQL: one replica exchanges, the other refuses."""
    idp = stack["idp"]
    workdir = tmp_path_factory.mktemp("id-jag-replicas")
    key = write_key(workdir / "signing.pem", "ec")
    ports = free_port(), free_port()
    issuer = f"http://127.0.0.1:{ports[0]}"
    resource = "https://mcp.example.com/mcp"
    config = {"issuer": issuer, "resources": [resource], "database": database,
              "registration": {"confidential_clients": True},
              "enterprise": {"issuers": [{"issuer": idp.issuer, "allow_http_issuer": True}]}}
    replicas = [AuthServer(log_dir, workdir, config, port, [key], name=f"authserver-id-jag-{n}")
                for n, port in enumerate(ports)]
    try:
        client = requests.post(f"{replicas[0].url}/oauth/register", timeout=10, json={
            "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": [JWT_BEARER]}).json()
        idp.admin(client="mcp-agent", audience=issuer, as_client_id=client["client_id"])
        id_token = idp.sign_in("alice")
        for _ in range(3):
            assertion = idp.id_jag(id_token, issuer, resource)
            answers, start = [], threading.Barrier(2)

            def present(replica):
                start.wait()
                answers.append(requests.post(f"{replica.url}/oauth/token", timeout=10,
                                             auth=(client["client_id"], client["client_secret"]),
                                             data={"grant_type": JWT_BEARER, "assertion": assertion}))
            threads = [threading.Thread(target=present, args=(replica,)) for replica in replicas]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(answer.status_code for answer in answers) == [200, 400], [a.text for a in answers]
            refused = next(answer for answer in answers if answer.status_code == 400)
            assert "already used" in refused.json()["error_description"]
    finally:
        for replica in replicas:
            replica.stop()
