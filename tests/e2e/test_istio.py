"""What ships for Istio: the OCI image of the filter, the manifests, and the WasmPlugin's
pluginConfig running in the real Envoy with clusters named as Istio names them."""

import hashlib
import json
import subprocess
import tarfile
from urllib.parse import urlencode

import jsonschema
import pytest
import requests
import yaml

from authstack import REDIRECT, AuthServer, pkce, query, write_key
from browser import Browser
from harness import ENVOY_BIN, ROOT, WASM, McpSession, Process, free_port, wait_until

LAYER_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
SHA256 = {"type": "string", "pattern": "^[a-f0-9]{64}$"}
META = {"type": "object", "required": ["name", "namespace"], "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}}}

# The parts of each resource's schema these manifests rely on (Istio 1.2x CRDs, Kubernetes 1.3x).
SCHEMAS = {
    "WasmPlugin": {"type": "object", "required": ["url", "sha256", "phase", "failStrategy", "pluginConfig", "imagePullPolicy"],
                   "properties": {"url": {"type": "string", "pattern": "^oci://"}, "sha256": SHA256,
                                  "phase": {"enum": ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"]},
                                  "priority": {"type": "integer"}, "failStrategy": {"enum": ["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]},
                                  "imagePullPolicy": {"enum": ["IfNotPresent", "Always", "UNSPECIFIED_POLICY"]},
                                  "type": {"enum": ["HTTP", "NETWORK", "UNSPECIFIED_PLUGIN_TYPE"]},
                                  "pluginConfig": {"type": "object", "required": ["resource", "issuers"]},
                                  "selector": {"type": "object", "required": ["matchLabels"]},
                                  "targetRefs": {"type": "array", "items": {"type": "object", "required": ["kind", "name"]}}},
                   "oneOf": [{"required": ["selector"]}, {"required": ["targetRefs"]}]},
    "TrafficExtension": {"type": "object", "required": ["phase", "wasm"],
                         "properties": {"phase": {"enum": ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"]},
                                        "wasm": {"type": "object", "required": ["url", "sha256", "pluginConfig"],
                                                 "properties": {"url": {"type": "string", "pattern": "^oci://"}, "sha256": SHA256,
                                                                "failStrategy": {"enum": ["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]},
                                                                "pluginConfig": {"type": "object", "required": ["resource", "issuers"]}}}},
                         "oneOf": [{"required": ["selector"]}, {"required": ["targetRefs"]}]},
    "Gateway": {"type": "object", "required": ["selector", "servers"],
                "properties": {"servers": {"type": "array", "items": {"type": "object", "required": ["port", "hosts"]}}}},
    "VirtualService": {"type": "object", "required": ["hosts", "http"],
                       "properties": {"http": {"type": "array", "items": {"type": "object", "required": ["route"]}}}},
    "Deployment": {"type": "object", "required": ["selector", "template"], "properties": {"template": {"type": "object", "properties": {"spec": {
        "type": "object", "required": ["containers", "securityContext"],
        "properties": {"securityContext": {"type": "object", "required": ["runAsNonRoot"], "properties": {"runAsNonRoot": {"const": True}}},
                       "containers": {"type": "array", "items": {"type": "object",
                                      "required": ["image", "readinessProbe", "livenessProbe", "resources", "securityContext"]}}}}}}}},
    "Service": {"type": "object", "required": ["selector", "ports"]},
    "PodDisruptionBudget": {"type": "object", "required": ["selector"], "oneOf": [{"required": ["minAvailable"]}, {"required": ["maxUnavailable"]}]},
    "NetworkPolicy": {"type": "object", "required": ["podSelector", "policyTypes"]},
    "PersistentVolumeClaim": {"type": "object", "required": ["accessModes", "resources"]},
}
API_VERSIONS = {"WasmPlugin": "extensions.istio.io/v1alpha1", "TrafficExtension": "extensions.istio.io/v1alpha1", "Gateway": "networking.istio.io/v1", "VirtualService": "networking.istio.io/v1",
                "Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1", "ServiceAccount": "v1",
                "PersistentVolumeClaim": "v1", "PodDisruptionBudget": "policy/v1", "NetworkPolicy": "networking.k8s.io/v1",
                "RequestAuthentication": "security.istio.io/v1"}


@pytest.fixture(scope="module")
def oci(tmp_path_factory):
    out = tmp_path_factory.mktemp("oci") / "oci"
    result = subprocess.run(["python3", str(ROOT / "scripts" / "oci.py"), str(WASM), str(out), "0.1.0"],
                            capture_output=True, text=True, check=True)
    return {"out": out, "stdout": result.stdout, "istio": out.parent / "istio"}


def test_the_oci_layer_is_the_module_and_the_manifests_pin_the_image_digest(oci):
    layout = oci["out"] / "layout"
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].removeprefix("sha256:")
    manifest_bytes = (layout / "blobs" / "sha256" / digest).read_bytes()
    assert hashlib.sha256(manifest_bytes).hexdigest() == digest
    manifest = json.loads(manifest_bytes)
    [layer] = manifest["layers"]
    assert layer["mediaType"] == LAYER_TYPE
    assert (layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).read_bytes() == WASM.read_bytes()
    with tarfile.open(oci["out"] / "mcp-mesh-auth-oci.tar") as tar:
        assert tar.extractfile(f"blobs/sha256/{digest}").read() == manifest_bytes
    for path in oci["istio"].glob("*.yaml"):
        text = path.read_text()
        assert "${WASM_SHA256}" not in text, path.name
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "WasmPlugin":
                assert doc["spec"]["sha256"] == digest, path.name
            if doc and doc["kind"] == "TrafficExtension":
                assert doc["spec"]["wasm"]["sha256"] == digest, path.name
    assert f"sha256:{digest}" in oci["stdout"]


def test_every_manifest_parses_and_carries_what_its_kind_requires(oci):
    kinds = set()
    for path in sorted(oci["istio"].glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kind = doc["kind"]
            kinds.add(kind)
            assert doc["apiVersion"] == API_VERSIONS[kind], f"{path.name}: {kind}"
            jsonschema.validate(doc["metadata"], META)
            if kind in SCHEMAS:
                jsonschema.validate(doc["spec"], SCHEMAS[kind])
    assert {"WasmPlugin", "TrafficExtension", "Deployment", "Service", "Secret", "PodDisruptionBudget", "NetworkPolicy",
            "VirtualService"} <= kinds


def test_each_plugin_config_reaches_the_authorization_server_as_istio_names_it(oci):
    for path in sorted(oci["istio"].glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] in ("WasmPlugin", "TrafficExtension"):
                config = doc["spec"].get("pluginConfig") or doc["spec"]["wasm"]["pluginConfig"]
                if "jwt_authn" in config:
                    # Istio's jwt_authn verifies: the filter reads the payload it stores under the issuer.
                    assert config["jwt_authn"]["payload_in_metadata"] == config["issuers"][0]["issuer"], path.name
                    assert "jwks" not in config["issuers"][0] and doc["spec"]["phase"] == "AUTHZ", path.name
                    continue
                assert config["issuers"][0]["jwks"]["cluster"].startswith("outbound|9000||"), path.name
                assert "headers_stop_iteration" not in config, "Istio cannot set allow_on_headers_stop_iteration"


def istio_envoy(tmp_path, plugin_config, authserver_port, backend_port, log_dir):
    """An Envoy shaped like an Istio sidecar's inbound chain: the plugin config as is, the JWKS
    cluster under its Istio name."""
    jwks_cluster = plugin_config["issuers"][0]["jwks"]["cluster"]
    port, admin = free_port(), free_port()

    def cluster(name, target):
        return {"name": name, "type": "STATIC", "connect_timeout": "2s", "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": target}}}}]}]}}
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{"name": "virtualInbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "inbound_0.0.0.0_8080",
                "route_config": {"virtual_hosts": [{"name": "inbound|http|8080", "domains": ["*"],
                                                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "inbound|8080||", "timeout": "0s"}}]}]},
                "http_filters": [
                    {"name": "istio.mcp-system.mcp-mesh-auth", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {"name": "mcp-system.mcp-mesh-auth", "root_id": "mcp-system.mcp-mesh-auth", "fail_open": False,
                                   "vm_config": {"vm_id": "mcp-system.mcp-mesh-auth", "runtime": "envoy.wasm.runtime.v8",
                                                 "code": {"local": {"filename": str(WASM)}}},
                                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                     "value": json.dumps(plugin_config)}}}},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
            "clusters": [cluster(jwks_cluster, authserver_port), cluster("inbound|8080||", backend_port)]},
    }
    path = tmp_path / "istio-envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = Process("envoy-istio", [str(ENVOY_BIN), "-c", str(path), "--disable-hot-restart", "--concurrency", "1"], log_dir)

    def ready():
        if not proc.alive():
            raise RuntimeError(proc.log()[-3000:])
        try:
            return requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_until(ready, 90, "istio-shaped envoy", interval=0.2)
    return proc, f"http://127.0.0.1:{port}/mcp"


