"""What a platform team meets when deploying: readiness that tells the truth about the identity
provider and the database, clear start-up errors, and (further down) the image the project builds."""

import subprocess

import requests

from authstack import AUTHSERVER, REDIRECT, AuthServer, pkce
from browser import Browser
from harness import free_port, wait_until
from test_federation import server_config, start_idp


def login_start(base, resource):
    """Registers a client and follows `/oauth/authorize` to the login start; its answer."""
    client = requests.post(f"{base}/oauth/register", json={"redirect_uris": [REDIRECT]}, timeout=10).json()
    _, challenge = pkce()
    browser = Browser()
    browser.origin = base
    authorize = browser.get(requests.Request("GET", f"{base}/oauth/authorize", params={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource,
        "scope": "mcp:tools"}).prepare().url)
    assert authorize.status_code == 303, authorize.text
    return browser.get(base + authorize.headers["location"])


def test_an_identity_provider_that_is_down_keeps_the_server_unready_and_logins_get_a_clear_page(log_dir, tmp_path):
    idp_port, port = free_port(), free_port()  # nothing listens on idp_port yet
    base = f"http://127.0.0.1:{port}"
    resource = f"{base}/mcp"
    idp_url = f"http://127.0.0.1:{idp_port}/oauth2/default"
    config = server_config(tmp_path, base, resource, idp_url, "okta", "gateway-secret")
    server = AuthServer(log_dir, tmp_path, config, port, [], name="authserver-idp-down")
    idp = None
    try:
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200, "alive, only not ready"
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.text == "identity provider unreachable"
        page = login_start(base, resource)
        assert page.status_code == 503
        assert "The identity provider is unreachable; try again later." in page.text
        for detail in (str(idp_port), "refused", "os error", "127.0.0.1"):
            assert detail not in page.text, f"no upstream detail on the page: {detail}"
        assert "identity provider unreachable" in server.process.log(), "the cause is in the log"

        idp = start_idp(log_dir, "okta", idp_port, [f"{base}/oauth/callback"])
        wait_until(lambda: requests.get(f"{base}/readyz", timeout=10).status_code == 200, 30, "ready once the IdP is up")
        started = login_start(base, resource)
        assert started.status_code == 303 and started.headers["location"].startswith(idp_url)
    finally:
        if idp:
            idp.stop()
        server.stop()


def test_an_unreachable_postgresql_stops_the_start_naming_the_host_and_not_the_password():
    closed = free_port()
    result = subprocess.run(
        [str(AUTHSERVER), "--issuer", "http://127.0.0.1:1", "--resource", "http://127.0.0.1:1/mcp",
         "--database", f"postgres://mcp_auth:hunter2-secret@127.0.0.1:{closed}/mcp_auth"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{closed}" in result.stderr, result.stderr
    assert "Connection refused" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
