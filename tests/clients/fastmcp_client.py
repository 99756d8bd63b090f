"""The FastMCP client as a real client: its own dynamic registration and its own local callback
server; only the browser is played headlessly. Prints one JSON line.

    python fastmcp_client.py <mcp-url> <user> <password> <allowed-tool> <forbidden-tool>
"""

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests
from fastmcp import Client
from fastmcp.client.auth import OAuth

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from browser import Browser  # noqa: E402

if os.environ.get("MCP_TEST_IDP_ORIGIN"):  # the upstream identity provider's pages are part of the flow
    Browser.idp_origins.add(os.environ["MCP_TEST_IDP_ORIGIN"])
# With REFRESH_AFTER=<seconds>, the client waits for its access token to expire and carries on:
# the SDK refreshes it (and our server re-checks the user upstream).
REFRESH_AFTER = float(os.environ.get("REFRESH_AFTER", "0"))


class HeadlessOAuth(OAuth):
    """FastMCP's OAuth with the browser replaced by a headless one."""

    def __init__(self, user, password, **kwargs):
        super().__init__(**kwargs)
        self.user, self.password = user, password

    async def redirect_handler(self, authorization_url: str) -> None:
        callback = f"http://127.0.0.1:{self.redirect_port}"

        def person():
            landing = Browser().authorize(authorization_url, self.user, self.password, True, callback)
            for _ in range(100):  # FastMCP starts its callback server right after this returns
                try:
                    requests.get(landing, timeout=5)
                    return
                except requests.ConnectionError:
                    time.sleep(0.1)

        threading.Thread(target=person, daemon=True).start()


async def main(server, user, password, allowed_tool, forbidden_tool):
    auth = HeadlessOAuth(user, password, scopes=["mcp:tools", "offline_access"], callback_host="127.0.0.1")
    seen = {}
    async with Client(server, auth=auth) as client:
        seen["tools"] = [tool.name for tool in await client.list_tools()]
        arguments = {"namespace": "dev", "org": "acme", "repo": "acme/api", "title": "t"}
        if allowed_tool:
            result = await client.call_tool(allowed_tool, arguments)
            seen["allowed"] = {"ok": not result.is_error, "text": result.content[0].text if result.content else ""}
        if forbidden_tool:
            try:
                await client.call_tool(forbidden_tool, arguments)
                seen["forbidden"] = {"ok": True}
            except Exception as err:  # the 403 surfaces as an error
                seen["forbidden"] = {"ok": False, "error": str(err)}
        if REFRESH_AFTER:
            await asyncio.sleep(REFRESH_AFTER)
            seen["afterRefresh"] = {"tools": len(await client.list_tools())}
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
