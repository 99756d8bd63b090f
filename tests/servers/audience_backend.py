"""An MCP server (FastMCP) that accepts only access tokens minted for it: FastMCP's JWTVerifier
checks the signature against JWKS_URI, the issuer ISSUER and the audience AUDIENCE. Its tool
`whoami` answers with what the verified token says (sub, aud, act, client_id) and a SHA-256 of
the token itself, so that a test can tell which token reached it; `calls` counts the tool calls.

    PORT=3001 JWKS_URI=http://127.0.0.1:9000/.well-known/jwks.json ISSUER=http://localhost:9000 \\
      AUDIENCE=https://github-mcp.internal/mcp ALGORITHM=ES256 python tests/servers/audience_backend.py
"""

import hashlib
import os

from fastmcp import FastMCP
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token

verifier = JWTVerifier(jwks_uri=os.environ["JWKS_URI"], issuer=os.environ["ISSUER"],
                       audience=os.environ["AUDIENCE"], algorithm=os.environ.get("ALGORITHM", "RS256"))
mcp = FastMCP(os.environ.get("NAME", "audience-backend"), auth=verifier)
calls = 0


@mcp.tool
def whoami() -> dict:
    """The claims of the token this request was authorised with."""
    global calls
    calls += 1
    token = get_access_token()
    claims = token.claims if token else {}
    return {"sub": claims.get("sub"), "aud": claims.get("aud"), "act": claims.get("act"),
            "client_id": claims.get("client_id"), "iss": claims.get("iss"),
            "token_sha256": hashlib.sha256(token.token.encode()).hexdigest() if token else None}


@mcp.tool
def count() -> int:
    """How many times `whoami` ran."""
    return calls


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=int(os.environ["PORT"]), path="/mcp",
            show_banner=False, log_level="warning")
