"""The Helm chart (deploy/helm/mcp-mesh-auth), rendered by Helm's own engine (PyPI
helm-python-sdk: Helm v4's Go SDK; an install with a client-side dry run is what `helm template`
runs), every object checked against the upstream Kubernetes and Istio schemas, and what it renders
put to work without a cluster: the authorization server binary started on the ConfigMap's
configuration with the files laid out as the Deployment mounts them, and each team's filter
configuration parsed and decided by the filter crate's own code (the policy CLI)."""

import base64
import copy
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import helm_python as helm
import kubernetes_validate
import pytest
import requests
import yaml

from authstack import AUTHSERVER, write_key
from harness import ROOT, WASM, Process, free_port, wait_until
from test_federation import PROFILES, start_idp

CHART = ROOT / "deploy" / "helm" / "mcp-mesh-auth"
CHECKER = ROOT / "tests" / "chart" / "check-manifests.mjs"
CLI = ROOT / "target" / "debug" / "mcp-mesh-auth"
RELEASE, NAMESPACE = "mcp-mesh-auth", "mcp-system"
GATEWAY = "cluster.local/ns/istio-system/sa/istio-ingressgateway"
AUTHSERVER_DIGEST = "sha256:" + "5e" * 32
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion): every field must exist there.
KUBE_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"].lstrip(">=").split("-")[0]


def merged(*layers):
    """Values files layered as `helm -f a -f b --set ...` layers them (maps merge, the rest is replaced)."""
    out = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def example(*names):
    return [yaml.safe_load((CHART / f"values-{name}.yaml").read_text()) for name in names]


def render_text(values, source=CHART):
    with helm.Chart.load(source) as chart, helm.Config(storage_driver="memory", namespace=NAMESPACE) as config:
        return config.install(chart, RELEASE, values, dry_run="client", namespace=NAMESPACE)["manifest"]


def render(values):
    return [doc for doc in yaml.safe_load_all(render_text(values)) if doc]


def refusal(values, source=CHART):
    with pytest.raises(helm.HelmError) as refused:
        render_text(values, source)
    return str(refused.value)


def only(docs, kind):
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def pod(docs):
    return only(docs, "Deployment")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def filter_digest(tmp_path_factory):
    """The digest `make oci` gives the real module."""
    out = tmp_path_factory.mktemp("chart-oci") / "oci"
    subprocess.run(["python3", str(ROOT / "scripts" / "oci.py"), str(WASM), str(out), "0.1.0"], capture_output=True, check=True)
    index = json.loads((out / "layout" / "index.json").read_text())
    return index["manifests"][0]["digest"].removeprefix("sha256:")


@pytest.fixture(scope="module")
def pinned(filter_digest):
    """What an operator adds on the command line: the digests `make oci` and `make image` print."""
    return {"filter": {"image": {"sha256": filter_digest}}, "authserver": {"image": {"digest": AUTHSERVER_DIGEST}}}


@pytest.fixture(scope="module")
def sqlite(pinned):
    return render(merged(*example("sqlite"), pinned))


@pytest.fixture(scope="module")
def postgres(pinned):
    return render(merged(*example("postgres"), pinned))


@pytest.fixture(scope="module")
def two_teams(pinned):
    return render(merged(*example("sqlite", "two-teams"), pinned))


def check_manifests(tmp_path, docs):
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run(["node", str(CHECKER), str(path)], capture_output=True, text=True, cwd=ROOT / "tests")


def strict_kubernetes_problems(docs):
    """Unknown fields too (the upstream OpenAPI schemas allow them; the API server's strict field
    validation refuses them): kubernetes-validate's strict schemas, on the oldest Kubernetes the
    chart supports."""
    problems = []
    for doc in docs:
        if not doc["apiVersion"].split("/")[0].endswith(".istio.io"):
            try:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {err.json_path}: {err.message}")
    return problems


@pytest.mark.parametrize("layers", [("sqlite",), ("postgres",), ("sqlite", "two-teams"), ("postgres", "two-teams")])
def test_every_rendered_object_passes_the_kubernetes_and_istio_schemas(layers, pinned, tmp_path):
    docs = render(merged(*example(*layers), pinned))
    checked = check_manifests(tmp_path, docs)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip().endswith(f"ok: {len(docs)} objects valid")
    assert strict_kubernetes_problems(docs) == []
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "WasmPlugin", "AuthorizationPolicy", "PeerAuthentication"} <= kinds
    assert "Secret" not in kinds, "the chart never renders secret material"


