"""Machine clients without a browser or a shared secret, through Envoy, the filter and our
authorization server: the MCP client-credentials extension with JWT client authentication
(RFC 7523 §2.2, `private_key_jwt`) and workload identity.

- `reporter` is registered by the operator with its public key; the official TypeScript SDK's
  `PrivateKeyJwtProvider` and the Python SDK's `PrivateKeyJWTOAuthProvider` sign its assertions.
- `sales-agent` runs as a workload: its platform's token issuer (a real OpenID provider process,
  npm oidc-provider, minting tokens shaped like a Kubernetes cluster's projected service-account
  tokens with its own key and publishing that key by discovery) signs the token it presents,
  through the TypeScript SDK's `StaticPrivateKeyJwtProvider`. No Kubernetes API server runs here.

The groups the operator gave each client decide with the same Cedar policies as for users."""

import json
import os
import subprocess
import sys
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authstack import AuthServer, write_key
from harness import ROOT, Envoy, free_port
from test_federation import start_idp

CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
POLICIES = [
    '@id("platform-all") permit(principal in THVGroup::"mcp-platform", action, resource);',
    '@id("sales-echo") permit(principal in THVGroup::"mcp-sales", action == Action::"call_tool", resource == Tool::"echo");',
    '@id("no-get-env") forbid(principal, action == Action::"call_tool", resource == Tool::"get-env");',
]
SALES = "system:serviceaccount:agents:sales-agent"


def rsa_key(path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return key, public


@pytest.fixture(scope="module")
def stack(log_dir, everything, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("machines")
    as_port, idp_port = free_port(), free_port()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=as_port, name="envoy-machines",
                  jwks={"path": "/.well-known/jwks.json"}, filter_config={"cedar": {"policies": POLICIES}})
    idp = start_idp(log_dir, "okta", idp_port, ["http://127.0.0.1:8765/callback"])
    platform = f"http://127.0.0.1:{idp_port}/oauth2/default"
    key, public = rsa_key(workdir / "reporter.pem")
    config = {
        "issuer": proxy.origin, "resources": [proxy.resource], "scopes": ["mcp:tools"],
        "database": f"sqlite://{workdir}/auth.db",
        "workload_identity": {"issuers": [{"issuer": platform, "allow_http_issuer": True}]},
        "machine_clients": [
            {"client_id": "reporter", "groups": ["mcp-platform"], "jwks": {"keys": [public]}},
            {"client_id": "sales-agent", "groups": ["mcp-sales"],
             "workload": {"issuer": platform, "subject": SALES}},
        ],
    }
    server = AuthServer(log_dir, workdir, config, as_port, [write_key(workdir / "signing.pem", "ec")],
                        name="authserver-machines")
    proxy.wait_ready()
    yield {"proxy": proxy, "key": key, "key_file": workdir / "reporter.pem", "platform": platform,
           "idp_origin": f"http://127.0.0.1:{idp_port}"}
    server.stop()
    idp.stop()
    proxy.stop()


def workload_token(stack, serviceaccount="sales-agent", audience=None, lifetime=3600):
    response = requests.post(f"{stack['idp_origin']}/admin/workload-token", timeout=10, json={
        "namespace": "agents", "serviceaccount": serviceaccount,
        "audience": audience or stack["proxy"].origin, "lifetime": lifetime})
    assert response.status_code == 200, response.text
    return response.json()["token"]


def run_ts(stack, credential, allowed, forbidden):
    proxy = stack["proxy"]
    client_id = "sales-agent" if credential.startswith("--assertion=") else "reporter"
    result = subprocess.run(["node", str(ROOT / "tests" / "clients" / "ts-private-key-jwt.mjs"), proxy.resource,
                             proxy.origin, client_id, credential, allowed, forbidden],
                            capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_py(stack, credential, allowed, forbidden):
    proxy = stack["proxy"]
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "clients" / "py_private_key_jwt.py"), proxy.resource,
                             proxy.origin, "reporter", credential, allowed, forbidden],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_metadata_advertises_jwt_client_authentication(stack):
    metadata = requests.get(stack["proxy"].url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "RS256" in metadata["token_endpoint_auth_signing_alg_values_supported"]
    assert "client_credentials" in metadata["grant_types_supported"]


def test_the_typescript_sdk_signs_for_its_client_and_calls_tools_as_cedar_decides(stack):
    seen = run_ts(stack, str(stack["key_file"]), "echo", "get-env")
    assert "error" not in seen, seen
    assert seen["claims"]["sub"] == "reporter" and seen["claims"]["groups"] == ["mcp-platform"]
    assert seen["allowed"]["ok"] and "hi" in seen["allowed"]["text"], seen
    assert not seen["forbidden"]["ok"], seen
    assert "echo" in seen["tools"] and "get-env" not in seen["tools"], "the list is cut as for a user"
    assert not seen["refreshToken"], "no user, no refresh token"


def test_the_python_sdk_signs_for_its_client_and_calls_tools_as_cedar_decides(stack):
    seen = run_py(stack, str(stack["key_file"]), "echo", "get-env")
    assert "error" not in seen, seen
    assert seen["claims"]["client_id"] == "reporter"
    assert seen["allowed"]["ok"] and not seen["forbidden"]["ok"], seen


def test_a_workload_authenticates_with_its_platform_token_and_gets_its_own_rights(stack):
    seen = run_ts(stack, "--assertion=" + workload_token(stack), "echo", "get-sum")
    assert "error" not in seen, seen
    assert seen["claims"]["sub"] == "sales-agent" and seen["claims"]["groups"] == ["mcp-sales"]
    assert seen["allowed"]["ok"], seen
    assert not seen["forbidden"]["ok"], "mcp-sales may call echo only"
    assert seen["tools"] == ["echo"], seen["tools"]


def token_request(stack, assertion, **extra):
    return requests.post(stack["proxy"].url("/oauth/token"), timeout=10, data={
        "grant_type": "client_credentials", "client_assertion_type": CLIENT_ASSERTION,
        "client_assertion": assertion, **extra})


def signed(stack, headers=None, **claims):
    now = int(time.time())
    body = {"iss": "reporter", "sub": "reporter", "aud": stack["proxy"].origin, "iat": now, "exp": now + 120,
            "jti": str(uuid.uuid4())}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, stack["key"], algorithm="RS256",
                      headers=headers)


