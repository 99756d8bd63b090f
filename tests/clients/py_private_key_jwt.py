"""The official Python MCP SDK as a machine client: client_credentials with private_key_jwt
(RFC 7523 §2.2) through its PrivateKeyJWTOAuthProvider, the assertion signed by the SDK with the
client's key, or a pre-built one (a workload's service-account token). Prints one JSON line.

    python py_private_key_jwt.py <mcp-url> <issuer> <client-id> <key.pem | --assertion=JWT> <allowed-tool> <forbidden-tool>
"""

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.auth.extensions.client_credentials import (
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
    static_assertion_provider,
)
from mcp.client.streamable_http import streamable_http_client
from token_storage import MemoryStorage


def payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def main(server, issuer, client_id, credential, allowed_tool, forbidden_tool):
    if credential.startswith("--assertion="):
        assertions = static_assertion_provider(credential.removeprefix("--assertion="))
    else:
        params = SignedJWTParameters(issuer=client_id, subject=client_id, signing_key=Path(credential).read_text(),
                                     signing_algorithm=os.environ.get("ALG", "RS256"))
        assertions = params.create_assertion_provider()
    storage = MemoryStorage()
    oauth = PrivateKeyJWTOAuthProvider(server_url=server, storage=storage, client_id=client_id,
                                       assertion_provider=assertions, scope=os.environ.get("SCOPE", "mcp:tools"),
                                       issuer=issuer)
    seen = {}
    arguments = json.loads(os.environ.get("TOOL_ARGS", '{"message": "hi"}'))
    try:
        async with httpx2.AsyncClient(auth=oauth) as http:
            async with Client(streamable_http_client(server, http_client=http)) as client:
                seen["tools"] = [tool.name for tool in (await client.list_tools()).tools]
                if allowed_tool:
                    result = await client.call_tool(allowed_tool, arguments)
                    seen["allowed"] = {"ok": not result.is_error, "text": result.content[0].text if result.content else ""}
                if forbidden_tool:
                    try:
                        result = await client.call_tool(forbidden_tool, arguments)
                        seen["forbidden"] = {"ok": not result.is_error}
                    except Exception as err:  # the 403 surfaces as an error
                        seen["forbidden"] = {"ok": False, "error": str(err)}
    except Exception as err:  # a refused client: what the SDK says is what a user sees
        seen["error"] = f"{type(err).__name__}: {err}"
    token = storage.tokens.access_token if storage.tokens else None
    seen["claims"] = payload(token) if token else None
    seen["refreshToken"] = bool(storage.tokens and storage.tokens.refresh_token)
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
