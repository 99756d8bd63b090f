"""The authorization server binary and the pieces of an OAuth client the tests share."""

import base64
import hashlib
import json
import secrets
import subprocess
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import ROOT, Process, port_open, wait_until

AUTHSERVER = ROOT / "target" / "debug" / "mcp-mesh-authserver"
REDIRECT = "http://127.0.0.1:8765/callback"


def write_key(path, kind):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def generate_key(path, algorithm="es256"):
    """A signing key made by the server's own `admin keys generate`, as docs/runbooks.md does it."""
    subprocess.run([str(AUTHSERVER), "admin", "keys", "generate", "--out", str(path), "--algorithm", algorithm],
                   check=True, capture_output=True, timeout=60)
    return path


class AuthServer:
    """The binary with `config` (a dict written as its YAML file), listening on `port`."""

    def __init__(self, log_dir, workdir, config, port, keys, name="authserver"):
        self.url = f"http://127.0.0.1:{port}"
        path = workdir / f"{name}.yaml"
        path.write_text(json.dumps(config))
        args = [str(AUTHSERVER), "--config", str(path), "--listen", f"127.0.0.1:{port}"]
        for key in keys:
            args += ["--signing-key", str(key)]
        self.process = Process(name, args, log_dir)
        wait_until(lambda: port_open(port) or (not self.process.alive() and self._died()), 30, name)

    def _died(self):
        raise RuntimeError(f"authserver exited:\n{self.process.log()}")

    def stop(self):
        self.process.stop()


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(url):
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def claims_of(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
