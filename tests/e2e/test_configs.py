"""Every shipped Envoy configuration is one Envoy accepts; the two-team one also isolates teams."""

import datetime
import json
import os
import subprocess
import time

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import ENVOY_BIN, ROOT, WASM, JwksServer, Process, SigningKey, free_port, wait_until

HOSTS = ["mcp.example.com", "engineering-tools.example.com", "sales-tools.example.com"]


def self_signed(directory, names):
    """A throw-away certificate for `names`, written as every file name the configs expect."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    crt = cert.public_bytes(serialization.Encoding.PEM)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for stem in ("tls", "engineering-tools", "sales-tools"):
        (directory / f"{stem}.crt").write_bytes(crt)
        (directory / f"{stem}.key").write_bytes(pem)


def localised(config_text, tls_dir):
    """The config with /etc/mcp-mesh-auth/ (the production mount point) pointing at local files."""
    return (config_text.replace("/etc/mcp-mesh-auth/tls/", f"{tls_dir}/")
            .replace("/etc/mcp-mesh-auth/mcp_mesh_auth_filter.wasm", str(WASM)))


@pytest.mark.parametrize("config", sorted((ROOT / "envoy").glob("*.yaml")), ids=lambda p: p.name)
def test_envoy_validates_the_shipped_config(config, tmp_path):
    self_signed(tmp_path, HOSTS)
    path = tmp_path / config.name
    path.write_text(localised(config.read_text(), tmp_path))
    # token-exchange.yaml takes the gateway's secret from Envoy's environment.
    env = {**os.environ, "MCP_AUTH_GATEWAY_SECRET": "validate-only-secret"}
    result = subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_token_for_one_team_is_refused_by_the_other(tmp_path, log_dir, everything):
    """envoy/two-teams.yaml for real: SNI picks the team, each team trusts only its own tokens."""
    self_signed(tmp_path, HOSTS)
    config = yaml.safe_load(localised((ROOT / "envoy" / "two-teams.yaml").read_text(), tmp_path))
    port, admin = free_port(), free_port()
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    config["static_resources"]["listeners"][0]["address"]["socket_address"].update(address="127.0.0.1", port_value=port)
    for chain in config["static_resources"]["listeners"][0]["filter_chains"]:
        virtual_host = chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
        virtual_host["domains"].append(f"{virtual_host['domains'][0]}:{port}")
    keys = {team: SigningKey(f"{team}-key") for team in ("engineering-tools", "sales-tools")}
    jwks = {}
    for cluster in config["static_resources"]["clusters"]:
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        address["address"] = "127.0.0.1"
        if cluster["name"].endswith("-authserver"):
            team = cluster["name"].removesuffix("-authserver")
            jwks[team] = JwksServer()
            jwks[team].keys = [keys[team]]
            jwks[team].start()
            address["port_value"] = jwks[team].port
        else:
            address["port_value"] = everything
    path = tmp_path / "two-teams.local.yaml"
    path.write_text(yaml.safe_dump(config))
    envoy = Process("envoy-two-teams", [str(ENVOY_BIN), "-c", str(path), "--disable-hot-restart", "--concurrency", "1"], log_dir, cwd=ROOT)
    try:
        def ready():
            if not envoy.alive():
                raise RuntimeError(envoy.log()[-3000:])
            return subprocess.run(["curl", "-fs", f"http://127.0.0.1:{admin}/ready"], capture_output=True).returncode == 0
        wait_until(ready, 90, "two-team envoy", interval=0.2)

        def token(team):
            now = int(time.time())
            return keys[team].sign({"iss": f"https://{team}.example.com", "aud": f"https://{team}.example.com/mcp",
                                    "sub": "alice", "groups": ["mcp-developers", "mcp-sales"], "scope": "mcp:tools",
                                    "iat": now, "exp": now + 600})

        def call(host_team, token_team):
            host = f"{host_team}.example.com"
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
            # A refusal is answered before the request body is read; over HTTP/2 Envoy then ends the
            # stream with RST_STREAM(NO_ERROR), as RFC 9113 §8.1 allows, and curl 7.88 reports that
            # as error 92 instead of the 401 it received. So refusals are checked over HTTP/1.1.
            protocol = "--http2" if host_team == token_team else "--http1.1"
            for _ in range(50):  # until the team's JWKS has been fetched
                result = subprocess.run(["curl", "-sk", protocol, "-o", "/dev/null", "-w", "%{http_code}", "--resolve", f"{host}:{port}:127.0.0.1",
                                         "-X", "POST", f"https://{host}:{port}/mcp", "-H", f"authorization: Bearer {token(token_team)}",
                                         "-H", "content-type: application/json", "-H", "accept: application/json, text/event-stream",
                                         "-d", body], capture_output=True, text=True, timeout=30)
                if result.stdout != "503":
                    return result.stdout
                time.sleep(0.2)
            return result.stdout

        assert call("engineering-tools", "engineering-tools") == "200"
        assert call("sales-tools", "sales-tools") == "200"
        assert call("engineering-tools", "sales-tools") == "401"
        assert call("sales-tools", "engineering-tools") == "401"

        # Each team's filter counts under its own instance label: nothing is shared.
        text = subprocess.run(["curl", "-fs", f"http://127.0.0.1:{admin}/stats/prometheus"],
                              capture_output=True, text=True, timeout=30).stdout
        series = {name: float(value) for name, _, value in
                  (line.rpartition(" ") for line in text.splitlines() if line.startswith("mcp_auth_"))}
        for team, other in (("engineering", "sales"), ("sales", "engineering")):
            label = f'mcp_auth_instance="mcp_mesh_auth_{team}"'
            assert series[f"mcp_auth_authenticated_total{{{label}}}"] == 1, sorted(series)
            refused = {name: value for name, value in series.items() if name.startswith("mcp_auth_decisions_total{")
                       and label in name and 'decision="unauthenticated"' in name and value}
            # The other team's token, refused once here (and nowhere counted twice).
            assert refused == {f'mcp_auth_decisions_total{{{label},mode="enforce",decision="unauthenticated",'
                               f'reason="untrusted_issuer"}}': 1}, refused
    finally:
        envoy.stop()
        for server in jwks.values():
            server.stop()
