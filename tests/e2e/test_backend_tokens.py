"""Backends get their own token, in the real Envoy (envoy/token-exchange.yaml): the filter
verifies the caller's token, exchanges it (RFC 8693) at the real authorization server as the
gateway client, and sends each backend a token minted for it. Two FastMCP backends validate
their own audience — one against our JWKS, one against the oidc-provider's (an `issuer:
upstream` audience) — and report the claims they received. Both header modes of the filter."""

import concurrent.futures
import copy
import hashlib
import json

import pytest
import yaml

from authstack import AuthServer, write_key
from browser import Browser
from harness import ENVOY_BIN, ROOT, WASM, McpSession, Process, free_port, port_open, wait_until
from test_federation import start_idp
from test_token_exchange import GATEWAY, GITHUB, JIRA, OTHER, SignIn, server_config

FORBIDDEN = "https://forbidden-mcp.internal/mcp"  # an audience the filter's gateway may not ask for
CONFIG = ROOT / "envoy" / "token-exchange.yaml"


def start_backend(log_dir, name, jwks_uri, issuer, audience, algorithm):
    port = free_port()
    env = {"PORT": str(port), "JWKS_URI": jwks_uri, "ISSUER": issuer, "AUDIENCE": audience,
           "ALGORITHM": algorithm, "NAME": name}
    proc = Process(name, [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "tests" / "servers" / "audience_backend.py")],
                   log_dir, env=env)
    wait_until(lambda: port_open(port) or (not proc.alive() and _died(proc)), 30, name)
    return proc, port


def _died(proc):
    raise RuntimeError(f"{proc.name} exited:\n{proc.log()}")


@pytest.fixture(scope="module")
def stack(log_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("backend-tokens")
    port, idp_port = free_port(), free_port()
    issuer, idp_origin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{idp_port}"
    idp = start_idp(log_dir, "okta", idp_port, [f"{issuer}/oauth/callback"])
    Browser.idp_origins.add(idp_origin)
    idp_url = f"{idp_origin}/oauth2/default"
    config = server_config(workdir, issuer, idp_url, "main", ["openid", "profile", "email", "offline_access", "groups"])
    config["lifetimes"] = {"access_seconds": 300}
    config["token_exchange"]["audiences"].append({"audience": FORBIDDEN, "clients": [OTHER[0]], "scopes": ["mcp:tools"]})
    server = AuthServer(log_dir, workdir, config, port, [write_key(workdir / "k.pem", "ec")], name="authserver-backend-tokens")
    idp_jwks = f"{idp_url}/jwks"
    github, github_port = start_backend(log_dir, "backend-github", f"{issuer}/.well-known/jwks.json", issuer, GITHUB, "ES256")
    jira, jira_port = start_backend(log_dir, "backend-jira", idp_jwks, idp_url, JIRA, "RS256")
    yield {"issuer": issuer, "port": port, "idp_url": idp_url, "github": github_port, "jira": jira_port,
           "alice": SignIn(issuer, "alice")}
    for proc in (jira, github, server, idp):
        proc.stop()


class ExchangingEnvoy:
    """envoy/token-exchange.yaml with its ports and URLs replaced, and a third route (`forbidden`)
    whose audience the gateway may not ask for."""

    def __init__(self, log_dir, stack, hold_headers):
        self.port, self.admin_port = free_port(), free_port()
        config = yaml.safe_load(CONFIG.read_text())
        config["admin"]["address"]["socket_address"]["port_value"] = self.admin_port
        listener = config["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = self.port
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        wasm["vm_config"]["code"]["local"]["filename"] = str(WASM)
        wasm["allow_on_headers_stop_iteration"] = hold_headers
        plugin = json.loads(wasm["configuration"]["value"])
        issuer, authority = stack["issuer"], f"127.0.0.1:{stack['port']}"
        plugin.update(resource=f"{issuer}/mcp", authorization_servers=[issuer], headers_stop_iteration=hold_headers)
        plugin["issuers"][0]["issuer"] = issuer
        plugin["issuers"][0]["jwks"]["authority"] = authority
        plugin["token_exchange"]["authority"] = authority
        plugin["token_exchange"]["backends"].append({"route": "forbidden", "audience": FORBIDDEN})
        plugin["extra_mcp_paths"].append("/forbidden/mcp")
        wasm["configuration"]["value"] = json.dumps(plugin)
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        forbidden = copy.deepcopy(next(r for r in routes if r.get("name") == "github"))
        forbidden["name"], forbidden["match"]["path"], forbidden["route"]["cluster"] = "forbidden", "/forbidden/mcp", "forbidden_mcp"
        routes.append(forbidden)
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        extra = copy.deepcopy(clusters["github_mcp"])
        extra["name"] = extra["load_assignment"]["cluster_name"] = "forbidden_mcp"
        config["static_resources"]["clusters"].append(extra)
        for name, port in (("authserver", stack["port"]), ("github_mcp", stack["github"]),
                           ("jira_mcp", stack["jira"]), ("forbidden_mcp", stack["github"])):
            cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == name)
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = port
        mode = "hold" if hold_headers else "plain"
        path = log_dir / f"envoy-backend-tokens-{mode}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.process = Process(f"envoy-backend-tokens-{mode}", [str(ENVOY_BIN), "-c", str(path), "--disable-hot-restart",
                                                                "--concurrency", "1", "-l", "info"], log_dir,
                               env={"MCP_AUTH_GATEWAY_SECRET": GATEWAY[1]})

    def wait_ready(self):
        import requests

        def ready():
            if not self.process.alive():
                raise RuntimeError(self.process.log()[-4000:])
            try:
                return requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(ready, 60, "envoy /ready", interval=0.1)
        return self

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stat(self, name):
        import requests
        text = requests.get(f"http://127.0.0.1:{self.admin_port}/stats", params={"filter": name}, timeout=5).text
        return sum(int(line.partition(": ")[2]) for line in text.splitlines() if line.partition(": ")[0].endswith(name))