def refused(response, says):
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client"), response.text
    assert says in response.json()["error_description"], response.text


def test_replayed_expired_misaddressed_and_unknown_assertions_are_refused(stack):
    once = signed(stack)
    assert token_request(stack, once).status_code == 200
    refused(token_request(stack, once), "already used")
    refused(token_request(stack, signed(stack, exp=int(time.time()) - 120)), "expired")
    refused(token_request(stack, signed(stack, aud="https://other-as.example.com")), "`aud`")
    refused(token_request(stack, signed(stack, iss="stranger", sub="stranger")), "a registered machine client's key")
    refused(token_request(stack, signed(stack, sub="sales-agent")), "must be its `iss`")
    refused(token_request(stack, signed(stack, headers={"typ": "oauth-id-jag+jwt"})), "typ")
    other_key, _ = rsa_key(stack["key_file"].with_name("other.pem"))
    forged = jwt.encode({"iss": "reporter", "sub": "reporter", "aud": stack["proxy"].origin,
                         "exp": int(time.time()) + 60, "jti": str(uuid.uuid4())}, other_key, algorithm="RS256")
    refused(token_request(stack, forged), "a registered machine client's key")


def test_workload_tokens_of_unbound_accounts_or_for_other_audiences_are_refused(stack):
    refused(token_request(stack, workload_token(stack, serviceaccount="intruder")), "a registered machine client's key")
    refused(token_request(stack, workload_token(stack, audience="https://kubernetes.default.svc.cluster.local")),
            "`aud`")
    refused(token_request(stack, workload_token(stack, lifetime=2 * 3600)), "lives")
    good = workload_token(stack)
    mismatch = token_request(stack, good, client_id="reporter")
    refused(mismatch, "client_id is not the client")
