// The person at the browser, headless: follows the authorization server's redirects, approves its
// consent page, and signs in on its dev login page or at the upstream OpenID provider
// (oidc-provider's login and consent forms), over plain HTTP with fetch. Returns the URL the flow
// finally sends the browser to (the client's redirect URI, with the code). Cookies are kept per
// origin by hand; the server's `__Host-` (Secure) cookie is sent as a browser on localhost does.
export async function followAuthorization(authorizationUrl, { username, password, approve = true, idpOrigin = process.env.MCP_TEST_IDP_ORIGIN }) {
  const origin = new URL(authorizationUrl).origin;
  const inFlow = (url) => url.startsWith(origin) || (idpOrigin && url.startsWith(idpOrigin));
  const jar = new Map();
  let url = authorizationUrl;
  let init = {};
  for (let step = 0; step < 30; step += 1) {
    const target = new URL(url).origin;
    const headers = { ...(init.headers ?? {}) };
    if (jar.has(target)) headers.cookie = [...jar.get(target).entries()].map(([k, v]) => `${k}=${v}`).join('; ');
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const at = pair.indexOf('=');
      if (!jar.has(target)) jar.set(target, new Map());
      jar.get(target).set(pair.slice(0, at).trim(), pair.slice(at + 1));
    }
    if ([301, 302, 303, 307].includes(response.status)) {
      const location = new URL(response.headers.get('location'), url).toString();
      if (!inFlow(location)) return location;
      url = location;
      init = {};
      continue;
    }
    const html = await response.text();
    if (response.status !== 200) throw new Error(`${response.status} at ${url}: ${html.slice(0, 300)}`);
    const fields = Object.fromEntries([...html.matchAll(/<input type="hidden" name="(\w+)" value="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    const action = html.match(/<form[^>]*\saction="([^"]+)"/)?.[1]?.replaceAll('&amp;', '&');
    if (!action) throw new Error(`no form at ${url}: ${html.slice(0, 300)}`);
    if (html.includes('action="/oauth/consent"')) fields[approve ? 'approve' : 'deny'] = '1';
    else if (html.includes('action="/oauth/login"')) Object.assign(fields, { username, password });
    else if (fields.prompt === 'login') Object.assign(fields, { login: username, password });
    else if (fields.prompt !== 'consent') throw new Error(`unexpected form at ${url}: ${html.slice(0, 300)}`);
    url = new URL(action, url).toString();
    init = { method: 'POST', body: new URLSearchParams(fields), headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  }
  throw new Error('too many steps in the authorization flow');
}
