"""`mcp-mesh-authserver admin` against a running server, as an operator runs it next to the server
(same binary, same configuration): revoking a client or a user's grants ends their refreshes and
no one else's, the client list shows what registered, keys are generated and listed as the server
publishes them, and a purge deletes what expired. Once on SQLite, once on PostgreSQL."""

import json
import os
import re
import subprocess
import time
from urllib.parse import urlencode

import jwt
import pytest
import requests

from authstack import AUTHSERVER, REDIRECT, AuthServer, pkce, query, write_key
from browser import Browser
from harness import free_port

RESOURCE = "https://mcp.example.com/mcp"
USERS = """users:
- {username: alice, password: password, email: alice@example.com, name: Alice}
- {username: bob, password: password, email: bob@example.com, name: Bob}
- {username: carol, password: password, email: carol@example.com, name: Carol}
"""
ACCESS_SECONDS = 300
UNUSED_CLIENT_SECONDS = 2


class Server:
    """The server binary with a dev login, and its admin command on the same configuration."""

    def __init__(self, log_dir, workdir, name, database):
        (workdir / "users.yaml").write_text(USERS)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.key = write_key(workdir / f"{name}-signing.pem", "ec")
        self.config = workdir / f"{name}.yaml"  # where AuthServer writes it
        self.process = AuthServer(log_dir, workdir, {
            "issuer": self.base, "resources": [RESOURCE], "database": database,
            "scopes": ["mcp:tools", "offline_access"], "upstream": {"type": "dev", "users_file": str(workdir / "users.yaml")},
            "registration": {"confidential_clients": True, "unused_client_seconds": UNUSED_CLIENT_SECONDS},
            # No scheduled purge: `admin purge` is what deletes here.
            "server": {"purge_interval_seconds": 0}, "lifetimes": {"access_seconds": ACCESS_SECONDS},
        }, port, [self.key], name=name)

    def admin(self, *args, ok=True):
        result = subprocess.run([str(AUTHSERVER), "--config", str(self.config), "admin", *args],
                                capture_output=True, text=True, timeout=60)
        assert (result.returncode == 0) == ok, f"admin {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
        return result

    def admin_json(self, *args):
        return json.loads(self.admin(*args, "--json").stdout)

    def register(self, name, **extra):
        response = requests.post(f"{self.base}/oauth/register", json={"client_name": name, "redirect_uris": [REDIRECT], **extra},
                                 timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def sign_in(self, client, user, browser=None):
        """`user` signs in to `client` (and approves it); returns the token answer."""
        verifier, challenge = pkce()
        params = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
                  "code_challenge": challenge, "code_challenge_method": "S256", "state": "s", "resource": RESOURCE,
                  "scope": "mcp:tools offline_access"}
        landing = (browser or Browser()).authorize(f"{self.base}/oauth/authorize?{urlencode(params)}", user)
        answer = requests.post(f"{self.base}/oauth/token", timeout=10, data={
            "grant_type": "authorization_code", "code": query(landing)["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client["client_id"], "resource": RESOURCE})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def refresh(self, client, tokens):
        """Refreshes `tokens` (updated in place when it works); returns the response."""
        response = requests.post(f"{self.base}/oauth/token", timeout=10, data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client["client_id"]})
        if response.status_code == 200:
            tokens.update(response.json())
        return response

    def stop(self):
        self.process.stop()


@pytest.fixture(scope="module")
def server(log_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("admin")
    server = Server(log_dir, workdir, "authserver-admin", f"sqlite://{workdir}/auth.db")
    yield server
    server.stop()


def refused(response, error):
    return response.status_code in (400, 401) and response.json()["error"] == error


def test_clients_list_shows_every_registered_client_for_scripts_and_people(server):
    public = server.register("Admin <Test> Client")
    machine = requests.post(f"{server.base}/oauth/register", timeout=10, json={
        "client_name": "nightly-job", "redirect_uris": ["https://jobs.example.com/cb"], "scope": "mcp:tools",
        "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]}).json()
    listed = {client["client_id"]: client for client in server.admin_json("clients", "list")}
    assert listed[public["client_id"]]["type"] == "public"
    assert listed[public["client_id"]]["client_name"] == "Admin <Test> Client"
    assert listed[public["client_id"]]["redirect_hosts"] == ["127.0.0.1"]
    assert abs(listed[public["client_id"]]["created_at"] - time.time()) < 60
    assert listed[public["client_id"]]["last_used_at"] is None, "registered, never used"
    assert listed[machine["client_id"]]["type"] == "confidential"
    assert listed[machine["client_id"]]["redirect_hosts"] == ["jobs.example.com"]
    text = server.admin("clients", "list").stdout
    line = next(line for line in text.splitlines() if line.startswith(public["client_id"]))
    assert "public" in line and "Admin <Test> Client" in line and line.endswith("never"), text


def test_revoking_a_client_ends_its_refreshes_and_spares_the_other_clients(server):
    revoked, other = server.register("to be revoked"), server.register("kept")
    tokens, kept = server.sign_in(revoked, "alice"), server.sign_in(other, "alice")
    used = {c["client_id"]: c for c in server.admin_json("clients", "list")}[revoked["client_id"]]
    assert abs(used["last_used_at"] - time.time()) < 60, "signing in used it"

    answer = server.admin("clients", "revoke", revoked["client_id"]).stdout
    assert f"Revoked client {revoked['client_id']}" in answer
    assert "1 sign-in can no longer be refreshed; 1 consent deleted" in answer
    assert f"at most {ACCESS_SECONDS} s" in answer and "without asking this server" in answer

    # The client is gone: the refresh is refused as a client unknown here, so an MCP client
    # registers again (and its user signs in and consents again).
    assert refused(server.refresh(revoked, tokens), "invalid_client")
    page = requests.get(f"{server.base}/oauth/authorize", params={"client_id": revoked["client_id"]}, timeout=10)
    assert page.status_code == 400 and "not registered" in page.text
    assert server.refresh(other, kept).status_code == 200, "another client of the same user"

    again = server.admin("clients", "revoke", revoked["client_id"]).stdout
    assert "was already revoked" in again and "0 sign-ins" in again
    for_scripts = server.admin_json("clients", "revoke", revoked["client_id"])
    assert for_scripts["registration"] == "revoked_before" and for_scripts["families_revoked"] == 0
    assert for_scripts["access_tokens_valid_seconds"] == ACCESS_SECONDS
    unknown = server.admin("clients", "revoke", "no-such-client", ok=False)
    assert "no client `no-such-client` is registered" in unknown.stderr
    assert revoked["client_id"] not in {c["client_id"] for c in server.admin_json("clients", "list")}
    everyone = {c["client_id"]: c for c in server.admin_json("clients", "list", "--all")}
    assert everyone[revoked["client_id"]]["revoked_at"] is not None


def test_revoking_a_users_grants_ends_their_refreshes_and_no_one_elses(server):
    client = server.register("shared")
    alice_browser = Browser()
    alice, bob = server.sign_in(client, "alice", alice_browser), server.sign_in(client, "bob")
    held = server.admin_json("grants", "list", "--user", "dev:alice")
    assert client["client_id"] in {family["client_id"] for family in held["sign_ins"]}
    assert client["client_id"] in {consent["client_id"] for consent in held["consents"]}

    answer = server.admin("grants", "revoke", "--user", "dev:alice").stdout
    count = len(held["sign_ins"])
    assert f"Revoked {count} sign-in{'s' if count > 1 else ''} of dev:alice" in answer, answer
    assert f"at most {ACCESS_SECONDS} s" in answer

    assert refused(server.refresh(client, alice), "invalid_grant")
    assert server.refresh(client, bob).status_code == 200, "bob's sign-in is his own"
    assert server.admin_json("grants", "list", "--user", "dev:alice") == {"subject": "dev:alice", "sign_ins": [], "consents": []}
    # Her consent was forgotten: signing in again asks again, in the same browser.
    server.sign_in(client, "alice", alice_browser)
    assert sum('action="/oauth/consent"' in page for page in alice_browser.pages) == 2
    nothing = server.admin("grants", "revoke", "--user", "alice").stdout
    assert nothing.startswith("Nothing to revoke") and "dev:<username>" in nothing


def test_keys_are_generated_and_listed_as_the_server_publishes_them(server, tmp_path):
    published = requests.get(f"{server.base}/.well-known/jwks.json", timeout=10).json()["keys"]
    machine = requests.post(f"{server.base}/oauth/register", timeout=10, json={
        "redirect_uris": ["https://jobs.example.com/cb"], "scope": "mcp:tools",
        "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]}).json()
    token = requests.post(f"{server.base}/oauth/token", auth=(machine["client_id"], machine["client_secret"]),
                          data={"grant_type": "client_credentials"}, timeout=10).json()["access_token"]
    current = server.admin_json("keys", "list", "--signing-key", str(server.key))
    assert [(k["role"], k["algorithm"], k["kid"]) for k in current] == [("signs", "ES256", published[0]["kid"])]
    assert jwt.get_unverified_header(token)["kid"] == current[0]["kid"]

    following = tmp_path / "next.pem"
    made = server.admin_json("keys", "generate", "--out", str(following), "--algorithm", "rs256")
    assert made["algorithm"] == "RS256" and os.stat(following).st_mode & 0o777 == 0o600
    before = following.read_bytes()
    refused_again = server.admin("keys", "generate", "--out", str(following), ok=False)
    assert "never overwritten" in refused_again.stderr and following.read_bytes() == before
    # Step 1 of the runbook: the new key published second, the current one still signing.
    both = server.admin_json("keys", "list", "--signing-key", str(server.key), "--signing-key", str(following))
    assert [(k["role"], k["kid"]) for k in both] == [("signs", current[0]["kid"]), ("published", made["kid"])]


def test_a_purge_deletes_what_expired_and_says_how_much_per_table(server):
    # A registration never used past `unused_client_seconds` is what expires here without waiting.
    client = server.register("never used")
    time.sleep(UNUSED_CLIENT_SECONDS + 1)
    purged = server.admin_json("purge")
    assert set(purged) == {"auth_requests", "upstream_logins", "used_assertions", "codes", "refresh_tokens",
                           "upstream_tokens", "revoked_families", "clients", "consents"}
    assert purged["clients"] >= 1
    assert client["client_id"] not in {c["client_id"] for c in server.admin_json("clients", "list", "--all")}
    text = server.admin("purge").stdout
    assert re.search(r"^clients +0$", text, re.M) and re.search(r"^total +0$", text, re.M), text


def test_the_admin_command_on_postgresql(log_dir, database, tmp_path):
    """The same statements on PostgreSQL (the cluster is shared with the replica tests: carol is
    this test's own user)."""
    server = Server(log_dir, tmp_path, "authserver-admin-pg", database)
    try:
        kept, revoked = server.register("pg kept"), server.register("pg revoked")
        tokens, lost = server.sign_in(kept, "carol"), server.sign_in(revoked, "carol")
        assert len(server.admin_json("grants", "list", "--user", "dev:carol")["sign_ins"]) == 2
        answer = server.admin("clients", "revoke", revoked["client_id"]).stdout
        assert "1 sign-in can no longer be refreshed; 1 consent deleted" in answer
        assert refused(server.refresh(revoked, lost), "invalid_client")
        answer = server.admin("grants", "revoke", "--user", "dev:carol").stdout
        assert "Revoked 1 sign-in of dev:carol" in answer and "1 consent deleted" in answer
        assert refused(server.refresh(kept, tokens), "invalid_grant")
        listed = {c["client_id"] for c in server.admin_json("clients", "list")}
        assert kept["client_id"] in listed and revoked["client_id"] not in listed
        assert "clients" in server.admin_json("purge")
    finally:
        server.stop()
