"""A headless stand-in for the person at the browser: follows the authorization server's
redirects, approves (or denies) its consent page, signs in on its dev login page or at the
upstream OpenID provider (oidc-provider's login and consent forms), all over plain HTTP, and
returns the URL the flow finally sends the browser to.

The server's browser cookie is `__Host-` and therefore `Secure`; Python's cookie jar will not send
it over http://localhost, so it is carried by hand, as a browser on a secure-context localhost does.
The identity provider's own cookies live in an ordinary session jar.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlparse

import requests

from harness import ROOT

SCREENSHOTS = ROOT / "target" / "screenshots"

COOKIE_RE = re.compile(r"(__Host-mcp-auth=[^;]+)")
FORM_RE = re.compile(r'<form[^>]*\saction="([^"]+)"[^>]*>', re.I)
HIDDEN_RE = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"\s*/?>')


class Browser:
    def __init__(self):
        self.cookie: str | None = None
        self.origin: str | None = None
        self.session = requests.Session()
        self.pages: list[str] = []

    def _send(self, method, url, **kwargs):
        headers = {}
        if self.cookie and self.origin and url.startswith(self.origin):
            headers["cookie"] = self.cookie
        response = self.session.request(method, url, headers=headers, allow_redirects=False, timeout=15, **kwargs)
        match = COOKIE_RE.search(response.headers.get("set-cookie", ""))
        if match:
            self.cookie = match.group(1)
        return response

    def get(self, url):
        return self._send("GET", url)

    def authorize(self, url: str, username: str, password: str = "password", approve: bool = True,
                  finish_at: str | None = None) -> str:
        """Runs the flow from `url`. Returns the first redirect that leaves the servers of the
        flow, or, with `finish_at`, the first one that starts with it."""
        self.origin = re.match(r"https?://[^/]+", url).group(0)
        response = self.get(url)
        for _ in range(20):
            if response.status_code in (301, 302, 303, 307):
                location = urljoin(response.url, response.headers["location"])
                if finish_at is not None and location.startswith(finish_at):
                    return location
                if finish_at is None and not location.startswith(self.origin) and not self._is_idp(location):
                    return location
                response = self.get(location)
                continue
            if response.status_code not in (200, 401):
                raise AssertionError(f"{response.status_code} at {response.url}: {response.text[:500]}")
            response = self._submit(response, username, password, approve)
        raise AssertionError("too many steps in the authorization flow")

    idp_origins: set[str] = set()

    def _is_idp(self, url):
        return any(url.startswith(origin) for origin in self.idp_origins)

    def _submit(self, response, username, password, approve):
        html = response.text
        self.pages.append(html)
        form = FORM_RE.search(html)
        if not form:
            raise AssertionError(f"no form at {response.url}: {html[:500]}")
        action = urljoin(response.url, form.group(1).replace("&amp;", "&"))
        fields = dict(HIDDEN_RE.findall(html))
        # The authorization server's forms post under its issuer's path (`/auth/oauth/login`).
        if re.search(r'action="[^"]*/oauth/consent"', html):
            fields["approve" if approve else "deny"] = "1"
        elif re.search(r'action="[^"]*/oauth/login"', html):
            if response.status_code == 401:
                raise AssertionError("the login was refused")
            fields.update(username=username, password=password)
        elif fields.get("prompt") == "login":  # the upstream OpenID provider's sign-in
            fields.update(login=username, password=password)
        elif fields.get("prompt") != "consent":
            raise AssertionError(f"unexpected form at {response.url}: {html[:500]}")
        return self._send("POST", action, data=fields)


def with_idp(origin: str):
    """Lets browsers follow redirects to the identity provider at `origin`."""
    Browser.idp_origins.add(origin)
    return urlparse(origin)


def screenshots():
    """Where the headless-Chromium tests save their screenshots, `<test>-<page>.png`, for a
    reviewer to look at (kept after the run, unlike the tests' temporary directories)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
