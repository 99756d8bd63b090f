import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import (NODE_MODULES, SERVERS, WASM, ENVOY_BIN, Envoy, JwksServer, Process, SigningKey, free_port,
                     port_open, postgres_program, start_node_server, wait_until)


def pytest_sessionstart(session):
    missing = [str(p) for p in (WASM, ENVOY_BIN, NODE_MODULES) if not p.exists()]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)}: run `make test` (it builds and installs them)")


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("logs")


def serve_everything(log_dir, name):
    """`@modelcontextprotocol/server-everything` over Streamable HTTP (always SSE answers)."""
    script = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    proc, port = start_node_server(name, script, log_dir, args=("streamableHttp",))
    yield port
    proc.stop()


@pytest.fixture(scope="session")
def everything(log_dir):
    yield from serve_everything(log_dir, "server-everything")


@pytest.fixture(scope="session")
def probe(log_dir):
    """An MCP server on the official TypeScript SDK that reports the headers it received."""
    proc, port = start_node_server("probe-server", SERVERS / "probe-server.mjs", log_dir)
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def signing_key():
    return SigningKey("key-1")


@pytest.fixture(scope="module")
def jwks(signing_key):
    server = JwksServer()
    server.keys = [signing_key]
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def everything_b(log_dir):
    """A second server-everything, for aggregation behind `mcp_router`."""
    yield from serve_everything(log_dir, "server-everything-b")


@pytest.fixture(scope="session")
def database(log_dir):
    """A throw-away PostgreSQL cluster on a free port, shared by the modules that need one (run as
    `postgres` when the tests run as root, since PostgreSQL refuses root). Each user of it works on
    its own clients and users: the others' rows are there too."""
    root = Path(tempfile.mkdtemp(prefix="mcp-auth-pg-"))
    as_postgres = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, postgres_program("initdb"), "-D", str(root / "data"), "-U", "mcp", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    port = free_port()
    server = Process("postgres", [*as_postgres, postgres_program("postgres"), "-D", str(root / "data"), "-p", str(port),
                                  "-k", str(root), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"], log_dir)

    def up():
        if not server.alive():
            raise RuntimeError(server.log())
        # The port opens before the server accepts sessions ("the database system is starting up").
        return port_open(port) and subprocess.run([postgres_program("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                                  capture_output=True, timeout=10).returncode == 0
    wait_until(up, 60, "postgres")
    yield f"postgres://mcp@127.0.0.1:{port}/postgres"
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
