"""The authorization server binary over HTTP, and the filter trusting it through its JWKS."""

import json
import subprocess

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import ROOT, Envoy, McpSession, Process, free_port, port_open, wait_until

AUTHSERVER = ROOT / "target" / "debug" / "mcp-mesh-authserver"
M2M_POLICIES = [
    'permit(principal, action == Action::"call_tool", resource == Tool::"echo") when { principal.claim_scope == "mcp:tools" };',
]


def write_key(path, kind):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


class AuthServer:
    def __init__(self, log_dir, workdir, issuer, resource, port, keys, name="authserver"):
        self.url = f"http://127.0.0.1:{port}"
        config = workdir / "authserver.yaml"
        config.write_text(json.dumps({"issuer": issuer, "resources": [resource], "database": f"sqlite://{workdir}/auth.db",
                                      "scopes": ["mcp:tools", "offline_access"],
                                      "registration": {"confidential_clients": True}}))
        args = [str(AUTHSERVER), "--config", str(config), "--listen", f"127.0.0.1:{port}"]
        for key in keys:
            args += ["--signing-key", str(key)]
        self.process = Process(name, args, log_dir)
        wait_until(lambda: port_open(port) or (not self.process.alive() and self._died()), 30, "authserver")

    def _died(self):
        raise RuntimeError(f"authserver exited:\n{self.process.log()}")

    def stop(self):
        self.process.stop()


@pytest.fixture(scope="module")
def stack(log_dir, everything, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authserver")
    port = free_port()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=port, name="envoy-authserver",
                  jwks={"path": "/.well-known/jwks.json", "refresh_seconds": 2, "unknown_kid_cooldown_seconds": 1},
                  filter_config={"cedar": {"policies": M2M_POLICIES}})
    key_a = write_key(workdir / "a.pem", "ec")
    server = AuthServer(log_dir, workdir, proxy.origin, proxy.resource, port, [key_a])
    proxy.wait_ready()
    state = {"proxy": proxy, "server": server, "port": port, "workdir": workdir, "keys": [key_a], "log_dir": log_dir}
    yield state
    state["server"].stop()
    proxy.stop()


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
