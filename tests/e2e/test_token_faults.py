"""The token endpoint under faults: a SIGKILL in the middle of refreshes, fifty concurrent
refreshes of one token, refused refreshes, reuse after the grace, malformed bodies, and an
`oauth2` upstream without an encryption key. The server runs on its own (no Envoy) over SQLite."""

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
import requests

from authstack import AUTHSERVER, REDIRECT, AuthServer, pkce, query, write_key
from browser import Browser
from harness import free_port, wait_until

USERS = "users:\n- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers]}\n"
SESSIONS = 16


class Server:
    """The binary on a SQLite file in `workdir`; `start()` again reopens the same database."""

    def __init__(self, log_dir, workdir, lifetimes=None):
        self.log_dir, self.workdir, self.port = log_dir, workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.resource = f"{self.url}/mcp"
        (workdir / "users.yaml").write_text(USERS)
        self.key = write_key(workdir / "key.pem", "ec")
        self.config = {"issuer": self.url, "resources": [self.resource], "database": f"sqlite://{workdir}/auth.db?mode=rwc",
                       "scopes": ["mcp:tools", "offline_access"],
                       "upstream": {"type": "dev", "users_file": str(workdir / "users.yaml")},
                       "registration": {"confidential_clients": True}, "lifetimes": lifetimes or {}}
        self.starts = 0
        self.start()

    def start(self):
        self.starts += 1
        self.server = AuthServer(self.log_dir, self.workdir, self.config, self.port, [self.key],
                                 name=f"{self.workdir.name}-{self.starts}")

    def kill(self):
        """SIGKILL: no shutdown, no flush, whatever was in flight is cut."""
        os.killpg(self.server.process.proc.pid, signal.SIGKILL)
        self.server.process.proc.wait()
        self.server.stop()

    def client(self):
        response = requests.post(f"{self.url}/oauth/register", json={"client_name": "faults", "redirect_uris": [REDIRECT]}, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()["client_id"]

    def login(self, client_id):
        """A refresh token through the dev login (consent approved)."""
        verifier, challenge = pkce()
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "code_challenge": challenge,
                  "code_challenge_method": "S256", "state": "s", "resource": self.resource, "scope": "mcp:tools offline_access"}
        landing = Browser().authorize(f"{self.url}/oauth/authorize?{urlencode(params)}", "alice")
        response = requests.post(f"{self.url}/oauth/token", data={
            "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client_id}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["refresh_token"]

    def refresh(self, client_id, token, **extra):
        return requests.post(f"{self.url}/oauth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                              "refresh_token": token, **extra}, timeout=30)

    def stop(self):
        self.server.stop()


@pytest.fixture
def server(log_dir, tmp_path):
    server = Server(log_dir, tmp_path)
    yield server
    server.stop()


class Session:
    """A client refreshing in a loop; it keeps the last refresh token it got an answer for."""

    def __init__(self, server, client_id, token):
        self.server, self.client_id, self.token = server, client_id, token
        self.refreshes = 0
        self.error = None

    def run(self):
        while True:
            try:
                response = self.server.refresh(self.client_id, self.token)
            except requests.RequestException:
                return  # the server died with this request in flight (or before it)
            if response.status_code != 200:
                self.error = response.text
                return
            self.token = response.json()["refresh_token"]
            self.refreshes += 1


def test_a_sigkill_under_refresh_load_loses_no_session(server):
    client_id = server.client()
    sessions = [Session(server, client_id, server.login(client_id)) for _ in range(SESSIONS)]
    threads = [threading.Thread(target=session.run, daemon=True) for session in sessions]
    for thread in threads:
        thread.start()
    wait_until(lambda: all(s.refreshes >= 3 for s in sessions), 60, "every session refreshing")
    server.kill()
    for thread in threads:
        thread.join(timeout=30)
    assert not [s.error for s in sessions if s.error], "no refresh was refused before the kill"
    server.start()
    # Each session retries the last token it sent if that got no answer, which is the token it holds.
    answers = [server.refresh(client_id, s.token) for s in sessions]
    lost = [a.text for a in answers if a.status_code != 200]
    resent = server.server.process.log().count("successor resent")
    print(f"sessions lost to a SIGKILL under refresh load: {len(lost)} of {SESSIONS} "
          f"({resent} had their refresh committed but unanswered, and got its successor again)")
    assert not lost, lost
    for session, answer in zip(sessions, answers):
        again = server.refresh(client_id, answer.json()["refresh_token"])
        assert again.status_code == 200, f"the family lives on: {again.text}"


def test_fifty_concurrent_refreshes_of_one_token_hand_out_one_successor_that_keeps_working(server):
    client_id = server.client()
    token = server.login(client_id)
    barrier = threading.Barrier(50)

    def refresh(_):
        barrier.wait()
        return server.refresh(client_id, token)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(refresh, range(50)))
    assert [a.status_code for a in answers] == [200] * 50, [a.text for a in answers if a.status_code != 200]
    successors = {a.json()["refresh_token"] for a in answers}
    assert len(successors) == 1, "one winner; the others get its successor"
    next_one = server.refresh(client_id, successors.pop())
    assert next_one.status_code == 200, f"the family was not revoked: {next_one.text}"


def test_a_refused_refresh_burns_nothing(server):
    client_id = server.client()
    token = server.login(client_id)
    wider = server.refresh(client_id, token, scope="mcp:tools mcp:admin")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    other = server.refresh(client_id, token, resource="https://elsewhere.example.com/mcp")
    assert other.status_code == 400 and other.json()["error"] == "invalid_target"
    still = server.refresh(client_id, token)
    assert still.status_code == 200, f"the refused requests left the token usable: {still.text}"
    narrower = server.refresh(client_id, still.json()["refresh_token"], scope="offline_access")
    assert narrower.status_code == 200 and narrower.json()["scope"] == "offline_access"
    log = server.server.process.log()
    assert "token request refused" in log and client_id in log, "refusals are logged with the client"
    assert token not in log and still.json()["refresh_token"] not in log, "never a token"


def test_reuse_after_the_grace_revokes_the_family(log_dir, tmp_path):
    server = Server(log_dir, tmp_path, lifetimes={"refresh_reuse_grace_seconds": 1})
    try:
        client_id = server.client()
        token = server.login(client_id)
        successor = server.refresh(client_id, token).json()["refresh_token"]

        def reuse_refused():
            answer = server.refresh(client_id, token)
            if answer.status_code == 200:
                assert answer.json()["refresh_token"] == successor, "within the grace: the same successor"
                return False
            assert answer.json()["error"] == "invalid_grant", answer.text
            return True

        wait_until(reuse_refused, 10, "the grace to pass")
        dead = server.refresh(client_id, successor)
        assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant", "the family is revoked"
    finally:
        server.stop()


def test_introspection_tells_an_authenticated_resource_server_what_is_active(server):
    metadata = requests.get(f"{server.url}/.well-known/oauth-authorization-server", timeout=10).json()
    introspect_url = metadata["introspection_endpoint"]
    assert introspect_url == f"{server.url}/oauth/introspect"
    assert metadata["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]
    rs = requests.post(f"{server.url}/oauth/register", json={
        "client_name": "resource-server", "redirect_uris": ["https://rs.example.com/cb"], "scope": "mcp:tools",
        "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]}, timeout=10).json()
    auth = (rs["client_id"], rs["client_secret"])
    access = requests.post(f"{server.url}/oauth/token", auth=auth, data={"grant_type": "client_credentials"}, timeout=10).json()["access_token"]
    answer = requests.post(introspect_url, auth=auth, data={"token": access}, timeout=10).json()
    assert answer["active"] is True and answer["aud"] == server.resource and answer["client_id"] == rs["client_id"]
    app = server.client()
    refresh_token = server.login(app)
    assert requests.post(introspect_url, auth=auth, data={"token": refresh_token}, timeout=10).json() == {"active": False}, \
        "another client's refresh token is not disclosed"
    assert requests.post(introspect_url, auth=auth, data={"token": "garbage"}, timeout=10).json() == {"active": False}
    public = requests.post(introspect_url, data={"token": access, "client_id": app}, timeout=10)
    assert public.status_code == 401 and public.json()["error"] == "invalid_client"
    revoke = requests.post(f"{server.url}/oauth/revoke", auth=auth, data={"token": access}, timeout=10)
    assert revoke.status_code == 400 and revoke.json()["error"] == "unsupported_token_type"


def test_a_federated_refresh_without_an_upstream_session_is_refused(server, tmp_path):
    """A family signed in before federation was configured (so no upstream session is kept for
    it) cannot be re-checked with the identity provider: refused, not refreshed with stale groups."""
    client_id = server.client()
    token = server.login(client_id)
    server.stop()
    (tmp_path / "secret").write_text("s")
    (tmp_path / "enc.key").write_bytes(os.urandom(32))
    server.config["upstream"] = {
        "type": "oauth2", "authorization_url": "https://idp.example.com/auth", "token_url": "https://idp.example.com/token",
        "userinfo_url": "https://idp.example.com/me", "client_id": "c", "client_secret_file": str(tmp_path / "secret")}
    server.config["encryption_key_file"] = str(tmp_path / "enc.key")
    server.start()
    refused = server.refresh(client_id, token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert "token request refused" in server.server.process.log()


def test_rotation_does_not_outlive_the_absolute_refresh_lifetime(log_dir, tmp_path):
    server = Server(log_dir, tmp_path, lifetimes={"refresh_absolute_seconds": 2})
    try:
        client_id = server.client()
        held = {"token": server.login(client_id), "refreshes": 0}

        def refused():
            answer = server.refresh(client_id, held["token"])
            if answer.status_code == 200:
                held["token"], held["refreshes"] = answer.json()["refresh_token"], held["refreshes"] + 1
                return False
            assert answer.json()["error"] == "invalid_grant", answer.text
            return True

        wait_until(refused, 15, "the family's absolute lifetime to end", interval=0.2)
        assert held["refreshes"] >= 1, "rotation worked until then"
    finally:
        server.stop()


def test_malformed_bodies_get_rfc_6749_json(server):
    token_url = f"{server.url}/oauth/token"
    for response in (
        requests.post(token_url, json={"grant_type": "refresh_token"}, timeout=10),  # not a form
        requests.post(token_url, data="x=" + "a" * 20 * 1024, timeout=10,
                      headers={"content-type": "application/x-www-form-urlencoded"}),  # over the token endpoint's 16 KiB
        requests.post(f"{server.url}/oauth/revoke", data="token=a&token=b", timeout=10,
                      headers={"content-type": "application/x-www-form-urlencoded"}),  # a field twice
    ):
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"] == "invalid_request"


def test_an_oauth2_upstream_without_an_encryption_key_does_not_start(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s")
    config = tmp_path / "oauth2.yaml"
    config.write_text(json.dumps({"issuer": "http://127.0.0.1:1", "resources": ["http://127.0.0.1:1/mcp"], "upstream": {
        "type": "oauth2", "authorization_url": "https://idp.example.com/auth", "token_url": "https://idp.example.com/token",
        "userinfo_url": "https://idp.example.com/me", "client_id": "c", "client_secret_file": str(secret)}}))
    result = subprocess.run([str(AUTHSERVER), "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "`encryption_key_file`" in result.stderr, result.stderr
