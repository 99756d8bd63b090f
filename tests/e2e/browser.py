"""A headless stand-in for the person at the browser: follows the authorization server's
redirects, approves (or denies) the consent page and signs in on the dev login page, all over
plain HTTP, and returns the final redirect to the client with its code.

The server's browser cookie is `__Host-` and therefore `Secure`; Python's cookie jar will not send
it over http://localhost, so it is carried by hand, as a browser on a secure-context localhost does.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin

import requests

COOKIE_RE = re.compile(r"(__Host-mcp-auth=[^;]+)")


class Browser:
    def __init__(self):
        self.cookie: str | None = None
        self.pages: list[str] = []

    def _headers(self):
        return {"cookie": self.cookie} if self.cookie else {}

    def _remember(self, response):
        match = COOKIE_RE.search(response.headers.get("set-cookie", ""))
        if match:
            self.cookie = match.group(1)

    def authorize(self, url: str, username: str, password: str = "password", approve: bool = True,
                  stop_at: str | None = None) -> str:
        """Runs the flow from `url`; returns the URL the server finally redirects to off-site."""
        origin = re.match(r"https?://[^/]+", url).group(0)
        response = requests.get(url, headers=self._headers(), allow_redirects=False, timeout=10)
        for _ in range(10):
            self._remember(response)
            if response.status_code in (301, 302, 303, 307):
                location = urljoin(response.url, response.headers["location"])
                if not location.startswith(origin):
                    return location
                response = requests.get(location, headers=self._headers(), allow_redirects=False, timeout=10)
                continue
            if response.status_code not in (200, 401):
                raise AssertionError(f"{response.status_code} at {response.url}: {response.text[:500]}")
            html = response.text
            self.pages.append(html)
            if stop_at and stop_at in response.url:
                return response.url
            fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))
            if 'action="/oauth/consent"' in html:
                fields["approve" if approve else "deny"] = "1"
                action = "/oauth/consent"
            elif 'action="/oauth/login"' in html:
                if response.status_code == 401:
                    raise AssertionError("the login was refused")
                fields.update(username=username, password=password)
                action = "/oauth/login"
            else:
                raise AssertionError(f"unexpected page at {response.url}: {html[:500]}")
            response = requests.post(urljoin(origin, action), data=fields, headers=self._headers(),
                                     allow_redirects=False, timeout=10)
        raise AssertionError("too many steps in the authorization flow")