def test_the_sidecar_wasmplugin_config_enforces_policies_in_the_real_envoy(oci, tmp_path, log_dir, everything):
    [plugin] = [d for d in yaml.safe_load_all((oci["istio"] / "wasmplugin-sidecar.yaml").read_text())]
    config = plugin["spec"]["pluginConfig"]
    as_port = free_port()
    users = tmp_path / "users.yaml"
    users.write_text("users:\n- {username: alice, password: pw, groups: [mcp-developers]}\n- {username: carol, password: pw, groups: []}\n")
    server = AuthServer(log_dir, tmp_path, {
        "issuer": config["issuers"][0]["issuer"], "resources": [config["resource"]], "database": f"sqlite://{tmp_path}/auth.db",
        "upstream": {"type": "dev", "users_file": str(users)}}, as_port, [write_key(tmp_path / "k.pem", "ec")], name="authserver-istio")
    envoy, mcp_url = istio_envoy(tmp_path, config, as_port, everything, log_dir)
    try:
        base = f"http://127.0.0.1:{as_port}"

        def token(user):
            client_id = requests.post(f"{base}/oauth/register", json={"redirect_uris": [REDIRECT]}, timeout=10).json()["client_id"]
            verifier, challenge = pkce()
            url = f"{base}/oauth/authorize?" + urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                                                           "code_challenge": challenge, "code_challenge_method": "S256",
                                                           "resource": config["resource"], "scope": "mcp:tools"})
            code = query(Browser().authorize(url, user, "pw"))["code"]
            return requests.post(f"{base}/oauth/token", data={"grant_type": "authorization_code", "code": code, "client_id": client_id,
                                                              "redirect_uri": REDIRECT, "code_verifier": verifier}, timeout=10).json()["access_token"]

        alice = McpSession(mcp_url, token("alice")).open()
        assert "echo" in [t["name"] for t in alice.request("tools/list")["result"]["tools"]]
        carol = McpSession(mcp_url, token("carol")).open()
        assert carol.request("tools/list")["result"]["tools"] == []
        denied = carol.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "x"}}})
        assert denied.status_code == 403
        assert requests.post(mcp_url, timeout=10).status_code == 401
    finally:
        envoy.stop()
        server.stop()
