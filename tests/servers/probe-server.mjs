// An MCP server on the official TypeScript SDK that reports what reached it, so tests can see
// what the filter forwards upstream. Stateful (Mcp-Session-Id, SSE answers) unless STATELESS=1.
//   PORT=3002 node probe-server.mjs
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

const port = Number(process.env.PORT ?? 3002);
const stateless = process.env.STATELESS === '1';

function buildServer() {
  const server = new McpServer({ name: 'probe', version: '1.0.0' });
  server.registerTool(
    'whoami',
    { description: 'Reports the HTTP headers this request reached the server with' },
    async (extra) => ({
      content: [{ type: 'text', text: JSON.stringify(extra.requestInfo?.headers ?? {}) }],
    }),
  );
  return server;
}

const sessions = new Map();

// A deliberately broken list answer (both `result` and `error`), to prove the filter fails closed.
function brokenList(req, res) {
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    const id = JSON.parse(body).id ?? null;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id, result: { tools: [{ name: 'leak' }] }, error: { code: 1, message: 'x' } }));
  });
}

async function handle(req, res) {
  if (req.url.startsWith('/broken/mcp')) {
    brokenList(req, res);
    return;
  }
  if (!req.url.startsWith('/mcp')) {
    res.writeHead(404).end();
    return;
  }
  if (stateless) {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => transport.close());
    await buildServer().connect(transport);
    await transport.handleRequest(req, res);
    return;
  }
  const sessionId = req.headers['mcp-session-id'];
  let transport = sessionId ? sessions.get(sessionId) : undefined;
  if (!transport) {
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => sessions.set(id, transport),
    });
    transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
    await buildServer().connect(transport);
  }
  await transport.handleRequest(req, res);
}

http
  .createServer((req, res) => {
    handle(req, res).catch((err) => {
      console.error(err);
      if (!res.headersSent) res.writeHead(500).end();
    });
  })
  .listen(port, '127.0.0.1', () => console.log(`probe MCP server on http://127.0.0.1:${port}/mcp`));