@pytest.fixture(scope="module", params=[True, False], ids=["headers_stop_iteration", "headers_go_first"])
def envoy(request, log_dir, stack):
    proxy = ExchangingEnvoy(log_dir, stack, request.param).wait_ready()
    yield proxy
    proxy.process.stop()


def whoami(envoy, route, token):
    session = McpSession(envoy.url(f"/{route}/mcp"), token).open()
    result = session.request("tools/call", {"name": "whoami", "arguments": {}})
    assert not result["result"].get("isError"), result
    return json.loads(result["result"]["content"][0]["text"])


def sha256(token):
    return hashlib.sha256(token.encode()).hexdigest()


def test_each_backend_gets_a_token_minted_for_it_with_the_user_and_the_gateway(stack, envoy):
    caller = stack["alice"].access_token()
    github = whoami(envoy, "github", caller)
    assert (github["sub"], github["aud"], github["iss"]) == ("alice", GITHUB, stack["issuer"])
    assert github["act"] == {"sub": GATEWAY[0]} and github["client_id"] == GATEWAY[0]
    # The other backend trusts the identity provider: it gets the provider's token for alice.
    jira = whoami(envoy, "jira", caller)
    assert jira["sub"] == "alice" and jira["iss"] == stack["idp_url"]
    assert JIRA in (jira["aud"] if isinstance(jira["aud"], list) else [jira["aud"]])
    assert sha256(caller) not in (github["token_sha256"], jira["token_sha256"]), "never the caller's own token"
    assert github["token_sha256"] != jira["token_sha256"], "never the other backend's token"


def test_concurrent_first_requests_of_one_caller_cause_one_exchange(stack, envoy):
    caller = stack["alice"].access_token()  # a token the filter has not seen: nothing cached
    before = envoy.stat("token_exchanges_total.success")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: whoami(envoy, "github", caller), range(6)))
    assert {a["token_sha256"] for a in answers} == {answers[0]["token_sha256"]}, "one token, shared"
    assert envoy.stat("token_exchanges_total.success") - before == 1
    whoami(envoy, "github", caller)
    assert envoy.stat("token_exchanges_total.success") - before == 1, "then reused from the cache"


def test_a_refused_exchange_is_a_json_rpc_error_and_nothing_reaches_the_backend(stack, envoy):
    import requests
    caller = stack["alice"].access_token()
    response = requests.post(envoy.url("/forbidden/mcp"), headers={
        "authorization": f"Bearer {caller}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"}, data=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}}}), timeout=10)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == -32603
    assert error["message"] == ("the gateway could not obtain a credential for this backend: "
                                "the authorization server refused the exchange (invalid_target)")
    assert envoy.stat("cluster.forbidden_mcp.upstream_rq_total") == 0
    assert caller not in envoy.process.log(), "tokens never reach the log"
