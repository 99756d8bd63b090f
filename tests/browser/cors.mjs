// A browser-based MCP client, as the MCP Inspector is one: a page on one origin calls the MCP
// endpoint on another with fetch(), so Chromium sends the CORS preflight and enforces the answer.
// Usage: node cors.mjs <mcp-url> <token> <page-url>...
// Prints, per page, what its script could read (or the error fetch() threw).
import { chromium } from 'playwright-core';

const [mcpUrl, token, ...pages] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const seen = {};
try {
  for (const pageUrl of pages) {
    const page = await browser.newPage();
    await page.goto(pageUrl);
    seen[pageUrl] = await page.evaluate(async ([url, bearer]) => {
      const initialize = {
        jsonrpc: '2.0', id: 1, method: 'initialize',
        params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'browser', version: '0' } },
      };
      const call = async (authorization) => {
        try {
          const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
          if (authorization) headers.authorization = authorization;
          const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(initialize) });
          return {
            status: response.status,
            session: response.headers.get('mcp-session-id'),
            challenge: response.headers.get('www-authenticate'),
          };
        } catch (error) {
          return { error: String(error) };
        }
      };
      return { signedIn: await call(`Bearer ${bearer}`), anonymous: await call(null) };
    }, [mcpUrl, token]);
    await page.close();
  }
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
