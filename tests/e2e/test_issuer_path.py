"""An issuer with a path (`http://host:port/auth`): every advertised endpoint, redirect and form
works, whether the proxy in front keeps the path prefix (here: the server reached directly) or
strips it (an Envoy route `/auth/` with `prefix_rewrite: /`)."""

import jwt
import pytest
import requests
import yaml

from authstack import REDIRECT, AuthServer, pkce, query
from browser import Browser
from harness import ENVOY_BIN, Process, free_port, wait_until
from test_federation import server_config, start_idp

USERS = "users:\n- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers]}\n"


def stripping_envoy(log_dir, port, backend_port, admin_port):
    """Envoy routing `/auth/*` to the server without the prefix, the well-known documents as they are."""
    cluster = {"name": "authserver", "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": "authserver", "endpoints": [{"lb_endpoints": [{"endpoint": {
                   "address": {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}}]}]}}
    routes = [{"match": {"prefix": "/auth/"}, "route": {"cluster": "authserver", "prefix_rewrite": "/"}},
              {"match": {"prefix": "/.well-known/"}, "route": {"cluster": "authserver"}}]
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"clusters": [cluster], "listeners": [{
            "name": "main", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "auth", "normalize_path": True, "merge_slashes": True,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}
    path = log_dir / "envoy-issuer-path.yaml"
    path.write_text(yaml.safe_dump(config))
    process = Process("envoy-issuer-path", [str(ENVOY_BIN), "-c", str(path), "--disable-hot-restart",
                                            "--concurrency", "1"], log_dir)

    def ready():
        if not process.alive():
            raise RuntimeError(process.log()[-3000:])
        try:
            return requests.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_until(ready, 60, "envoy /ready", interval=0.1)
    return process


@pytest.fixture(scope="module", params=["prefix-kept", "prefix-stripped"])
def origin(request, log_dir, tmp_path_factory):
    """The public origin (`http://127.0.0.1:<port>`); the issuer is `<origin>/auth`."""
    workdir = tmp_path_factory.mktemp(f"issuer-{request.param}")
    (workdir / "users.yaml").write_text(USERS)
    server_port = free_port()
    public_port = server_port if request.param == "prefix-kept" else free_port()
    public = f"http://127.0.0.1:{public_port}"
    config = {"issuer": f"{public}/auth", "resources": [f"{public}/mcp"], "database": f"sqlite://{workdir}/auth.db?mode=rwc",
              "upstream": {"type": "dev", "users_file": str(workdir / "users.yaml")},
              "registration": {"confidential_clients": True}}
    server = AuthServer(log_dir, workdir, config, server_port, [], name=f"authserver-{request.param}")
    envoy = None
    if request.param == "prefix-stripped":
        envoy = stripping_envoy(log_dir, public_port, server_port, free_port())
    yield public
    if envoy:
        envoy.stop()
    server.stop()


def metadata_of(origin):
    response = requests.get(f"{origin}/.well-known/oauth-authorization-server/auth", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_advertised_endpoint_is_under_the_issuer_path_and_answers(origin):
    metadata = metadata_of(origin)
    issuer = f"{origin}/auth"
    assert metadata["issuer"] == issuer
    oidc = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    assert oidc.status_code == 200 and oidc.json()["issuer"] == issuer
    for name in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint",
                 "introspection_endpoint", "jwks_uri"]:
        assert metadata[name].startswith(f"{issuer}/"), (name, metadata[name])
    assert requests.get(metadata["jwks_uri"], timeout=10).json()["keys"]
    # Each endpoint is there: a bad request is answered by the server, not a 404.
    assert requests.post(metadata["registration_endpoint"], json={}, timeout=10).json()["error"] == "invalid_redirect_uri"
    for name in ["token_endpoint", "revocation_endpoint", "introspection_endpoint"]:
        answer = requests.post(metadata[name], data={}, timeout=10)
        assert answer.status_code in (400, 401), (name, answer.status_code, answer.text)
        assert "error" in answer.json()


def test_registration_the_dev_login_code_flow_and_refresh_work_under_the_issuer_path(origin):
    metadata = metadata_of(origin)
    issuer = metadata["issuer"]
    client = requests.post(metadata["registration_endpoint"], timeout=10, json={
        "client_name": "path client", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"})
    assert client.status_code == 201, client.text
    client = client.json()
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "st",
              "resource": f"{origin}/mcp", "scope": "mcp:tools offline_access"}
    browser = Browser()
    landing = browser.authorize(requests.Request("GET", metadata["authorization_endpoint"], params=params).prepare().url,
                                "alice")
    answer = query(landing)
    assert landing.startswith(REDIRECT) and answer["iss"] == issuer, landing
    assert 'action="/auth/oauth/login"' in browser.pages[0]
    assert 'action="/auth/oauth/consent"' in browser.pages[1]
    auth = (client["client_id"], client["client_secret"])
    tokens = requests.post(metadata["token_endpoint"], auth=auth, timeout=10, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "resource": f"{origin}/mcp"})
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    keys = jwt.PyJWKSet.from_dict(requests.get(metadata["jwks_uri"], timeout=10).json())
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(tokens["access_token"], key.key, algorithms=[key.algorithm_name],
                        audience=f"{origin}/mcp", issuer=issuer)
    assert claims["sub"] == "dev:alice"
    refreshed = requests.post(metadata["token_endpoint"], auth=auth, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    refreshed = refreshed.json()
    active = requests.post(metadata["introspection_endpoint"], auth=auth, timeout=10,
                           data={"token": refreshed["access_token"]}).json()
    assert active["active"] is True and active["iss"] == issuer
    revoked = requests.post(metadata["revocation_endpoint"], auth=auth, timeout=10,
                            data={"token": refreshed["refresh_token"]})
    assert revoked.status_code == 200
    again = requests.post(metadata["token_endpoint"], auth=auth, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("mode", ["prefix-kept", "prefix-stripped"])
def test_a_federated_login_comes_back_to_the_callback_under_the_issuer_path(mode, log_dir, tmp_path):
    server_port, idp_port = free_port(), free_port()
    public_port = server_port if mode == "prefix-kept" else free_port()
    public = f"http://127.0.0.1:{public_port}"
    issuer = f"{public}/auth"
    idp_origin = f"http://127.0.0.1:{idp_port}"
    idp = start_idp(log_dir, "okta", idp_port, [f"{issuer}/oauth/callback"])  # only the callback under the path
    Browser.idp_origins.add(idp_origin)
    config = server_config(tmp_path, issuer, f"{public}/mcp", f"{idp_origin}/oauth2/default", "okta", "gateway-secret")
    server = AuthServer(log_dir, tmp_path, config, server_port, [], name=f"authserver-fed-path-{mode}")
    envoy = stripping_envoy(log_dir, public_port, server_port, free_port()) if mode == "prefix-stripped" else None
    try:
        metadata = metadata_of(public)
        client = requests.post(metadata["registration_endpoint"], json={"redirect_uris": [REDIRECT]}, timeout=10).json()
        verifier, challenge = pkce()
        url = requests.Request("GET", metadata["authorization_endpoint"], params={
            "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
            "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{public}/mcp",
            "scope": "mcp:tools offline_access"}).prepare().url
        landing = Browser().authorize(url, "alice", finish_at=REDIRECT)
        answer = query(landing)
        assert answer.get("iss") == issuer and "code" in answer, landing
        tokens = requests.post(metadata["token_endpoint"], timeout=15, data={
            "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client["client_id"], "resource": f"{public}/mcp"})
        assert tokens.status_code == 200, tokens.text
        assert jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})["groups"] == ["mcp-developers"]
    finally:
        if envoy:
            envoy.stop()
        server.stop()
        idp.stop()
