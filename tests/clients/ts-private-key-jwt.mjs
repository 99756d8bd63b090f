// The official TypeScript MCP SDK as a machine client (no browser, no user): client_credentials
// with private_key_jwt (RFC 7523 §2.2), through its PrivateKeyJwtProvider (the SDK signs the
// assertion with the client's key) or StaticPrivateKeyJwtProvider (a pre-built assertion, such as
// a Kubernetes service-account token: workload identity). Prints one JSON line with what it saw.
//   node ts-private-key-jwt.mjs <mcp-url> <issuer> <client-id> <key.pem | --assertion=JWT> <allowed-tool> <forbidden-tool>
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { PrivateKeyJwtProvider, StaticPrivateKeyJwtProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [serverUrl, issuer, clientId, credential, allowedTool, forbiddenTool] = process.argv.slice(2);
const TOOL_ARGS = JSON.parse(process.env.TOOL_ARGS ?? '{"message": "hi"}');
const scope = process.env.SCOPE ?? 'mcp:tools';

const provider = credential.startsWith('--assertion=')
  ? new StaticPrivateKeyJwtProvider({ clientId, jwtBearerAssertion: credential.slice('--assertion='.length), scope, expectedIssuer: issuer })
  : new PrivateKeyJwtProvider({ clientId, privateKey: readFileSync(credential, 'utf8'), algorithm: process.env.ALG ?? 'RS256', scope, expectedIssuer: issuer });

const client = new Client({ name: 'ts-private-key-jwt', version: '1.0.0' });
const seen = {};
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider }));
  seen.tools = (await client.listTools()).tools.map((tool) => tool.name);
  const call = async (name) => {
    try {
      const result = await client.callTool({ name, arguments: TOOL_ARGS });
      return { ok: !result.isError, text: result.content?.[0]?.text ?? '' };
    } catch (err) {
      return { ok: false, error: String(err.message ?? err) };
    }
  };
  if (allowedTool) seen.allowed = await call(allowedTool);
  if (forbiddenTool) seen.forbidden = await call(forbiddenTool);
  await client.close();
} catch (err) {
  seen.error = String(err.message ?? err);
}
const token = provider.tokens()?.access_token;
seen.claims = token ? JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) : null;
seen.refreshToken = Boolean(provider.tokens()?.refresh_token);
console.log(JSON.stringify(seen));
