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
// PROFILE=okta also does Okta's cross-app access (enterprise-managed authorization): an RFC 8693
// token exchange at its token endpoint turns a user's ID token, held by the client it was issued
// to (mcp-agent / agent-secret), into an ID-JAG (`typ` oauth-id-jag+jwt) signed with the
// provider's own key, for the authorization servers an admin linked to that client:
// POST /admin/xaa {client, audience, as_client_id} links `client` to the authorization server
// `audience`, where it is `as_client_id`; POST /admin/xaa {clock_offset} shifts the iat/exp of the
// ID-JAGs it mints (a stale assertion, as from a skewed clock).
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

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

// The provider's own signing key: it signs the ID tokens and the ID-JAGs, and is published at its
// jwks_uri.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `${profile}-${port}`, alg: 'RS256', use: 'sig' };

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const crossAppAccess = profile === 'okta';
const agentId = process.env.AGENT_CLIENT_ID ?? 'mcp-agent';
const agentSecret = process.env.AGENT_CLIENT_SECRET ?? 'agent-secret';
// The policy of cross-app access: which client may act for users at which authorization server
// (and as which client there), the scopes it may be granted, and the ID-JAG clock.
const xaa = { links: new Map(), scopes: ['mcp:tools', 'mcp:admin'], clockOffset: 0, lifetime: 300 };

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
  }] : []), ...(crossAppAccess ? [{
    client_id: agentId,
    client_secret: agentSecret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code', TOKEN_EXCHANGE],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }] : [])],
  jwks: { keys: [signingKey] },
  discovery: crossAppAccess ? { identity_chaining_requested_token_types_supported: [ID_JAG] } : {},
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

function signJwt(header, claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode({ ...header, alg: 'RS256', kid: signingKey.kid })}.${encode(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

// RFC 8693 token exchange for an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §4.3):
// the subject token is an ID token this provider issued to the authenticated client; the policy
// decides the audience (and the client's id there) and the scopes.
async function exchangeForIdJag(ctx) {
  const { client, params } = ctx.oidc;
  if (params.requested_token_type !== ID_JAG) throw new errors.InvalidRequest(`requested_token_type must be ${ID_JAG}`);
  if (params.subject_token_type !== ID_TOKEN) throw new errors.InvalidRequest(`subject_token_type must be ${ID_TOKEN}`);
  let payload;
  try {
    ({ payload } = await provider.IdToken.validate(params.subject_token, client));
  } catch (err) {
    throw new errors.InvalidGrant(`the subject token is not an ID token issued to this client: ${err.message}`);
  }
  const now = Math.floor(Date.now() / 1000);
  if (payload.exp <= now) throw new errors.InvalidGrant('the subject token expired');
  const user = users[payload.sub];
  if (!user || user.disabled) throw new errors.InvalidGrant('the user is disabled');
  const asClient = xaa.links.get(`${client.clientId} ${params.audience}`);
  if (!asClient) throw new errors.InvalidGrant('Audience validation failed');
  if (!params.resource) throw new errors.InvalidTarget('resource is required');
  const scope = (params.scope ?? '').split(' ').filter((s) => xaa.scopes.includes(s)).join(' ');
  const iat = now + xaa.clockOffset;
  const claims = {
    iss: provider.issuer, sub: payload.sub, aud: params.audience, client_id: asClient, jti: randomUUID(),
    iat, exp: iat + xaa.lifetime, resource: params.resource, ...(scope ? { scope } : {}),
    auth_time: payload.auth_time, email: user.email, email_verified: user.emailVerified ?? true, name: user.name,
    groups: user.groups,
  };
  ctx.body = {
    issued_token_type: ID_JAG, access_token: signJwt({ typ: 'oauth-id-jag+jwt' }, claims), token_type: 'N_A',
    ...(scope ? { scope } : {}), expires_in: xaa.lifetime,
  };
}
if (crossAppAccess) {
  provider.registerGrantType(TOKEN_EXCHANGE, exchangeForIdJag,
    ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);
}
provider.on('grant.saved', (grant) => {
  (grantsOf[grant.accountId] ??= new Set()).add(grant.jti);
});

const callback = provider.callback();

async function xaaAdmin(req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  const { client, audience, as_client_id: asClientId, clock_offset: clockOffset } = JSON.parse(body || '{}');
  if (audience) xaa.links.set(`${client} ${audience}`, asClientId);
  if (clockOffset !== undefined) xaa.clockOffset = clockOffset;
  res.writeHead(204).end();
}

// A workload platform's token issuer, shaped like a Kubernetes cluster's (service-account token
// projection): POST /admin/workload-token {namespace, serviceaccount, audience, lifetime?}
// answers a token signed with this provider's key, `sub` system:serviceaccount:<ns>:<name>, its
// keys published by this provider's discovery document as a cluster publishes them.
async function workloadToken(req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  const { namespace, serviceaccount: name, audience, lifetime = 3600 } = JSON.parse(body || '{}');
  const iat = Math.floor(Date.now() / 1000);
  const claims = {
    iss: provider.issuer, sub: `system:serviceaccount:${namespace}:${name}`, aud: [audience],
    iat, nbf: iat, exp: iat + lifetime, jti: randomUUID(),
    'kubernetes.io': { namespace, serviceaccount: { name, uid: randomUUID() } },
  };
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: signJwt({}, claims) }));
}

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
  if (req.url === '/admin/xaa' && crossAppAccess) return xaaAdmin(req, res).catch(() => res.writeHead(400).end());
  if (req.url === '/admin/workload-token') return workloadToken(req, res).catch(() => res.writeHead(400).end());
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
