"""Processes the end-to-end tests start: Envoy with the filter, MCP servers, a JWKS server."""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ROOT = Path(__file__).resolve().parents[2]
ENVOY_BIN = ROOT / ".venv" / "bin" / "envoy"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "mcp_mesh_auth_filter.wasm"
EXAMPLE = ROOT / "envoy" / "filter-example.yaml"
NODE_MODULES = ROOT / "tests" / "node_modules"
SERVERS = ROOT / "tests" / "servers"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str, interval: float = 0.05):
    """Polls `check` until it returns a truthy value; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def postgres_program(name: str) -> str:
    """A PostgreSQL server program: on the PATH, or where Debian's package puts it."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's `{name}` is missing: `make tools` installs it")
    return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class SigningKey:
    """A real key pair; its public half is served as a JWK."""

    def __init__(self, kid: str, kind: str = "RSA"):
        self.kid = kid
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg = "ES256"

    def jwk(self) -> dict:
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg.startswith("RS") else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg=self.alg)
        return jwk

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        headers = {"kid": self.kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


class JwksServer:
    """Serves `/jwks` from the keys it is given; can be stopped and started on the same port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.keys: list[SigningKey] = []
        self.requests = 0
        self._server = None

    def start(self) -> "JwksServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                if self.path not in ("/jwks", "/.well-known/jwks.json"):
                    self.send_error(404)
                    return
                body = json.dumps({"keys": [key.jwk() for key in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Process:
    """A child process whose output goes to a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def start_node_server(name: str, script: Path, log_dir: Path, env: dict | None = None,
                      args: tuple[str, ...] = ()) -> tuple[Process, int]:
    port = free_port()
    proc = Process(name, ["node", str(script), *args], log_dir, env={"PORT": str(port), **(env or {})}, cwd=ROOT / "tests")
    wait_until(lambda: port_open(port) or (not proc.alive() and _raise(proc)), 30, f"{name} on port {port}")
    return proc, port


def _raise(proc: Process):
    raise RuntimeError(f"{proc.name} exited early:\n{proc.log()}")


class Envoy:
    """The shipped example config, started with its ports, backends and trusted issuer replaced."""

    def __init__(self, log_dir: Path, backend_port: int, jwks_port: int, filter_config: dict | None = None,
                 probe_port: int | None = None, name: str = "envoy", jwks: dict | None = None,
                 mcp_router: dict[str, int] | None = None, edit=None):
        self.port = free_port()
        self.admin_port = free_port()
        self.origin = f"http://localhost:{self.port}"
        self.issuer = self.origin
        self.resource = f"{self.origin}/mcp"
        config = yaml.safe_load(EXAMPLE.read_text())
        config["admin"]["address"]["socket_address"]["port_value"] = self.admin_port
        listener = config["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = self.port
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        wasm = hcm["http_filters"][0]["typed_config"]["config"]
        wasm["vm_config"]["code"]["local"]["filename"] = str(WASM)
        plugin = json.loads(wasm["configuration"]["value"])
        plugin["resource"] = self.resource
        plugin["authorization_servers"] = [self.origin]
        plugin["issuers"][0]["issuer"] = self.issuer
        plugin["issuers"][0]["jwks"].update({"path": "/jwks", "authority": f"localhost:{jwks_port}", **(jwks or {})})
        if probe_port:
            # The probe server is a second MCP endpoint behind the same filter.
            plugin["extra_mcp_paths"] = ["/probe/mcp", "/broken/mcp"]
        plugin.update(filter_config or {})
        self.plugin_config = plugin
        for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
            if route["match"].get("path") == "/mcp":
                # The backend route matches the MCP endpoint exactly, wherever it is configured.
                route["match"]["path"] = plugin.get("mcp_path", "/mcp")
        wasm["configuration"]["value"] = json.dumps(plugin)
        clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
        _endpoint(clusters["authserver"])["port_value"] = jwks_port
        _endpoint(clusters["mcp_backend"])["port_value"] = backend_port
        if probe_port:
            probe = copy.deepcopy(clusters["mcp_backend"])
            probe["name"] = probe["load_assignment"]["cluster_name"] = "probe"
            _endpoint(probe)["port_value"] = probe_port
            config["static_resources"]["clusters"].append(probe)
            routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            routes.insert(0, {"match": {"prefix": "/probe/mcp"}, "route": {"cluster": "probe", "prefix_rewrite": "/mcp", "timeout": "0s"}})
            routes.insert(0, {"match": {"prefix": "/broken/mcp"}, "route": {"cluster": "probe", "timeout": "0s"}})
        if mcp_router:
            # Envoy's native aggregation: `mcp` parses, `mcp_router` fans out (terminal filter).
            hcm["http_filters"][1:] = [
                {"name": "envoy.filters.http.mcp",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.mcp.v3.Mcp"}},
                {"name": "envoy.filters.http.mcp_router",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.mcp_router.v3.McpRouter",
                                  "servers": [{"name": server, "mcp_cluster": {"cluster": server, "path": "/mcp"}}
                                              for server in mcp_router]}},
            ]
            for server, port in mcp_router.items():
                cluster = copy.deepcopy(clusters["mcp_backend"])
                cluster["name"] = cluster["load_assignment"]["cluster_name"] = server
                _endpoint(cluster)["port_value"] = port
                config["static_resources"]["clusters"].append(cluster)
        if edit:
            edit(config)  # last word on the whole Envoy configuration (the hostile suite uses it)
        self.config_path = log_dir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process = Process(name, [str(ENVOY_BIN), "-c", str(self.config_path), "--disable-hot-restart",
                                      "--concurrency", "1", "-l", "info"], log_dir)

    def wait_ready(self, timeout: float = 60) -> "Envoy":
        """Envoy compiles the module with V8 before it is ready: poll its admin `/ready`."""
        def ready():
            if not self.process.alive():
                raise RuntimeError(f"envoy exited:\n{self.process.log()[-4000:]}")
            try:
                return requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_until(ready, timeout, "envoy /ready", interval=0.1)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def counter(self, name: str) -> int:
        """A filter counter, `name` without its `mcp_auth.<instance>.` prefix, summed over instances."""
        return self._stat_sum(r"mcp_auth\.[^.]+\." + re.escape(name) + "$")

    def envoy_counter(self, name: str) -> int:
        """One of Envoy's own statistics by its full name (`cluster.authserver.upstream_rq_completed`)."""
        return self._stat_sum("^" + re.escape(name) + "$")

    def _stat_sum(self, pattern: str) -> int:
        text = requests.get(f"http://127.0.0.1:{self.admin_port}/stats", params={"filter": pattern}, timeout=5).text
        return sum(int(line.partition(": ")[2]) for line in text.splitlines() if ": " in line)

    def stop(self):
        self.process.stop()


def _endpoint(cluster: dict) -> dict:
    return cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]


def claims(envoy: Envoy, **overrides) -> dict:
    now = int(time.time())
    base = {"iss": envoy.issuer, "aud": envoy.resource, "sub": "alice", "client_id": "test-client",
            "groups": ["mcp-platform"],
            "iat": now, "exp": now + 600, "jti": str(uuid.uuid4()), "scope": "mcp:tools"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class McpSession:
    """A minimal Streamable HTTP client (2025-11-25): initialize, then calls with the session id."""

    ACCEPT = "application/json, text/event-stream"

    def __init__(self, url: str, token: str | None):
        self.url = url
        self.token = token
        self.session_id = None
        self.next_id = 1

    def headers(self) -> dict:
        headers = {"content-type": "application/json", "accept": self.ACCEPT}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if self.session_id:
            headers["mcp-session-id"] = self.session_id
            headers["mcp-protocol-version"] = "2025-11-25"
        return headers

    def post(self, message: dict) -> requests.Response:
        return requests.post(self.url, headers=self.headers(), data=json.dumps(message), timeout=10)

    def request(self, method: str, params: dict | None = None) -> dict:
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}}
        self.next_id += 1
        response = self.post(message)
        response.raise_for_status()
        return parse_jsonrpc(response)

    def initialize(self) -> dict:
        result = self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                             "clientInfo": {"name": "e2e", "version": "0"}})
        return result

    def open(self) -> "McpSession":
        message = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "e2e", "version": "0"}}}
        response = self.post(message)
        response.raise_for_status()
        self.session_id = response.headers.get("mcp-session-id")
        notified = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert notified.status_code == 202, notified.text
        return self


def parse_jsonrpc(response: requests.Response) -> dict:
    """The JSON-RPC message of a JSON or SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            # Servers may send a priming event with empty data first (SSE resumability).
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:])
        raise AssertionError(f"no data event in {response.text!r}")
    return response.json()
