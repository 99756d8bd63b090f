"""Browser clients on another origin (the MCP Inspector, web agents) and the filter's CORS.

The filter answers every preflight on the paths it protects (a preflight carries no token, so
it never reaches the server), gives the listed origins, and only those, the `Access-Control-*`
headers on every answer (its own 401s included, so a browser client can read
`WWW-Authenticate` and start its login), and replaces whatever the server said about CORS.
Checked in both `headers_stop_iteration` modes, and in headless Chromium, which enforces it.
"""

import http.client
import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from harness import Envoy, McpSession, claims, free_port

ROOT = Path(__file__).resolve().parents[2]
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "cors", "version": "0"}}}


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler's name is the standard library's)
        body = b"<!doctype html><title>browser MCP client</title>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_port():
    """Serves the page the browser client runs on; reached as 127.0.0.1 (allowed) or localhost."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module", params=[True, False], ids=["headers-held", "headers-sent"])
def proxy(request, log_dir, everything, jwks, page_port):
    hold = request.param

    def envoy_hold(config):
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"][0]["typed_config"]["config"]["allow_on_headers_stop_iteration"] = hold

    envoy = Envoy(log_dir, backend_port=everything, jwks_port=jwks.port, name=f"envoy-cors-{hold}",
                  filter_config={"cors": {"allowed_origins": [allowed(page_port)]},
                                 "headers_stop_iteration": hold},
                  edit=envoy_hold)
    envoy.wait_ready()
    yield envoy
    envoy.stop()


def allowed(port):
    return f"http://127.0.0.1:{port}"


def refused(port):
    return f"http://localhost:{port}"


def upstream_requests(proxy):
    return proxy.envoy_counter("cluster.mcp_backend.upstream_rq_total")


def preflight(proxy, origin, path="/mcp"):
    return requests.options(proxy.url(path), timeout=10, headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, mcp-protocol-version"})


def test_a_listed_origins_preflight_is_answered_by_the_filter(proxy, page_port):
    before = upstream_requests(proxy)
    answer = preflight(proxy, allowed(page_port))
    assert answer.status_code == 204, answer.text
    assert answer.headers["access-control-allow-origin"] == allowed(page_port)
    assert "POST" in answer.headers["access-control-allow-methods"]
    requested = answer.headers["access-control-allow-headers"]
    assert all(name in requested for name in ("authorization", "content-type", "mcp-protocol-version"))
    assert upstream_requests(proxy) == before, "a preflight carries no token: it never goes upstream"


def test_another_origins_preflight_is_refused_without_cors_headers(proxy, page_port):
    before = upstream_requests(proxy)
    for path in ("/mcp", "/anything/else"):
        answer = preflight(proxy, refused(page_port), path)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "cors_origin_refused"
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
    assert upstream_requests(proxy) == before


def test_a_401_is_readable_by_a_listed_origin(proxy, page_port):
    answer = requests.post(proxy.url("/mcp"), json=INITIALIZE, timeout=10,
                           headers={"origin": allowed(page_port), "accept": McpSession.ACCEPT})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == allowed(page_port)
    assert "www-authenticate" in answer.headers["access-control-expose-headers"].lower()
    assert "resource_metadata=" in answer.headers["www-authenticate"]


def test_the_servers_answer_carries_the_filters_cors_verdict(proxy, page_port, signing_key):
    token = signing_key.sign(claims(proxy))
    headers = {"authorization": f"Bearer {token}", "accept": McpSession.ACCEPT}
    mine = requests.post(proxy.url("/mcp"), json=INITIALIZE, timeout=10,
                         headers={**headers, "origin": allowed(page_port)})
    assert mine.status_code == 200, mine.text
    assert mine.headers["access-control-allow-origin"] == allowed(page_port)
    assert "mcp-session-id" in mine.headers["access-control-expose-headers"].lower()
    assert "origin" in mine.headers.get("vary", "").lower()
    theirs = requests.post(proxy.url("/mcp"), json=INITIALIZE, timeout=10,
                           headers={**headers, "origin": refused(page_port)})
    assert theirs.status_code == 200, "CORS is the browser's to enforce: the call itself was authorized"
    assert not [h for h in theirs.headers if h.lower().startswith("access-control-")], theirs.headers
    # Not a browser's cross-origin request: left as the server made it. server-everything allows
    # every origin, which is what the refused origin above did not get.
    plain = requests.post(proxy.url("/mcp"), json=INITIALIZE, timeout=10, headers=headers)
    assert plain.headers.get("access-control-allow-origin") == "*"


def test_two_origin_headers_are_no_listed_origin(proxy, page_port):
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    connection.putrequest("OPTIONS", "/mcp")
    connection.putheader("origin", allowed(page_port))
    connection.putheader("origin", refused(page_port))
    connection.putheader("access-control-request-method", "POST")
    connection.endheaders()
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 403
    assert answer.getheader("access-control-allow-origin") is None


def test_chromium_lets_only_the_listed_origins_page_read_the_answers(proxy, page_port, signing_key):
    token = signing_key.sign(claims(proxy))
    pages = [allowed(page_port) + "/", refused(page_port) + "/"]
    result = subprocess.run(["node", str(ROOT / "tests" / "browser" / "cors.mjs"), proxy.url("/mcp"), token, *pages],
                            capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    listed, other = seen[pages[0]], seen[pages[1]]
    assert listed["signedIn"]["status"] == 200 and listed["signedIn"]["session"], listed
    assert listed["anonymous"]["status"] == 401, listed
    assert "resource_metadata=" in listed["anonymous"]["challenge"], "the page can start the login"
    assert "Failed to fetch" in other["signedIn"]["error"], other
    assert "Failed to fetch" in other["anonymous"]["error"], other
