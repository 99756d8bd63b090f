"""The authorization server's edges, attacked directly (no Envoy in front): the registration rate
limit against spoofed forwarding headers, metadata and body size limits, the client metadata
document fetch as an internal-network oracle, slow clients, and a SIGTERM under refresh load."""

import json
import os
import signal
import socket
import threading
import time

import requests

from authstack import REDIRECT, AuthServer, pkce, query, write_key
from browser import Browser
from harness import free_port, wait_until

USERS = "users:\n- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers]}\n"


def start(tmp_path, log_dir, name, server=None, registration=None, client_metadata=None, port=None, keys=None):
    """A server with the dev login on its own SQLite file in `tmp_path`."""
    port = port or free_port()
    users = tmp_path / "users.yaml"
    users.write_text(USERS)
    url = f"http://127.0.0.1:{port}"
    config = {"issuer": url, "resources": [f"{url}/mcp"], "database": f"sqlite://{tmp_path}/auth.db?mode=rwc",
              "upstream": {"type": "dev", "users_file": str(users)}}
    for key, section in {"server": server, "registration": registration, "client_metadata": client_metadata}.items():
        if section is not None:
            config[key] = section
    keys = keys or [write_key(tmp_path / "key.pem", "ec")]
    return AuthServer(log_dir, tmp_path, config, port, keys, name=name)


def register(server, metadata=None, headers=None):
    return requests.post(f"{server.url}/oauth/register", json=metadata or {"redirect_uris": [REDIRECT]},
                         headers=headers or {}, timeout=10)


