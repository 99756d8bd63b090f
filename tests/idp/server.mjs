// A real OpenID provider (npm `oidc-provider`) shaped like the IdPs of the seeds, for the tests:
//   PROFILE=okta  issuer <origin>/oauth2/default, groups in a JWT access token (only mcp-*),
//                 refresh tokens via offline_access, client_secret_basic
//   PROFILE=entra issuer <origin>/tenant/v2.0, `roles` and `oid` in the ID token, client_secret_post
//   PROFILE=direct like okta, as the IdP MCP clients talk to directly (no authorization server of
//                 ours): open registration, RFC 8414 metadata aliases, the RFC 8707 resource as the
//                 access token's audience, `scp` as an array, and a machine client
//                 (calculator-m2m / m2m-secret, client_credentials) — seeds 002 and 004.
// An admin API changes users while tokens live: POST /admin/users/<id> {groups|roles|disabled},
// POST /admin/users/<id>/revoke (destroys the user's grants).
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 9100);
const profile = process.env.PROFILE ?? 'okta';
const origin = `http://127.0.0.1:${port}`;
const direct = profile === 'direct';
const oktaLike = profile === 'okta' || direct;
const prefix = oktaLike ? '/oauth2/default' : '/tenant/v2.0';
const clientId = process.env.CLIENT_ID ?? 'mcp-gateway';
const clientSecret = process.env.CLIENT_SECRET ?? 'gateway-secret';
const redirectUris = (process.env.REDIRECT_URIS ?? '').split(',').filter(Boolean);

const users = {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['mcp-developers', 'Everyone', 'hr-payroll'], roles: ['MCP.Developer'], oid: '00000000-0000-0000-0000-00000000a11c' },
  bob: { email: 'bob@example.com', name: 'Bob', groups: ['mcp-platform', 'Everyone'], roles: ['MCP.Platform'], oid: '00000000-0000-0000-0000-000000000b0b' },
  carol: { email: 'carol@example.com', name: 'Carol', groups: ['Everyone'], roles: [], oid: '00000000-0000-0000-0000-0000000ca201' },
  dave: { email: 'dave@example.com', name: 'Dave', groups: ['mcp-developers'], roles: ['MCP.Developer'], oid: '00000000-0000-0000-0000-00000000da7e' },
  erin: { email: 'erin@example.com', name: 'Erin', groups: ['mcp-developers'], roles: ['MCP.Developer'], oid: '00000000-0000-0000-0000-00000000e217' },
  // Typed in an address nobody checked: it must not reach our tokens.
  frank: { email: 'ceo@example.com', emailVerified: false, name: 'Frank', groups: ['mcp-developers'], roles: ['MCP.Developer'], oid: '00000000-0000-0000-0000-00000000f4a2' },
};
const grantsOf = {};
const RESOURCE_SCOPES = ['mcp:tools', 'calculator.add', 'calculator.subtract'];

const provider = new Provider(`${origin}${prefix}`, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: oktaLike ? 'client_secret_basic' : 'client_secret_post',
  }, ...(direct ? [{
    client_id: 'calculator-m2m',
    client_secret: 'm2m-secret',
    redirect_uris: [],
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }] : [])],
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user || user.disabled) return undefined;
    return {
      accountId: id,
      async claims() {
        const claims = { sub: id, email: user.email, email_verified: user.emailVerified ?? true, name: user.name };
        if (profile === 'entra') Object.assign(claims, { oid: user.oid, roles: user.roles });
        else claims.groups = user.groups.filter((g) => g.startsWith('mcp-'));
        return claims;
      },
    };
  },
  claims: profile === 'entra'
    ? { openid: ['sub', 'oid', 'roles'], email: ['email', 'email_verified'], profile: ['name'] }
    : { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', ...(direct ? RESOURCE_SCOPES : [])],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: direct },
    clientCredentials: { enabled: direct },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: oktaLike,
      defaultResource: (ctx, client, oneOf) => oneOf ?? 'api://default',
      useGrantedResource: () => true,
      getResourceServerInfo: () => (direct
        ? { scope: RESOURCE_SCOPES.join(' '), accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }
        : { scope: 'openid profile email groups offline_access', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const user = users[token.accountId];
    const extra = {};
    if (oktaLike && user) extra.groups = user.groups.filter((g) => g.startsWith('mcp-'));
    if (direct) Object.assign(extra, { scp: (token.scope ?? '').split(' ').filter(Boolean), cid: token.clientId });
    return extra;
  },
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
});
provider.proxy = false;
provider.on('grant.saved', (grant) => {
  (grantsOf[grant.accountId] ??= new Set()).add(grant.jti);
});

const callback = provider.callback();

async function admin(req, res) {
  const [, , , id, action] = req.url.split('/');
  const user = users[id];
  if (!user) return res.writeHead(404).end();
  let body = '';
  for await (const chunk of req) body += chunk;
  if (action === 'revoke') {
    for (const jti of grantsOf[id] ?? []) {
      const grant = await provider.Grant.find(jti);
      if (grant) await grant.destroy();
    }
  } else {
    Object.assign(user, JSON.parse(body || '{}'));
  }
  res.writeHead(204).end();
}

http.createServer((req, res) => {
  if (req.url.startsWith('/admin/users/')) return admin(req, res).catch(() => res.writeHead(500).end());
  if (req.url === '/health') return res.writeHead(200).end('ok');
  if (req.url === `/.well-known/oauth-authorization-server${prefix}`) req.url = `${prefix}/.well-known/oauth-authorization-server`;
  if (!req.url.startsWith(prefix)) return res.writeHead(404).end();
  // RFC 8414 metadata where MCP clients look for it: path-inserted, and appended to the issuer.
  if (req.url === `/.well-known/oauth-authorization-server${prefix}` || req.url === `${prefix}/.well-known/oauth-authorization-server`) {
    req.url = `${prefix}/.well-known/openid-configuration`;
  }
  // Okta issues refresh tokens for offline_access without prompt=consent; OIDC Core (and so
  // oidc-provider) drops offline_access unless the prompt is there: add it, as Okta behaves.
  const url = new URL(req.url, origin);
  if (url.pathname === `${prefix}/auth` && (url.searchParams.get('scope') ?? '').includes('offline_access') && !url.searchParams.has('prompt')) {
    url.searchParams.set('prompt', 'consent');
    req.url = url.pathname + url.search;
  }
  req.originalUrl = req.url;
  req.url = req.url.slice(prefix.length) || '/';
  req.baseUrl = prefix;
  return callback(req, res);
}).listen(port, '127.0.0.1', () => console.log(`oidc-provider (${profile}) at ${origin}${prefix}`));
