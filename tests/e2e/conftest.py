import pytest

from harness import NODE_MODULES, SERVERS, WASM, ENVOY_BIN, Envoy, JwksServer, SigningKey, start_node_server


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
