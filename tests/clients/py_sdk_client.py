"""The official Python MCP SDK (`mcp` 2.x) as a real client: discovery, registration, PKCE login
(the person at the browser played headlessly), then tools/list and calls. Prints one JSON line.

    python py_sdk_client.py <mcp-url> <user> <password> <allowed-tool> <forbidden-tool>
"""

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from browser import Browser  # noqa: E402
from token_storage import MemoryStorage  # noqa: E402

if os.environ.get("MCP_TEST_IDP_ORIGIN"):  # the upstream identity provider's pages are part of the flow
    Browser.idp_origins.add(os.environ["MCP_TEST_IDP_ORIGIN"])
# With REFRESH_AFTER=<seconds>, the client waits for its access token to expire and carries on:
# the SDK refreshes it (and our server re-checks the user upstream).
REFRESH_AFTER = float(os.environ.get("REFRESH_AFTER", "0"))

REDIRECT = "http://127.0.0.1:8765/callback"


async def main(server, user, password, allowed_tool, forbidden_tool):
    landing = {}

    async def redirect_handler(url):
        landing["url"] = await asyncio.to_thread(Browser().authorize, url, user, password, True, REDIRECT)

    async def callback_handler():
        answer = {k: v[0] for k, v in parse_qs(urlparse(landing["url"]).query).items()}
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"), iss=answer.get("iss"))

    storage = MemoryStorage()
    oauth = OAuthClientProvider(
        server_url=server,
        client_metadata=OAuthClientMetadata(client_name="py-sdk e2e", redirect_uris=[REDIRECT],
                                            grant_types=["authorization_code", "refresh_token"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
    seen = {}
    async with httpx2.AsyncClient(auth=oauth) as http:
        async with Client(streamable_http_client(server, http_client=http)) as client:
            seen["tools"] = [tool.name for tool in (await client.list_tools()).tools]
            arguments = json.loads(os.environ.get("TOOL_ARGS", '{"namespace": "dev", "org": "acme", "repo": "acme/api", "title": "t"}'))
            if allowed_tool:
                result = await client.call_tool(allowed_tool, arguments)
                seen["allowed"] = {"ok": not result.is_error, "text": result.content[0].text if result.content else ""}
            if forbidden_tool:
                try:
                    result = await client.call_tool(forbidden_tool, arguments)
                    seen["forbidden"] = {"ok": not result.is_error}
                except Exception as err:  # the 403 surfaces as an error
                    seen["forbidden"] = {"ok": False, "error": str(err)}
            if REFRESH_AFTER:
                before = storage.tokens.access_token
                await asyncio.sleep(REFRESH_AFTER)
                tools = (await client.list_tools()).tools
                seen["afterRefresh"] = {"refreshed": storage.tokens.access_token != before, "tools": len(tools)}
    seen["hadRefreshToken"] = bool(storage.tokens and storage.tokens.refresh_token)
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
