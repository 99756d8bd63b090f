"""Two authorization server replicas on one real PostgreSQL: a client registered on one logs in
through the other, a refresh token rotated on one is dead on the other, and a code two replicas
are asked to redeem at once is redeemed once."""

import threading
from urllib.parse import urlencode

import pytest
import requests

from authstack import REDIRECT, AuthServer, claims_of, pkce, query, write_key
from browser import Browser
from harness import free_port

RESOURCE = "https://mcp.example.com/mcp"
USERS = "users:\n- {username: alice, password: password, email: alice@example.com, name: Alice, groups: [mcp-developers]}\n"


class Replica:
    """One replica: its own port, the shared issuer, database and signing key."""

    def __init__(self, log_dir, workdir, name, issuer, port, database, key):
        users = workdir / "users.yaml"
        users.write_text(USERS)
        config = {"issuer": issuer, "resources": [RESOURCE], "database": database,
                  "scopes": ["mcp:tools", "offline_access"], "groups": {"prefix": "mcp-"},
                  "upstream": {"type": "dev", "users_file": str(users)}}
        self.server = AuthServer(log_dir, workdir, config, port, [key], name=name)
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path):
        return self.base + path

    def token(self, **data):
        return requests.post(self.url("/oauth/token"), data=data, timeout=10)


@pytest.fixture(scope="module")
def replicas(log_dir, database, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("replicas")
    key = write_key(workdir / "signing.pem", "ec")
    port_a, port_b = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port_a}"  # the address the load balancer would have
    a = Replica(log_dir, workdir, "authserver-replica-a", issuer, port_a, database, key)
    b = Replica(log_dir, workdir, "authserver-replica-b", issuer, port_b, database, key)
    yield a, b
    a.server.stop()
    b.server.stop()


def code_for(client, replica):
    """Alice's authorization code, the login and consent run on `replica`."""
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
              "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
              "resource": RESOURCE, "scope": "mcp:tools offline_access"}
    landing = Browser().authorize(replica.url("/oauth/authorize") + "?" + urlencode(params), "alice")
    return query(landing)["code"], verifier


def exchange(replica, client, code, verifier):
    return replica.token(grant_type="authorization_code", code=code, redirect_uri=REDIRECT, code_verifier=verifier,
                         client_id=client["client_id"], resource=RESOURCE)


def register(replica):
    response = requests.post(replica.url("/oauth/register"), json={"client_name": "replicated", "redirect_uris": [REDIRECT]},
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def test_both_replicas_are_ready_and_publish_the_same_keys(replicas):
    a, b = replicas
    assert requests.get(a.url("/readyz"), timeout=10).status_code == 200
    assert requests.get(b.url("/readyz"), timeout=10).status_code == 200
    assert requests.get(a.url("/.well-known/jwks.json"), timeout=10).json() == \
        requests.get(b.url("/.well-known/jwks.json"), timeout=10).json()


def test_a_client_registered_on_one_replica_logs_in_and_refreshes_through_the_other(replicas):
    a, b = replicas
    client = register(b)
    code, verifier = code_for(client, a)
    tokens = exchange(b, client, code, verifier)
    assert tokens.status_code == 200, tokens.text
    assert claims_of(tokens.json()["access_token"])["groups"] == ["mcp-developers"]
    first = tokens.json()["refresh_token"]
    rotated = a.token(grant_type="refresh_token", client_id=client["client_id"], refresh_token=first)
    assert rotated.status_code == 200, rotated.text
    retried = b.token(grant_type="refresh_token", client_id=client["client_id"], refresh_token=first)
    assert retried.json()["refresh_token"] == rotated.json()["refresh_token"], "a retry on B within the grace: A's successor"
    moved_on = a.token(grant_type="refresh_token", client_id=client["client_id"], refresh_token=rotated.json()["refresh_token"])
    assert moved_on.status_code == 200, moved_on.text
    reused = b.token(grant_type="refresh_token", client_id=client["client_id"], refresh_token=first)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant", "rotated on A, dead on B"
    latest = a.token(grant_type="refresh_token", client_id=client["client_id"], refresh_token=moved_on.json()["refresh_token"])
    assert latest.json()["error"] == "invalid_grant", "the reuse on B revoked the family on A too"


def test_a_refresh_token_sent_to_two_replicas_at_once_rotates_once(replicas):
    a, b = replicas
    client = register(a)
    code, verifier = code_for(client, a)
    token = exchange(a, client, code, verifier).json()["refresh_token"]
    for _ in range(5):
        answers = []
        start = threading.Barrier(2)

        def refresh(replica):
            start.wait()
            answers.append(replica.token(grant_type="refresh_token", client_id=client["client_id"], refresh_token=token))
        threads = [threading.Thread(target=refresh, args=(replica,)) for replica in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
        successors = {answer.json()["refresh_token"] for answer in answers}
        assert len(successors) == 1, "one replica won the claim; the other handed out its successor"
        token = successors.pop()


def test_a_code_sent_to_two_replicas_at_once_is_redeemed_once(replicas):
    a, b = replicas
    client = register(a)
    for _ in range(5):
        code, verifier = code_for(client, a)
        answers = []
        start = threading.Barrier(2)

        def redeem(replica):
            start.wait()
            answers.append(exchange(replica, client, code, verifier))
        threads = [threading.Thread(target=redeem, args=(replica,)) for replica in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [200, 400], [answer.text for answer in answers]
