// MCP servers on the official TypeScript SDK, for the tests and the demo stack.
//   TOOLS=probe       whoami: reports the HTTP headers the request reached the server with
//   TOOLS=github      list_repos, create_issue, delete_repo      (the seed's GitHub backend)
//   TOOLS=kubernetes  get_pods, scale_deployment, delete_namespace (the seed's Kubernetes backend)
//   TOOLS=calculator  add, subtract (seed 004's FastMCP calculator)
// Stateful (Mcp-Session-Id, SSE answers) unless STATELESS=1.  PORT=3002 TOOLS=github node probe-server.mjs
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';

const port = Number(process.env.PORT ?? 3002);
const stateless = process.env.STATELESS === '1';
const toolSet = process.env.TOOLS ?? 'probe';

const text = (value) => ({ content: [{ type: 'text', text: value }] });
const readOnly = { readOnlyHint: true, destructiveHint: false };
const destructive = { readOnlyHint: false, destructiveHint: true };

const TOOL_SETS = {
  probe: (server) => {
    server.registerTool('whoami', { description: 'Reports the HTTP headers this request reached the server with' },
      async (extra) => text(JSON.stringify(extra.requestInfo?.headers ?? {})));
  },
  github: (server) => {
    server.registerTool('list_repos', { description: 'List repositories of an organisation', annotations: readOnly,
      inputSchema: { org: z.string() } }, async ({ org }) => text(`${org}/api, ${org}/web, ${org}/infra`));
    server.registerTool('create_issue', { description: 'Open an issue', inputSchema: { repo: z.string(), title: z.string() } },
      async ({ repo, title }) => text(`opened ${repo}#42: ${title}`));
    server.registerTool('delete_repo', { description: 'Delete a repository', annotations: destructive,
      inputSchema: { repo: z.string() } }, async ({ repo }) => text(`deleted ${repo}`));
  },
  kubernetes: (server) => {
    server.registerTool('get_pods', { description: 'List pods of a namespace', annotations: readOnly,
      inputSchema: { namespace: z.string() } }, async ({ namespace }) => text(`${namespace}: api-7d9 Running, web-5f2 Running`));
    server.registerTool('scale_deployment', { description: 'Scale a deployment',
      inputSchema: { namespace: z.string(), deployment: z.string(), replicas: z.number() } },
      async ({ deployment, replicas }) => text(`${deployment} scaled to ${replicas}`));
    server.registerTool('delete_namespace', { description: 'Delete a namespace and everything in it', annotations: destructive,
      inputSchema: { namespace: z.string() } }, async ({ namespace }) => text(`namespace ${namespace} deleted`));
  },
  calculator: (server) => {
    server.registerTool('add', { description: 'a + b', annotations: readOnly, inputSchema: { a: z.number(), b: z.number() } },
      async ({ a, b }) => text(String(a + b)));
    server.registerTool('subtract', { description: 'a - b', annotations: readOnly, inputSchema: { a: z.number(), b: z.number() } },
      async ({ a, b }) => text(String(a - b)));
  },
};

function buildServer() {
  const server = new McpServer({ name: toolSet, version: '1.0.0' });
  TOOL_SETS[toolSet](server);
  return server;
}

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

const sessions = new Map();

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
  .listen(port, '127.0.0.1', () => console.log(`${toolSet} MCP server on http://127.0.0.1:${port}/mcp`));