def test_helm_lint_finds_nothing_in_the_chart(pinned):
    report = helm.lint(CHART, merged(*example("sqlite", "two-teams"), pinned), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_the_packaged_chart_renders_and_refuses_as_the_directory_does(pinned, tmp_path):
    """`make chart`'s package: what `helm push` sends and `helm install` takes."""
    archive = helm.package(CHART, destination=tmp_path)
    assert Path(archive).name == "mcp-mesh-auth-0.1.0.tgz"
    values = merged(*example("postgres"), pinned)
    assert render_text(values, archive) == render_text(values)
    values["authserver"]["database"]["type"] = "sqlite"
    assert "at '/authserver/replicas': maximum: got 3, want 1" in refusal(values, archive)


def test_the_checkers_refuse_broken_objects(sqlite, tmp_path):
    docs = copy.deepcopy(sqlite)
    container = pod(docs)["containers"][0]
    container["ports"][0]["containerPort"] = "nine-thousand"
    only(docs, "WasmPlugin")["spec"]["failStrategy"] = "FAIL_SOMETIMES"
    only(docs, "AuthorizationPolicy")["spec"]["action"] = "PERMIT"
    docs.append({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "unknown"}})
    checked = check_manifests(tmp_path, docs)
    assert checked.returncode == 1
    out = checked.stdout
    assert "Deployment/mcp-mesh-auth-authserver: /spec/template/spec/containers/0/ports/0/containerPort must be integer" in out
    assert "WasmPlugin/mcp-mesh-auth-engineering-tools: /spec/failStrategy must be equal to one of the allowed values" in out
    assert "AuthorizationPolicy/mcp-mesh-auth-engineering-tools-gateway-only: /spec/action must be equal to one of the allowed values" in out
    assert 'no schema for apiVersion "example.com/v1" kind "Widget"' in out
    assert out.strip().endswith(f"4 violations in {len(docs)} objects"), out
    misspelt = copy.deepcopy(sqlite)
    pod(misspelt)["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # the API server refuses it
    assert check_manifests(tmp_path, misspelt).returncode == 0, "the upstream OpenAPI schemas allow unknown fields"
    [problem] = strict_kubernetes_problems(misspelt)
    assert "'readOnlyRootFileSystem' was unexpected" in problem and problem.startswith("Deployment/"), problem


def test_sqlite_runs_one_replica_replaced_not_rolled_on_a_volume_where_the_database_points(sqlite):
    deployment = only(sqlite, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    config = yaml.safe_load(only(sqlite, "ConfigMap")["data"]["authserver.yaml"])
    database = Path(urlparse(config["database"]).path)
    assert config["database"].startswith("sqlite://") and database.name == "auth.db"
    [mount] = [m for m in pod(sqlite)["containers"][0]["volumeMounts"] if Path(m["mountPath"]) == database.parent]
    assert not mount.get("readOnly")
    [volume] = [v for v in pod(sqlite)["volumes"] if v["name"] == mount["name"]]
    claim = only(sqlite, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "helm uninstall must not delete the database"
    assert "env" not in pod(sqlite)["containers"][0]
    # One replica: a budget could only block drains.
    assert [d for d in sqlite if d["kind"] == "PodDisruptionBudget"] == []


def test_postgres_runs_the_replicas_asked_with_a_budget_and_no_volume(postgres):
    deployment = only(postgres, "Deployment")
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert [d for d in postgres if d["kind"] == "PersistentVolumeClaim"] == []
    assert not any("persistentVolumeClaim" in v for v in pod(postgres)["volumes"])
    [env] = pod(postgres)["containers"][0]["env"]
    assert env == {"name": "MCP_AUTH_DATABASE", "valueFrom": {"secretKeyRef": {"name": "authserver-db", "key": "database-url"}}}
    assert "database" not in yaml.safe_load(only(postgres, "ConfigMap")["data"]["authserver.yaml"])
    budget = only(postgres, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 2
    assert budget["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    egress = only(postgres, "NetworkPolicy")["spec"]["egress"]
    [database] = [rule for rule in egress if {"protocol": "TCP", "port": 5432} in rule["ports"]]
    assert database["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}},
                               "podSelector": {"matchLabels": {"app": "postgres"}}}]


@pytest.mark.parametrize("budget, replicas, expected", [
    ({}, 2, {"minAvailable": 1}),
    ({"minAvailable": "50%"}, 2, {"minAvailable": "50%"}),
    ({"maxUnavailable": 1}, 1, {"maxUnavailable": 1}),
    ({"enabled": False}, 3, None),
])
def test_a_budget_is_rendered_only_when_it_lets_a_node_drain(budget, replicas, expected, pinned):
    values = merged(*example("sqlite" if replicas == 1 else "postgres"), pinned)
    values["authserver"].update(replicas=replicas, podDisruptionBudget={"enabled": True, **budget})
    budgets = [d["spec"] for d in render(values) if d["kind"] == "PodDisruptionBudget"]
    assert budgets == ([] if expected is None else [{**expected, "selector": budgets[0]["selector"]}])


def test_secrets_are_read_only_files_from_named_secrets_and_never_in_the_config(sqlite):
    spec = pod(sqlite)
    [volume] = [v for v in spec["volumes"] if "projected" in v]
    assert volume["projected"]["defaultMode"] & 0o007 == 0, "Secret files are not readable by other users"
    sources = {(s["secret"]["name"], i["key"]): i["path"] for s in volume["projected"]["sources"] for i in s["secret"]["items"]}
    assert sources == {("authserver-keys", "current.pem"): "signing/current.pem",
                       ("authserver-secrets", "encryption.key"): "encryption.key",
                       ("authserver-secrets", "upstream-client-secret"): "upstream-client-secret"}
    [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    config = yaml.safe_load(only(sqlite, "ConfigMap")["data"]["authserver.yaml"])
    files = [*config["signing_keys"], config["encryption_key_file"], config["upstream"]["client_secret_file"]]
    assert files == [f"{mount['mountPath']}/{path}" for path in sources.values()]
    assert pod(sqlite)["securityContext"]["fsGroup"] == pod(sqlite)["securityContext"]["runAsGroup"] == 65532
    # Secret material has no key in the values: a value that tries is refused at render.
    values = merged(*example("sqlite"))
    values["authserver"]["config"]["upstream"]["client_secret"] = "hunter2"
    assert "client_secret" in refusal(values)
    values = merged(*example("sqlite"), {"authserver": {"config": {"database": "postgres://u:pw@db/auth"}}})
    assert "database" in refusal(values)


def test_a_token_exchange_gateway_secret_is_one_more_read_only_file(pinned):
    gateway = "/etc/mcp-auth/secrets/gateways/mesh-gateway"
    values = merged(*example("sqlite"), pinned, {"authserver": {
        "extraSecrets": [{"existingSecret": "mesh-gateway", "key": "client-secret", "path": "gateways/mesh-gateway"}],
        "config": {"token_exchange": {"gateways": [{"client_id": "mesh-gateway", "client_secret_file": gateway}],
                                      "audiences": [{"audience": "https://github-mcp.internal/mcp",
                                                     "clients": ["mesh-gateway"], "scopes": ["mcp:tools"]}]}}}})
    docs = render(values)
    [volume] = [v for v in pod(docs)["volumes"] if "projected" in v]
    sources = {(s["secret"]["name"], i["key"]): i["path"] for s in volume["projected"]["sources"] for i in s["secret"]["items"]}
    assert sources[("mesh-gateway", "client-secret")] == "gateways/mesh-gateway"
    config = yaml.safe_load(only(docs, "ConfigMap")["data"]["authserver.yaml"])
    assert config["token_exchange"]["gateways"][0]["client_secret_file"] == gateway
    escape = merged(values, {"authserver": {"extraSecrets": [{"existingSecret": "x", "key": "k", "path": "../../etc/passwd"}]}})
    assert "path" in refusal(escape)


def test_the_pod_runs_non_root_read_only_without_privileges(sqlite):
    spec = pod(sqlite)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 65532
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    assert container["securityContext"] == {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]


def test_images_are_pinned_by_digest(sqlite, filter_digest, pinned):
    assert pod(sqlite)["containers"][0]["image"] == f"ghcr.io/example/mcp-mesh-authserver:0.1.0@{AUTHSERVER_DIGEST}"
    for plugin in (d for d in sqlite if d["kind"] == "WasmPlugin"):
        assert plugin["spec"]["sha256"] == filter_digest and plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    unpinned = merged(*example("sqlite"), {"filter": pinned["filter"]})
    assert pod(render(unpinned))["containers"][0]["image"] == "ghcr.io/example/mcp-mesh-authserver:0.1.0"


def test_only_the_gateway_reaches_the_mcp_workloads_and_the_authorization_server(two_teams):
    plugins = {d["metadata"]["name"]: d for d in two_teams if d["kind"] == "WasmPlugin"}
    assert set(plugins) == {"mcp-mesh-auth-engineering-tools", "mcp-mesh-auth-sales-tools"}
    for name, plugin in plugins.items():
        namespace, selector = plugin["metadata"]["namespace"], plugin["spec"]["selector"]
        [policy] = [d for d in two_teams if d["kind"] == "AuthorizationPolicy" and d["metadata"]["namespace"] == namespace]
        assert policy["spec"]["selector"] == selector and policy["spec"]["action"] == "ALLOW"
        [rule] = policy["spec"]["rules"]
        assert list(rule) == ["from"], "no `to` or `when` that could widen the rule"
        [source] = rule["from"]
        extra = ["cluster.local/ns/agents/sa/sales-agent"] if name.endswith("sales-tools") else []
        assert source == {"source": {"principals": [GATEWAY, *extra]}}
        [mtls] = [d for d in two_teams if d["kind"] == "PeerAuthentication" and d["metadata"]["namespace"] == namespace]
        assert mtls["spec"] == {"selector": selector, "mtls": {"mode": "STRICT"}}
    ingress = only(two_teams, "NetworkPolicy")["spec"]["ingress"]
    assert [r["ports"] for r in ingress] == [[{"protocol": "TCP", "port": 9000}]]
    peers = [(p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], p["podSelector"]["matchLabels"]) for p in ingress[0]["from"]]
    assert peers == [("istio-system", {"istio": "ingressgateway"}), ("mcp-system", {"app": "engineering-tools"}),
                     ("mcp-sales", {"app": "sales-tools"}), ("istio-system", {"app": "istiod"})]


def test_a_jwt_authn_team_gets_a_request_authentication_for_its_audience(two_teams):
    [request_auth] = [d for d in two_teams if d["kind"] == "RequestAuthentication"]
    assert request_auth["metadata"]["namespace"] == "mcp-sales"
    [rule] = request_auth["spec"]["jwtRules"]
    assert rule["issuer"] == "https://mcp.example.com" and rule["audiences"] == ["https://sales-tools.example.com/mcp"]
    assert rule["jwksUri"] == "http://mcp-mesh-auth-authserver.mcp-system.svc.cluster.local:9000/.well-known/jwks.json"
    sales = next(d for d in two_teams if d["kind"] == "WasmPlugin" and d["metadata"]["namespace"] == "mcp-sales")
    assert sales["spec"]["phase"] == "AUTHZ"
    assert sales["spec"]["pluginConfig"]["jwt_authn"]["payload_in_metadata"] == rule["issuer"]


CASES = {
    "engineering-tools": [
        {"name": "a developer may call a tool", "claims": {"sub": "alice", "groups": ["mcp-developers"]},
         "request": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_pods"}}, "expect": "allow"},
        {"name": "a developer may not delete a namespace", "claims": {"sub": "alice", "groups": ["mcp-developers"]},
         "request": {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_namespace"}},
         "expect": "deny", "policies": ["mcp-developers-never-delete_namespace"]},
        {"name": "someone in no group may do nothing", "claims": {"sub": "carol", "groups": []},
         "request": {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_pods"}}, "expect": "deny"},
    ],
    "sales-tools": [
        {"name": "sales may call a tool", "claims": {"sub": "sam", "groups": ["mcp-sales"]},
         "request": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_pods"}}, "expect": "allow"},
        {"name": "a developer may not", "claims": {"sub": "alice", "groups": ["mcp-developers"]},
         "request": {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_pods"}}, "expect": "deny"},
    ],
}


def test_each_team_filter_configuration_loads_in_the_filter_and_decides_its_own_policies(two_teams, tmp_path):
    for plugin in (d for d in two_teams if d["kind"] == "WasmPlugin"):
        team = plugin["spec"]["pluginConfig"]["server_name"]
        config, cases = tmp_path / f"{team}.yaml", tmp_path / f"{team}-cases.yaml"
        config.write_text(yaml.safe_dump(plugin))
        cases.write_text(yaml.safe_dump({"cases": CASES[team]}))
        # `test` loads the configuration with the filter's FilterConfig::from_json (what the module
        # runs when Envoy configures it), then decides each case with the filter's decision path.
        result = subprocess.run([str(CLI), "test", "--config", str(config), str(cases)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(CASES[team])} passed, 0 failed" in result.stdout


def test_a_filter_configuration_the_filter_refuses_is_caught_before_a_cluster(two_teams, tmp_path):
    plugin = copy.deepcopy(next(d for d in two_teams if d["kind"] == "WasmPlugin"))
    plugin["spec"]["pluginConfig"]["clock_skew_seconds"] = 3600
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(plugin))
    cases = tmp_path / "cases.yaml"
    cases.write_text(yaml.safe_dump({"cases": CASES["engineering-tools"][:1]}))
    result = subprocess.run([str(CLI), "test", "--config", str(path), str(cases)], capture_output=True, text=True)
    assert result.returncode == 2 and "clock_skew_seconds" in result.stderr, result.stdout + result.stderr


def pod_secrets(docs, workdir, database_url):
    """What an operator puts in the Secrets the pod names: a fresh key per signing key listed, a
    random encryption key, the IdP client's secret, the database URL."""
    spec = pod(docs)
    made = {}
    for volume in spec["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                if item["path"].startswith("signing/"):
                    content = write_key(workdir / item["key"], "ec").read_bytes()
                else:
                    content = {"encryption.key": base64.b64encode(os.urandom(32)), "upstream-client-secret": b"gateway-secret\n"}[item["path"]]
                made.setdefault(source["secret"]["name"], {})[item["key"]] = content
    for env in spec["containers"][0].get("env", []):
        ref = env["valueFrom"]["secretKeyRef"]
        made.setdefault(ref["name"], {})[ref["key"]] = database_url.encode()
    return made


def lay_out_pod(docs, root, secrets):
    """The files and environment the kubelet would give the container, under `root`: the
    ConfigMap's items, the Secrets' keys at their projected paths with their mode, empty
    directories for the other volumes, variables from Secret keys."""
    spec = pod(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_map = only(docs, "ConfigMap")
    container = spec["containers"][0]
    for mount in container["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for item in volume["configMap"]["items"]:
                (target / item["path"]).write_text(config_map["data"][item["key"]])
        for source in volume.get("projected", {}).get("sources", []):
            for item in source["secret"]["items"]:
                path = target / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(secrets[source["secret"]["name"]][item["key"]])
                path.chmod(volume["projected"]["defaultMode"])
    env = {e["name"]: secrets[e["valueFrom"]["secretKeyRef"]["name"]][e["valueFrom"]["secretKeyRef"]["key"]].decode()
           for e in container.get("env", [])}
    return container, env


@pytest.mark.parametrize("backend, profile", [("sqlite", "okta"), ("postgres", "entra")])
def test_the_rendered_configuration_starts_the_real_server_on_what_the_pod_gets(backend, profile, pinned, request, log_dir, tmp_path):
    """The binary, given the rendered ConfigMap and Secrets as the Deployment hands them over
    (paths under a temporary root, the IdP's address pointed at a real OpenID provider shaped like
    the example's, PostgreSQL a real one), starts, answers the probes' paths, and keeps its
    database where the chart says."""
    docs = render(merged(*example(backend), pinned))
    # With a password (trust authentication ignores it): the server must log the URL masked.
    database_url = request.getfixturevalue("database").replace("mcp@", "mcp:pg-Secret-9@") if backend == "postgres" else None
    idp_port, port = free_port(), free_port()
    idp = start_idp(log_dir, profile, idp_port, [])
    root = tmp_path / "pod"
    secrets = pod_secrets(docs, tmp_path, database_url)
    container, env = lay_out_pod(docs, root, secrets)
    mounts = re.compile("|".join(re.escape(m["mountPath"]) + "/" for m in container["volumeMounts"]))

    def in_root(text):
        return mounts.sub(lambda found: f"{root}{found.group()}", text)
    [config_path] = [in_root(a) for a in container["args"] if a.endswith(".yaml")]
    config = yaml.safe_load(in_root(Path(config_path).read_text()))
    config["upstream"]["issuer_url"] = f"http://127.0.0.1:{idp_port}{PROFILES[profile]['path']}"
    config["upstream"]["allow_http_issuer"] = True
    Path(config_path).write_text(yaml.safe_dump(config))
    assert urlparse(f"//{config['listen']}").port == container["ports"][0]["containerPort"] == 9000
    args = [in_root(a) for a in container["args"]]
    server = Process(f"authserver-chart-{backend}", [str(AUTHSERVER), *args, "--listen", f"127.0.0.1:{port}"], log_dir, env=env)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready():
            if not server.alive():
                raise RuntimeError(server.log())
            try:
                return requests.get(base + container["readinessProbe"]["httpGet"]["path"], timeout=3).status_code == 200
            except requests.RequestException:
                return False
        wait_until(ready, 20, "the authorization server's readiness probe")
        assert requests.get(base + container["livenessProbe"]["httpGet"]["path"], timeout=3).status_code == 200
        assert requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=3).json()["issuer"] == "https://mcp.example.com"
        keys = requests.get(f"{base}/.well-known/jwks.json", timeout=3).json()["keys"]
        assert len(keys) == len(config["signing_keys"]), "every mounted signing key is published"
        log = server.log()
        if backend == "sqlite":
            file = Path(urlparse(config["database"]).path)
            assert file.is_file() and file.stat().st_mode & 0o077 == 0
        else:
            assert "postgres://mcp:" in log and not (root / "var").exists()
        for contents in secrets.values():
            for secret in contents.values():
                text = secret.decode().strip()
                if "PRIVATE KEY" in text:
                    text = text.splitlines()[1]
                elif text.startswith("postgres://"):
                    text = urlparse(text).password
                assert text not in log
    finally:
        server.stop()
        idp.stop()


DELETE = object()


def changed(values, path, value):
    *parents, leaf = path.split(".")
    for key in parents:
        values = values.setdefault(key, {})
    if value is DELETE:
        del values[leaf]
    else:
        values[leaf] = value


@pytest.mark.parametrize("path, value, message", [
    ("authserver.replicas", 2, "at '/authserver/replicas': maximum: got 2, want 1"),
    ("authserver.config.issuer", DELETE, "at '/authserver/config': missing property 'issuer'"),
    ("authserver.config.issuer", "http://mcp.example.com", "at '/authserver/config/issuer'"),
    ("filter.image.sha256", "latest", "at '/filter/image/sha256'"),
    ("filter.image.sha256", "sha256:" + "a" * 64, "at '/filter/image/sha256'"),
    ("authserver.image.digest", "sha256:abc", "at '/authserver/image/digest'"),
    ("authserver.signingKeys.existingSecret", "", "at '/authserver/signingKeys/existingSecret'"),
    ("authserver.database.type", "postgres", "at '/authserver/database/postgres/existingSecret'"),
    ("authserver.config.upstream.type", "dev", "at '/authserver/config/upstream/type'"),
    ("teams", [], "at '/teams': minItems"),
    ("teams", [{"name": "t", "resource": "https://mcp.example.com/mcp", "policies": []}], "at '/teams/0/policies': minItems"),
    ("filter.pluginConfig.headers_stop_iteration", True, "at '/filter/pluginConfig/headers_stop_iteration'"),
    ("filter.pluginConfig.audience", ["x"], "'audience'"),
])
def test_the_schema_refuses_bad_values_naming_the_field(path, value, message, pinned):
    values = merged(*example("sqlite"), pinned)
    changed(values, path, value)
    assert message in refusal(values)


def test_values_the_schema_cannot_judge_are_refused_by_the_templates(pinned):
    drains = merged(*example("postgres"), pinned, {"authserver": {"replicas": 2, "podDisruptionBudget": {"minAvailable": 2}}})
    assert "authserver.podDisruptionBudget.minAvailable: 2 keeps all 2 replica(s)" in refusal(drains)
    team = example("sqlite")[0]["teams"][0]
    twice = merged(*example("sqlite"), pinned, {"teams": [team, team]})
    assert 'two teams are named "engineering-tools"' in refusal(twice)
