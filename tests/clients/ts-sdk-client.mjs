// The official TypeScript MCP SDK as a real client: 401 -> resource metadata -> authorization
// server metadata -> dynamic registration -> authorization code + PKCE (headless login) -> token
// -> tools/list -> calls -> refresh. Prints one JSON line with what it saw.
//   node ts-sdk-client.mjs <mcp-url> <user> <password> <allowed-tool> <forbidden-tool>
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { followAuthorization } from './headless-login.mjs';

const [serverUrl, username, password, allowedTool, forbiddenTool] = process.argv.slice(2);
const REDIRECT = 'http://127.0.0.1:8765/callback';
const TOOL_ARGS = JSON.parse(process.env.TOOL_ARGS ?? '{"namespace": "dev", "org": "acme", "repo": "acme/api", "title": "t"}');

class HeadlessProvider {
  constructor() { this.stored = {}; }
  get redirectUrl() { return REDIRECT; }
  get clientMetadata() {
    return { client_name: 'ts-sdk e2e', redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'],
             response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'mcp:tools offline_access' };
  }
  clientInformation() { return this.stored.client; }
  saveClientInformation(client) { this.stored.client = client; }
  tokens() { return this.stored.tokens; }
  saveTokens(tokens) { this.stored.tokens = tokens; }
  saveCodeVerifier(verifier) { this.stored.verifier = verifier; }
  codeVerifier() { return this.stored.verifier; }
  async redirectToAuthorization(url) {
    const landing = await followAuthorization(url.toString(), { username, password });
    this.code = new URL(landing).searchParams.get('code');
  }
}

const provider = new HeadlessProvider();
const client = new Client({ name: 'ts-sdk-e2e', version: '1.0.0' });
let sawUnauthorized = false;
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider }));
} catch (err) {
  if (!(err instanceof UnauthorizedError)) throw err;
  sawUnauthorized = true;
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
  await transport.finishAuth(provider.code);
  await client.connect(new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider }));
}
const tools = (await client.listTools()).tools.map((tool) => tool.name);
const call = async (name) => {
  try {
    const result = await client.callTool({ name, arguments: TOOL_ARGS });
    return { ok: !result.isError, text: result.content?.[0]?.text ?? '' };
  } catch (err) {
    return { ok: false, error: String(err.message ?? err) };
  }
};
const allowed = allowedTool ? await call(allowedTool) : null;
const forbidden = forbiddenTool ? await call(forbiddenTool) : null;
const firstAccessToken = provider.stored.tokens?.access_token;
const hadRefreshToken = Boolean(provider.stored.tokens?.refresh_token);
// Refresh (our server re-checks the user upstream when federated), then carry on with it.
let afterRefresh = null;
if (hadRefreshToken) {
  const outcome = await auth(provider, { serverUrl: new URL(serverUrl) });
  const refreshed = provider.stored.tokens?.access_token !== firstAccessToken;
  afterRefresh = { outcome, refreshed, tools: (await client.listTools()).tools.length };
}
await client.close();
console.log(JSON.stringify({ sawUnauthorized, tools, allowed, forbidden, hadRefreshToken, afterRefresh, tokenType: provider.stored.tokens?.token_type, gotToken: Boolean(firstAccessToken) }));