def test_a_spoofed_forwarding_header_does_not_buy_a_fresh_registration_budget(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-ratelimit", registration={"per_minute": 3})
    try:
        for i in range(3):
            spoofed = {"x-envoy-external-address": f"203.0.113.{i}", "x-forwarded-for": f"198.51.100.{i}"}
            assert register(server, headers=spoofed).status_code == 201
        refused = register(server, headers={"x-envoy-external-address": "203.0.113.99",
                                            "x-forwarded-for": "198.51.100.99"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "slow_down"
    finally:
        server.stop()


def test_a_trusted_proxy_hop_accounts_registrations_to_the_address_it_appended(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-proxyhops", registration={"per_minute": 1},
                   server={"trusted_proxy_hops": 1})
    try:
        # The client wrote the left entry itself; the proxy appended the right one.
        assert register(server, headers={"x-forwarded-for": "1.1.1.1, 203.0.113.5"}).status_code == 201
        again = register(server, headers={"x-forwarded-for": "2.2.2.2, 203.0.113.5"})
        assert again.status_code == 429, "a new left-hand entry is not a new client"
        assert register(server, headers={"x-forwarded-for": "203.0.113.6"}).status_code == 201
    finally:
        server.stop()


def test_oversized_metadata_and_bodies_are_refused_as_json(tmp_path, log_dir):
    # A body limit far above the metadata limits, so that the field limit is what refuses.
    big = start(tmp_path, log_dir, "edges-bigbody", server={"max_body_bytes": 4 * 1024 * 1024})
    try:
        refused = register(big, {"client_name": "a" * 2_000_000, "redirect_uris": [REDIRECT]})
        assert refused.status_code == 400, refused.text[:300]
        body = refused.json()
        assert body["error"] == "invalid_client_metadata"
        assert body["error_description"].startswith("client_name:") and len(refused.content) < 1000
        many = register(big, {"redirect_uris": [f"{REDIRECT}/{i}" for i in range(1000)]})
        assert many.status_code == 400 and many.json()["error"] == "invalid_redirect_uri"
    finally:
        big.stop()
    server = start(tmp_path, log_dir, "edges-defaultbody")
    try:
        for path in ("/oauth/register", "/oauth/token", "/oauth/revoke"):
            response = requests.post(f"{server.url}{path}", data=b"x" * 200_000,
                                     headers={"content-type": "application/json"}, timeout=10)
            assert response.status_code == 413, (path, response.status_code)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == "invalid_request"
        stored = register(server, {"client_name": "ok", "redirect_uris": [REDIRECT], "jwks": {"keys": ["x" * 1000]}})
        assert stored.status_code == 201 and "jwks" not in stored.json(), "unknown fields are dropped"
    finally:
        server.stop()


def test_a_private_address_document_gets_the_same_generic_error_as_any_failed_fetch(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-cimd")
    try:
        _, challenge = pkce()
        answers = {}
        for name, client_id in {"private": "https://127.0.0.1:9/client.json",
                                "nat64": "https://[64:ff9b::a00:1]:9/client.json",
                                "unresolvable": "https://client.example.invalid/client.json"}.items():
            page = requests.get(f"{server.url}/oauth/authorize", allow_redirects=False, timeout=15, params={
                "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{server.url}/mcp"})
            assert page.status_code == 400, page.text[:300]
            text = page.text.replace(client_id, "<client_id>")
            assert "could not be retrieved" in text, text[:500]
            for leak in ("resolves", "private", "loopback", "10.0.0.1", "dns", "resolve", "connect"):
                assert leak not in text.lower(), (name, leak)
            answers[name] = text
        assert answers["private"] == answers["nat64"] == answers["unresolvable"]
        assert "127.0.0.1" in server.process.log(), "the reason is logged"
    finally:
        server.stop()


def stalled(port, request: bytes):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(request)
    return sock


def closed_by_server(sock) -> bytes:
    """Reads until the server closes the connection (a socket timeout fails the test)."""
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def test_slow_clients_are_cut_off_and_health_keeps_answering(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-slow", server={
        "header_read_timeout_seconds": 2, "body_timeout_seconds": 2, "request_timeout_seconds": 4,
        "max_connections": 100})
    port = int(server.url.rsplit(":", 1)[1])
    try:
        body_stall = (b"POST /oauth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 60000\r\n\r\n{\"client_n")
        huge_stall = (b"POST /oauth/register HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{\"client_na")
        header_stall = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        socks = [stalled(port, r) for r in [body_stall] * 60 + [huge_stall] * 20 + [header_stall] * 60]
        # Far more stalled connections than the server's limit would allow if they were never cut.
        for _ in range(3):
            assert requests.get(f"{server.url}/healthz", timeout=10).text == "ok"
        answers = [closed_by_server(sock) for sock in socks]
        for answer in answers[:60]:
            assert answer.startswith(b"HTTP/1.1 400") and b"invalid_request" in answer, answer[:200]
        for answer in answers[60:80]:
            assert answer.startswith(b"HTTP/1.1 413") and b"invalid_request" in answer, answer[:200]
        assert all(answer == b"" or answer.startswith(b"HTTP/1.1 408") for answer in answers[80:])
        # An idle keep-alive connection is closed too.
        idle = stalled(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_by_server(idle).endswith(b"ok")
        for sock in socks + [idle]:
            sock.close()
        assert requests.get(f"{server.url}/healthz", timeout=10).text == "ok"
    finally:
        server.stop()


def login(server, client):
    verifier, challenge = pkce()
    url = f"{server.url}/oauth/authorize?" + requests.compat.urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
        "resource": f"{server.url}/mcp", "scope": "mcp:tools offline_access"})
    code = query(Browser().authorize(url, "alice"))["code"]
    tokens = requests.post(f"{server.url}/oauth/token", timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "client_id": client["client_id"]})
    assert tokens.status_code == 200, tokens.text
    return tokens.json()["refresh_token"]


class Session(threading.Thread):
    """Refreshes in a loop, as an MCP client keeping its session: a failure to connect or a 503 is
    retried with the same refresh token; an `invalid_grant` means the session is lost."""

    def __init__(self, url, client_id, refresh_token):
        super().__init__(daemon=True)
        self.url, self.client_id, self.token = url, client_id, refresh_token
        self.refreshes = 0
        self.retried = 0
        self.lost = None
        self.stop = threading.Event()

    def run(self):
        http = requests.Session()
        while not self.stop.is_set() and self.lost is None:
            try:
                response = http.post(f"{self.url}/oauth/token", timeout=10, data={
                    "grant_type": "refresh_token", "refresh_token": self.token, "client_id": self.client_id})
            except requests.RequestException:
                http = requests.Session()
                self.retried += 1
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                self.token = response.json()["refresh_token"]
                self.refreshes += 1
            elif response.status_code >= 500:
                self.retried += 1
                time.sleep(0.05)
            else:
                self.lost = response.text


def test_sigterm_under_refresh_load_drains_and_a_restart_loses_no_session(tmp_path, log_dir):
    key = write_key(tmp_path / "key.pem", "ec")
    server = start(tmp_path, log_dir, "edges-drain-1", keys=[key])
    port = int(server.url.rsplit(":", 1)[1])
    client = register(server).json()
    sessions = [Session(server.url, client["client_id"], login(server, client)) for _ in range(16)]
    for session in sessions:
        session.start()
    try:
        wait_until(lambda: all(s.refreshes >= 3 for s in sessions), 60, "every session refreshing")
        os.killpg(server.process.proc.pid, signal.SIGTERM)
        assert server.process.proc.wait(timeout=15) == 0
        assert "SIGTERM received" in server.process.log() and "every connection closed" in server.process.log()
        before = [s.refreshes for s in sessions]
        server = start(tmp_path, log_dir, "edges-drain-2", keys=[key], port=port)
        wait_until(lambda: all(s.refreshes >= b + 3 or s.lost for s, b in zip(sessions, before)), 60,
                   "every session refreshing after the restart")
        assert [s.lost for s in sessions] == [None] * 16, "0 lost sessions"
    finally:
        for session in sessions:
            session.stop.set()
        server.stop()


def test_sigterm_exits_within_the_grace_deadline_with_a_stalled_request_open(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-deadline", server={
        "shutdown_grace_seconds": 2, "body_timeout_seconds": 120, "request_timeout_seconds": 120})
    port = int(server.url.rsplit(":", 1)[1])
    sock = stalled(port, b"POST /oauth/register HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"client_na")
    try:
        # A full request on a second connection: the server has accepted and read the first by now.
        assert register(server).status_code == 201
        started = time.monotonic()
        os.killpg(server.process.proc.pid, signal.SIGTERM)
        server.process.proc.wait(timeout=30)
        assert time.monotonic() - started < 10, "the stalled request does not hold the process"
        assert "still open at the shutdown deadline" in server.process.log()
        assert closed_by_server(sock) == b""
    finally:
        sock.close()
        server.stop()


def test_browser_clients_get_cors_preflights_on_the_api_endpoints(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-cors")
    try:
        for path in ("/oauth/register", "/oauth/token", "/oauth/revoke", "/.well-known/oauth-authorization-server"):
            response = requests.options(f"{server.url}{path}", timeout=10, headers={
                "origin": "https://app.example.com", "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,mcp-protocol-version"})
            assert response.status_code == 200, (path, response.status_code)
            assert response.headers["access-control-allow-origin"] == "https://app.example.com"
            assert "mcp-protocol-version" in response.headers["access-control-allow-headers"]
            assert "access-control-allow-credentials" not in response.headers
        registered = requests.post(f"{server.url}/oauth/register", json={"redirect_uris": [REDIRECT]}, timeout=10,
                                   headers={"origin": "https://app.example.com"})
        assert registered.headers["access-control-allow-origin"] == "https://app.example.com"
        page = requests.options(f"{server.url}/oauth/authorize", timeout=10, headers={
            "origin": "https://app.example.com", "access-control-request-method": "GET"})
        assert "access-control-allow-origin" not in page.headers, "the browser flow is not for scripts"
    finally:
        server.stop()


def test_the_database_file_is_private_to_the_server(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-dbmode")
    try:
        assert register(server).status_code == 201
        assert (tmp_path / "auth.db").stat().st_mode & 0o777 == 0o600
        log = server.process.log()
        assert "\x1b[" not in log, "no colour codes in a log file"
    finally:
        server.stop()


def test_the_scheduled_purge_deletes_clients_never_used_and_keeps_used_ones(tmp_path, log_dir):
    server = start(tmp_path, log_dir, "edges-purge", server={"purge_interval_seconds": 1},
                   registration={"unused_client_seconds": 3})
    try:
        unused = register(server).json()
        used = register(server).json()
        refresh_token = login(server, used)  # its first authorization marks it used

        def known(client):
            _, challenge = pkce()
            page = requests.get(f"{server.url}/oauth/authorize", allow_redirects=False, timeout=10, params={
                "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
                "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{server.url}/mcp"})
            return page.status_code != 400

        wait_until(lambda: "clients=1" in server.process.log(), 30, "a purge that deletes the unused client")
        assert not known(unused), "the client never used is gone"
        assert known(used)
        refreshed = requests.post(f"{server.url}/oauth/token", timeout=10, data={
            "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": used["client_id"]})
        assert refreshed.status_code == 200, refreshed.text
    finally:
        server.stop()
