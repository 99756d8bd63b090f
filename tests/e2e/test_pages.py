"""The pages a person trusts: with `branding` configured, the login, consent and error pages show
the product's name, logo and colours (checked in headless Chromium, with screenshots saved under
target/screenshots/ for a reviewer); every error a browser can meet is such a page with the right
status, never the framework's text, while the API endpoints keep their JSON; a bad branding value
stops the server naming the key."""

import datetime
import ipaddress
import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authstack import AUTHSERVER, REDIRECT, AuthServer, pkce, query, write_key
from browser import screenshots
from harness import ROOT, free_port

NAME = "Acme MCP"
PRIMARY, BACKGROUND = "#0b5fff", "#101820"
SUPPORT = "https://help.acme.example/mcp"
USERS = "users:\n- {username: alice, password: password, email: alice@example.com, name: Alice}\n"
LOGO = (b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40">'
        b'<rect width="120" height="40" rx="6" fill="#ffb000"/></svg>')


def rgb(hex_colour):
    """How Chromium reports a computed colour."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.fixture(scope="module")
def logo(tmp_path_factory):
    """The logo on its own https origin (a self-signed certificate for 127.0.0.1)."""
    workdir = tmp_path_factory.mktemp("logo")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (workdir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))

    class Logo(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "image/svg+xml")
            self.send_header("content-length", str(len(LOGO)))
            self.end_headers()
            self.wfile.write(LOGO)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Logo)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def branded(log_dir, tmp_path_factory, logo):
    workdir = tmp_path_factory.mktemp("branded")
    (workdir / "users.yaml").write_text(USERS)
    port = free_port()
    issuer = f"http://localhost:{port}"
    server = AuthServer(log_dir, workdir, {
        "issuer": issuer, "resources": [f"{issuer}/mcp"], "database": f"sqlite://{workdir}/auth.db",
        "upstream": {"type": "dev", "users_file": str(workdir / "users.yaml")},
        "branding": {"name": NAME, "logo_url": f"{logo}/brand/logo.svg", "primary_color": PRIMARY,
                     "background_color": BACKGROUND, "support_url": SUPPORT},
    }, port, [write_key(workdir / "signing.pem", "ec")], name="authserver-branded")
    server.issuer = issuer
    yield server
    server.stop()


def register(server):
    response = requests.post(f"{server.issuer}/oauth/register", json={"client_name": "Branded Test",
                                                                      "redirect_uris": [REDIRECT]}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def authorize_url(server, client):
    _, challenge = pkce()
    return f"{server.issuer}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT, "state": "s",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{server.issuer}/mcp",
        "scope": "mcp:tools"})


def test_branded_login_consent_and_error_pages_in_headless_chromium(branded, logo):
    issuer = branded.issuer
    shots, prefix = screenshots(), "test_branded_login_consent_and_error_pages_in_headless_chromium"
    spec = {"shots": str(shots), "prefix": prefix,
            "flow": {"authorize": authorize_url(branded, register(branded)), "username": "alice", "password": "password"},
            "visits": [
                {"name": "error-no-sign-in", "url": f"{issuer}/oauth/login"},
                {"name": "error-expired", "url": f"{issuer}/oauth/consent?request=gone-or-never-was"},
                {"name": "error-malformed", "url": f"{issuer}/oauth/login?request=a&request=b"},
                {"name": "error-unknown-client", "url": f"{issuer}/oauth/authorize?client_id=unknown"},
                {"name": "error-not-found", "url": f"{issuer}/oauth/nowhere"},
            ],
            "posts": [{"name": "error-bad-form", "url": f"{issuer}/oauth/login", "fields": {"request": "r"}}]}
    result = subprocess.run(["node", str(ROOT / "tests" / "browser" / "pages.mjs"), json.dumps(spec)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {page["name"]: page for page in json.loads(result.stdout.strip().splitlines()[-1])}

    answer = query(seen.pop("landing")["url"])
    assert answer["code"] and answer["state"] == "s", "the branded flow still ends at the client"
    expected = {
        "login": (200, "Sign in", None),
        "consent": (200, "Allow access?", None),
        "error-no-sign-in": (400, "Sign-in cannot continue", "opened without one"),
        "error-expired": (400, "Sign-in cannot continue", "has expired or is unknown"),
        "error-malformed": (400, "Sign-in cannot continue", "malformed"),
        "error-unknown-client": (400, "Sign-in cannot continue", "not registered here"),
        "error-not-found": (404, "Page not found", "no page at this address"),
        "error-bad-form": (400, "Sign-in cannot continue", "form is incomplete"),
    }
    assert set(seen) == set(expected)
    for name, (status, heading, error) in expected.items():
        page = seen[name]
        assert (page["status"], page["heading"]) == (status, heading), page
        assert page["type"].startswith("text/html"), page
        if error:
            assert error in page["error"], page
        assert page["title"] == f"{heading} — {NAME}", page
        assert page["brand"] == NAME, page
        assert page["logo"] == {"loaded": True, "src": f"{logo}/brand/logo.svg"}, f"{name}: the CSP let the logo in"
        assert page["support"] == SUPPORT, page
        assert page["background"] == rgb(BACKGROUND) and page["text"] == "rgb(255, 255, 255)", page
        assert page["rule"] == rgb(PRIMARY), page
        assert (shots / f"{prefix}-{name}.png").stat().st_size > 1000
    for name in ("login", "consent"):
        assert (seen[name]["button"], seen[name]["buttonText"]) == (rgb(PRIMARY), "rgb(255, 255, 255)"), seen[name]


def test_every_error_a_browser_can_meet_is_a_page_and_the_api_keeps_its_json(branded, logo):
    issuer, page_accept = branded.issuer, {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    policy = f"default-src 'none'; style-src 'unsafe-inline'; img-src {logo}; frame-ancestors 'none'"
    for method, path, data, status in [
        ("GET", "/oauth/login", None, 400),
        ("GET", "/oauth/consent?request=a&request=b", None, 400),
        ("GET", "/oauth/callback", None, 404),  # no identity provider to come back from
        ("POST", "/oauth/authorize", None, 405),
        ("POST", "/oauth/consent", "request=r", 400),
        ("POST", "/oauth/login", "x" * 100_000, 413),
        ("GET", "/oauth/logn", None, 404),
    ]:
        response = requests.request(method, issuer + path, data=data, headers={
            **page_accept, "content-type": "application/x-www-form-urlencoded"}, timeout=10)
        assert response.status_code == status, (method, path, response.text[:300])
        assert response.headers["content-type"].startswith("text/html"), (method, path)
        assert response.headers["content-security-policy"] == policy, "only the logo's origin is added"
        assert f'<span id="brand-name">{NAME}</span>' in response.text, (method, path)
    # The API: RFC 6749 JSON, whoever asks.
    token = requests.post(f"{issuer}/oauth/token", data="x" * 100_000, headers=page_accept, timeout=10)
    assert token.status_code == 413 and token.json()["error"] == "invalid_request"
    register = requests.post(f"{issuer}/oauth/register", data="{not json", headers=page_accept, timeout=10)
    assert register.status_code == 400 and register.json()["error"] == "invalid_client_metadata"
    revoke = requests.post(f"{issuer}/oauth/revoke", data={"token": "t"}, timeout=10)
    assert revoke.headers["content-type"] == "application/json", revoke.text


def test_a_bad_branding_value_stops_the_server_naming_the_key_and_the_value(tmp_path):
    for branding, key, quoted in [
        ({"primary_color": "blue"}, "branding.primary_color", "`blue`"),
        ({"logo_url": "http://cdn.example.com/logo.png"}, "branding.logo_url", "`http://cdn.example.com/logo.png`"),
        ({"support_url": "javascript:alert(1)"}, "branding.support_url", "`javascript:alert(1)`"),
    ]:
        config = tmp_path / "bad.yaml"
        config.write_text(json.dumps({"issuer": "http://localhost:1", "resources": ["http://localhost:1/mcp"],
                                      "database": f"sqlite://{tmp_path}/never.db", "branding": branding}))
        result = subprocess.run([str(AUTHSERVER), "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert f"`{key}`" in result.stderr and quoted in result.stderr, result.stderr
        assert not (tmp_path / "never.db").exists(), "refused before anything started"
