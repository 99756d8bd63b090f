// Drives the login and consent pages in headless Chromium (Debian's) the way a person would:
// reads what the pages show, takes a screenshot of each, signs in, approves, and reports the
// redirect back to the client. Usage: node consent-login.mjs <authorize-url> <screenshot-dir> <name>
// (the screenshots are <screenshot-dir>/<name>-login.png and <name>-consent.png).
import { chromium } from 'playwright-core';

const [authorizeUrl, shots, prefix] = process.argv.slice(2);
const redirectPrefix = new URL(authorizeUrl).searchParams.get('redirect_uri');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  // The client's redirect URI is not listening: the request for it is what counts.
  const isRedirect = (url) => (typeof url === 'string' ? url : url.href).startsWith(redirectPrefix);
  await page.goto(authorizeUrl);
  // Sign in first: consent is asked of a known user.
  await page.waitForSelector('input[name=username]');
  const login = { title: await page.title(), fields: await page.$$eval('form input:not([type=hidden])', (i) => i.map((x) => x.name)) };
  await page.screenshot({ path: `${shots}/${prefix}-login.png`, fullPage: true });
  await page.fill('input[name=username]', 'alice');
  await page.fill('input[name=password]', 'password');
  await Promise.all([page.waitForSelector('#client-name'), page.click('form button[type=submit]')]);
  const consent = {
    title: await page.title(),
    user: await page.textContent('#user'),
    client: await page.textContent('#client-name'),
    host: await page.textContent('#client-host'),
    resource: await page.textContent('#resource'),
    scopes: await page.$$eval('#scopes li code', (items) => items.map((item) => item.textContent)),
    buttons: await page.$$eval('form button', (buttons) => buttons.map((b) => b.name)),
  };
  await page.screenshot({ path: `${shots}/${prefix}-consent.png`, fullPage: true });
  const [request] = await Promise.all([
    page.waitForRequest((request) => isRedirect(request.url())),
    page.click('button[name=approve]'),
  ]);
  console.log(JSON.stringify({ consent, login, landing: request.url() }));
} finally {
  await browser.close();
}
