// Visits the authorization server's pages in headless Chromium (Debian's) the way a person meets
// them, and reports what each shows: status, type, title, the branding (name, whether the logo
// loaded, computed colours), the error text. A screenshot of each is saved as
// <shots>/<prefix>-<name>.png. Usage: node pages.mjs '<spec as JSON>' with
//   { shots, prefix, flow: { authorize, username, password }   sign in, then the consent page
//     visits: [{ name, url }],                                   pages opened by address
//     posts: [{ name, url, fields }] }                           forms posted from elsewhere
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});

/** What a person sees on the page now, and its screenshot. */
async function look(page, name, response) {
  // The logo is part of the page: wait for it to load (or fail) before judging and shooting.
  await page.waitForLoadState('load');
  const seen = await page.evaluate(() => {
    const style = (selector, property) => {
      const element = document.querySelector(selector);
      return element ? getComputedStyle(element)[property] : null;
    };
    const logo = document.querySelector('#brand-logo');
    return {
      title: document.title,
      brand: document.querySelector('#brand-name')?.textContent ?? null,
      logo: logo ? { loaded: logo.complete && logo.naturalWidth > 0, src: logo.src } : null,
      support: document.querySelector('#support')?.href ?? null,
      heading: document.querySelector('h1')?.textContent ?? null,
      error: document.querySelector('#error')?.textContent ?? null,
      background: style('body', 'backgroundColor'),
      text: style('body', 'color'),
      button: style('button.primary', 'backgroundColor'),
      buttonText: style('button.primary', 'color'),
      rule: style('header', 'borderBottomColor'),
    };
  });
  await page.screenshot({ path: `${spec.shots}/${spec.prefix}-${name}.png`, fullPage: true });
  return { name, status: response?.status() ?? null, type: response?.headers()['content-type'] ?? null, ...seen };
}

const pages = [];
try {
  // The logo's origin serves a self-signed certificate made by the test.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  if (spec.flow) {
    const page = await context.newPage();
    const redirect = new URL(spec.flow.authorize).searchParams.get('redirect_uri');
    pages.push(await look(page, 'login', await page.goto(spec.flow.authorize)));
    await page.fill('input[name=username]', spec.flow.username);
    await page.fill('input[name=password]', spec.flow.password);
    const [consent] = await Promise.all([page.waitForNavigation(), page.click('button.primary')]);
    pages.push(await look(page, 'consent', consent));
    // The client's redirect URI is not listening: the request for it is what counts.
    const [landing] = await Promise.all([
      page.waitForRequest((request) => request.url().startsWith(redirect)),
      page.click('button[name=approve]'),
    ]);
    pages.push({ name: 'landing', url: landing.url() });
    // It goes on to an error page of its own there: that tab is done.
    await page.close();
  }
  const page = await context.newPage();
  for (const visit of spec.visits ?? []) {
    pages.push(await look(page, visit.name, await page.goto(visit.url)));
  }
  for (const post of spec.posts ?? []) {
    // A form on another page posting to the server, as a stale tab or a forged form would.
    await page.setContent('<form method="post"></form>');
    await page.evaluate(({ url, fields }) => {
      const form = document.forms[0];
      form.action = url;
      for (const [name, value] of Object.entries(fields)) {
        const input = document.createElement('input');
        Object.assign(input, { type: 'hidden', name, value });
        form.append(input);
      }
    }, post);
    const [response] = await Promise.all([page.waitForNavigation(), page.evaluate(() => document.forms[0].submit())]);
    pages.push(await look(page, post.name, response));
  }
  console.log(JSON.stringify(pages));
} finally {
  await browser.close();
}
