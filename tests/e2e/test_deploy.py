"""What a platform team meets when deploying: readiness that tells the truth about the identity
provider and the database, clear start-up errors, and (further down) the image the project builds."""

import collections
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
import time

import jwt
import pytest
import requests
import yaml

from authstack import AUTHSERVER, REDIRECT, AuthServer, claims_of, generate_key, pkce, write_key
from browser import Browser
from harness import ROOT, Envoy, McpSession, Process, free_port, port_open, wait_until
from test_authserver import POLICIES, AuthServer as DevAuthServer
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


# The image. `make test` assembles it around the debug binary (the static release build that
# `make image` ships takes minutes with LTO); the static binary's own checks run when it is there.
STATIC = ROOT / "target" / "x86_64-unknown-linux-gnu" / "release" / "mcp-mesh-authserver"


def build_image(binary, out):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "image.py"), str(binary), str(out), "0.1.0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def read_image(out):
    """The manifest, config and root filesystem of the layout's one image, each checked against its digest."""
    layout = out / "layout"

    def blob(descriptor):
        data = (layout / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == descriptor["digest"].removeprefix("sha256:")
        assert len(data) == descriptor["size"]
        return data

    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    manifest = json.loads(blob(entry))
    config = json.loads(blob(manifest["config"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    rootfs = gzip.decompress(blob(layer))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(rootfs).hexdigest()}"]
    return entry["digest"], config, rootfs


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "image"
    stdout = build_image(AUTHSERVER, out)
    digest, config, rootfs = read_image(out)
    root = out.parent / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(rootfs)) as tar:
        tar.extractall(root, filter="tar")
    return {"out": out, "stdout": stdout, "digest": digest, "config": config, "rootfs": rootfs, "root": root}


def test_the_image_runs_as_a_non_root_user_with_the_server_as_entrypoint(image):
    config = image["config"]["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/mcp-mesh-authserver"]
    assert image["config"]["os"] == "linux" and image["config"]["architecture"] == "amd64"
    with tarfile.open(fileobj=io.BytesIO(image["rootfs"])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "bin/sh" not in members and not any(name.startswith("bin/") for name in members), "no shell"
    assert members["usr/local/bin/mcp-mesh-authserver"].mode == 0o755
    assert "nonroot:x:65532:65532:" in (image["root"] / "etc" / "passwd").read_text()
    assert members["var/lib/mcp-auth"].uid == 65532, "the SQLite directory is the user's"


def test_the_istio_manifest_is_pinned_to_the_image_digest_and_runs_as_its_user(image):
    rendered = image["out"].parent / "istio" / "authserver.yaml"
    documents = list(yaml.safe_load_all(rendered.read_text()))
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == f"ghcr.io/example/mcp-mesh-authserver:0.1.0@{image['digest']}"
    assert image["digest"] in image["stdout"]
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == image["config"]["config"]["User"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_same_binary_gives_the_same_image_digest(image, tmp_path):
    build_image(AUTHSERVER, tmp_path / "again")
    assert read_image(tmp_path / "again")[0] == image["digest"]


def test_the_binary_from_the_image_layer_starts_and_answers_healthz(image, log_dir, tmp_path):
    binary = image["root"] / "usr" / "local" / "bin" / "mcp-mesh-authserver"
    assert "--config" in subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30).stdout
    port = free_port()
    server = Process("authserver-from-image", [str(binary), "--issuer", f"http://127.0.0.1:{port}",
                                               "--resource", f"http://127.0.0.1:{port}/mcp", "--listen", f"127.0.0.1:{port}",
                                               "--database", f"sqlite://{tmp_path}/auth.db?mode=rwc"], log_dir)
    try:
        wait_until(lambda: port_open(port) or (not server.alive() and pytest.fail(server.log())), 30, "the server from the image")
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok"
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
    finally:
        server.stop()


@pytest.mark.skipif(not STATIC.exists(), reason="`make image` builds the static binary")
def test_the_shipped_binary_is_static_and_runs_alone_in_its_image_as_the_non_root_user(tmp_path):
    with open(STATIC, "rb") as elf:
        header = elf.read(64)
        assert header[:4] == b"\x7fELF"
        phoff, phentsize, phnum = struct.unpack_from("<Q", header, 32)[0], *struct.unpack_from("<HH", header, 54)
        elf.seek(phoff)
        types = [struct.unpack_from("<I", elf.read(phentsize))[0] for _ in range(phnum)]
    assert 3 not in types, "no PT_INTERP: no dynamic loader, no libc needed in the image"
    build_image(STATIC, tmp_path / "image")
    _, _, rootfs = read_image(tmp_path / "image")
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(rootfs)) as tar:
        tar.extractall(root, filter="tar")
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    # Nothing but the layer: no shell, no libc, the image's user.
    result = subprocess.run(["chroot", "--userspec=65532:65532", str(root), "/usr/local/bin/mcp-mesh-authserver", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "mcp-mesh-authserver" in result.stdout, result.stderr


# Signing-key rotation under traffic, as docs/runbooks.md describes it: publish, switch, overlap, retire.
ACCESS_SECONDS = 10  # short, so the overlap is seconds; long enough that retiring early would be seen
class Traffic(threading.Thread):
    """Machine-client traffic: a fresh token (straight from the server, retried while it restarts),
    then an MCP call through Envoy + the filter with every token still held that is not about to
    expire. A refused call with an unexpired token is a dropped valid token."""

    def __init__(self, token_url, session, client):
        super().__init__(daemon=True)
        self.token_url, self.session, self.client = token_url, session, client
        self.held = []  # (token, exp, kid), oldest first
        self.dropped = []
        self.calls = collections.Counter()  # accepted calls per signing kid
        self.stopping = threading.Event()

    def token(self):
        try:
            response = requests.post(self.token_url, auth=(self.client["client_id"], self.client["client_secret"]),
                                     data={"grant_type": "client_credentials", "scope": "mcp:tools"}, timeout=10)
        except requests.ConnectionError:
            return None  # the server is restarting; a client retries
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return token, claims_of(token)["exp"], jwt.get_unverified_header(token)["kid"]

    def run(self):
        while not self.stopping.is_set():
            fresh = self.token()
            if fresh:
                self.held.append(fresh)
            # Keep the oldest live token and the two newest; skip one within a second of expiry.
            live = [held for held in self.held if held[1] > time.time() + 1]
            self.held = live[:1] + live[1:][-2:]
            for token, exp, kid in self.held:
                self.session.token = token
                answer = self.session.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                            "params": {"name": "echo", "arguments": {"message": "rotate"}}})
                if answer.status_code == 200:
                    self.calls[kid] += 1
                elif exp > time.time():
                    self.dropped.append((kid, answer.status_code, answer.text[:200]))


def test_a_signing_key_rotation_under_traffic_drops_no_valid_token(log_dir, everything, tmp_path):
    port = free_port()
    proxy = Envoy(log_dir, backend_port=everything, jwks_port=port, name="envoy-rotation",
                  jwks={"path": "/.well-known/jwks.json", "refresh_seconds": 2},
                  filter_config={"cedar": {"policies": POLICIES}})
    # B as the runbook makes it: `admin keys generate`.
    key_a, key_b = write_key(tmp_path / "a.pem", "ec"), generate_key(tmp_path / "b.pem", "rs256")
    lifetimes = {"lifetimes": {"access_seconds": ACCESS_SECONDS}}
    servers = []

    def deploy(keys):
        """A rolling update of the one replica: stop, start with `keys` (the first signs)."""
        if servers:
            servers[-1].stop()
        servers.append(DevAuthServer(log_dir, tmp_path, proxy.origin, proxy.resource, port, keys,
                                     name=f"authserver-rotation-{len(servers)}", extra=lifetimes))

    def jwks_fetched_after_deploy():
        """Waits for two JWKS fetches by the filter after now: one started after the deploy."""
        fetched = proxy.envoy_counter("cluster.authserver.upstream_rq_completed")
        wait_until(lambda: proxy.envoy_counter("cluster.authserver.upstream_rq_completed") >= fetched + 2, 30,
                   "the filter's JWKS refresh")

    deploy([key_a])
    proxy.wait_ready()
    base = f"http://127.0.0.1:{port}"
    client = requests.post(f"{base}/oauth/register", timeout=10, json={
        "client_name": "rotation", "redirect_uris": ["https://jobs.example.com/cb"], "scope": "mcp:tools",
        "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"]}).json()
    first = requests.post(f"{base}/oauth/token", auth=(client["client_id"], client["client_secret"]),
                          data={"grant_type": "client_credentials", "scope": "mcp:tools"}, timeout=10).json()
    kid_a = jwt.get_unverified_header(first["access_token"])["kid"]
    traffic = Traffic(f"{base}/oauth/token", McpSession(proxy.url("/mcp"), first["access_token"]).open(), client)
    traffic.start()
    try:
        wait_until(lambda: traffic.calls[kid_a] >= 5, 30, "traffic signed by A")
        deploy([key_a, key_b])  # 1. publish B; A still signs
        jwks_fetched_after_deploy()  # the filter knows B before any token is signed with it
        deploy([key_b, key_a])  # 2. switch: B signs, A stays published for A's live tokens
        kid_b = wait_until(lambda: next((kid for kid in traffic.calls if kid != kid_a), None), 30, "traffic signed by B")
        listed = subprocess.run([str(AUTHSERVER), "admin", "keys", "list", "--json", "--signing-key", str(key_b),
                                 "--signing-key", str(key_a)], capture_output=True, text=True, timeout=60, check=True)
        assert [(k["role"], k["kid"]) for k in json.loads(listed.stdout)] == [("signs", kid_b), ("published", kid_a)]
        last_a = max(exp for _, exp, kid in traffic.held if kid == kid_a)
        assert last_a > time.time(), "an A token is still live and in use after the switch"
        # 3. overlap: A is retired only once every token it signed has expired.
        wait_until(lambda: time.time() > last_a + 1, ACCESS_SECONDS + 5, "A's last token to expire")
        calls_before = traffic.calls[kid_b]
        deploy([key_b])  # 4. retire A
        jwks_fetched_after_deploy()
        wait_until(lambda: traffic.calls[kid_b] >= calls_before + 5, 30, "traffic after A is retired")
    finally:
        traffic.stopping.set()
        traffic.join(30)
        servers[-1].stop()
        proxy.stop()
    assert traffic.dropped == [], f"valid tokens refused during the rotation: {traffic.dropped[:5]}"
    assert traffic.calls[kid_a] >= 5 and traffic.calls[kid_b] >= 5, traffic.calls
