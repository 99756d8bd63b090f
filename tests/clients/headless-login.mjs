// The person at the browser, headless: follows the authorization server's redirects, approves its
// consent page and signs in on its dev login page, over plain HTTP with fetch. Returns the URL the
// server finally redirects to (the client's redirect URI, with the code). The server's browser
// cookie is `__Host-` (Secure), carried by hand as a browser on localhost does.
export async function followAuthorization(authorizationUrl, { username, password, approve = true }) {
  const origin = new URL(authorizationUrl).origin;
  let cookie = null;
  let url = authorizationUrl;
  let init = {};
  for (let step = 0; step < 20; step += 1) {
    const headers = { ...(init.headers ?? {}) };
    if (cookie) headers.cookie = cookie;
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    const setCookie = response.headers.get('set-cookie') ?? '';
    const match = setCookie.match(/(__Host-mcp-auth=[^;]+)/);
    if (match) cookie = match[1];
    if ([301, 302, 303, 307].includes(response.status)) {
      const location = new URL(response.headers.get('location'), url).toString();
      if (!location.startsWith(origin)) return location;
      url = location;
      init = {};
      continue;
    }
    const html = await response.text();
    if (response.status !== 200) throw new Error(`${response.status} at ${url}: ${html.slice(0, 300)}`);
    const fields = Object.fromEntries([...html.matchAll(/<input type="hidden" name="(\w+)" value="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    let action;
    if (html.includes('action="/oauth/consent"')) {
      fields[approve ? 'approve' : 'deny'] = '1';
      action = '/oauth/consent';
    } else if (html.includes('action="/oauth/login"')) {
      Object.assign(fields, { username, password });
      action = '/oauth/login';
    } else {
      throw new Error(`unexpected page at ${url}: ${html.slice(0, 300)}`);
    }
    url = new URL(action, origin).toString();
    init = { method: 'POST', body: new URLSearchParams(fields), headers: { 'content-type': 'application/x-www-form-urlencoded' } };
  }
  throw new Error('too many steps in the authorization flow');
}
