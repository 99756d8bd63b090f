//! The few HTML pages a person sees: consent, the dev login, and errors that cannot go back to
//! the client — every error a browser can meet, the framework's own included. Every value is
//! escaped; every page forbids framing and caching; the configured branding dresses them.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::{Branding, Colour};
use crate::oauth::consent::ConsentView;
use crate::oauth::OAuthError;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// The pages' look without branding; branding adds to it.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}\
     button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem}input{display:block;box-sizing:border-box;margin:.3rem 0 1rem;padding:.4rem;width:100%}\
     .scopes code{font-family:monospace}.error{color:#b00020}";

/// No script runs (`default-src 'none'`), nothing frames the pages. No `form-action`: Chromium
/// applies it to the redirect that follows a form post, and after Allow (or a sign-in with
/// remembered consent) that redirect goes to the client's URI, which may use a private-use
/// scheme (`cursor://…`, RFC 8252 §7.1) a source list cannot name. Every value on these pages is
/// escaped, so no injected form exists to be retargeted.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// The pages a person sees, rendered with the configured branding (product name, logo, colours,
/// support link), built once at start.
pub struct Pages {
    style: String,
    /// The branded header and footer (empty without branding).
    header: String,
    footer: String,
    /// ` — <name>`, appended to every title.
    title_suffix: String,
    /// The CSP, widened for the logo's origin (`img-src`) when there is a logo.
    csp: HeaderValue,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new(&Branding::default())
    }
}

impl Pages {
    pub fn new(branding: &Branding) -> Self {
        let name = branding.name.as_deref().map(escape);
        let mut style = STYLE.to_owned();
        let branded = *branding != Branding::default();
        if branded {
            let rule = branding.primary.map_or_else(|| "#ddd".to_owned(), css);
            style.push_str(&format!(
                "header{{display:flex;align-items:center;gap:.75rem;padding-bottom:.75rem;margin-bottom:1.5rem;border-bottom:3px solid {rule}}}\
                 header img{{max-height:3rem;max-width:12rem}}header span{{font-size:1.25rem;font-weight:600}}footer{{margin-top:2rem;font-size:.9rem}}"
            ));
        }
        if let Some(primary) = branding.primary {
            // Links take the colour only where it reads as text on the page (WCAG AA, 4.5:1).
            let page = branding.background.unwrap_or(WHITE);
            let link = if contrast(primary, page) >= 4.5 {
                primary
            } else {
                readable_on(page)
            };
            style.push_str(&format!(
                "button.primary{{background:{p};color:{text};border:1px solid {p};border-radius:4px}}a{{color:{link}}}",
                p = css(primary),
                text = css(readable_on(primary)),
                link = css(link),
            ));
        }
        if let Some(background) = branding.background {
            let text = readable_on(background);
            style.push_str(&format!(
                "html,body{{background:{}}}body{{color:{}}}",
                css(background),
                css(text)
            ));
            if text == WHITE {
                // The default red is unreadable on a dark background.
                style.push_str(".error{color:#ff8a80}");
            }
        }
        let logo = branding.logo.as_ref().map(|url| {
            format!(
                "<img id=\"brand-logo\" src=\"{}\" alt=\"{}\">",
                escape(url.as_str()),
                name.as_deref()
                    .map_or_else(|| "Logo".to_owned(), |name| format!("{name} logo"))
            )
        });
        let header = if logo.is_some() || name.is_some() {
            format!(
                "<header id=\"brand\">{}{}</header>",
                logo.unwrap_or_default(),
                name.as_ref()
                    .map(|name| format!("<span id=\"brand-name\">{name}</span>"))
                    .unwrap_or_default()
            )
        } else {
            String::new()
        };
        let footer = branding
            .support
            .as_ref()
            .map(|url| {
                format!(
                    "<footer><a id=\"support\" href=\"{}\">Need help? Contact support</a></footer>",
                    escape(url.as_str())
                )
            })
            .unwrap_or_default();
        let csp = branding
            .logo
            .as_ref()
            .and_then(|url| {
                let origin = url.origin().ascii_serialization();
                HeaderValue::from_str(&format!(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src {origin}; frame-ancestors 'none'"
                ))
                .ok()
            })
            .unwrap_or_else(|| HeaderValue::from_static(CSP));
        Self {
            style,
            header,
            footer,
            title_suffix: name.map(|name| format!(" — {name}")).unwrap_or_default(),
            csp,
        }
    }

    fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <title>{title}{suffix}</title><style>{style}</style></head><body>{header}{body}{footer}</body></html>",
            title = escape(title),
            suffix = self.title_suffix,
            style = self.style,
            header = self.header,
            footer = self.footer,
        );
        (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CONTENT_SECURITY_POLICY, self.csp.clone()),
                (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
            ],
            html,
        )
            .into_response()
    }

    /// The consent page: who is signing in, which client asks (its name is its own claim),
    /// where the answer goes, which MCP server it wants, and for what. The form posts to
    /// `action` (the consent endpoint under the issuer's path).
    pub fn consent(
        &self,
        view: &ConsentView,
        action: &str,
        request_id: &str,
        csrf: &str,
    ) -> Response {
        let items: String = view
            .scopes
            .iter()
            .map(|(token, description)| match description {
                Some(text) => format!("<li><code>{}</code> — {}</li>", escape(token), escape(text)),
                None => format!("<li><code>{}</code></li>", escape(token)),
            })
            .collect();
        let name = match &view.client_name {
            Some(name) => format!(
                "<strong id=\"client-name\">{}</strong> <em>(a name the client chose itself)</em>",
                escape(name)
            ),
            None => "<strong id=\"client-name\">An unnamed client</strong>".to_owned(),
        };
        let body = format!(
            "<h1>Allow access?</h1>\
             <p>You are signed in as <strong id=\"user\">{user}</strong>.</p>\
             <p>{name} wants to use the MCP server <strong id=\"resource\">{resource}</strong> on your behalf.</p>\
             <p>Client <code id=\"client-id\">{client_id}</code>, of <strong id=\"client-host\">{host}</strong>.</p>\
             <p>It asks to:</p><ul class=\"scopes\" id=\"scopes\">{items}</ul>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"request\" value=\"{request}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" name=\"approve\" value=\"1\" class=\"primary\">Allow</button>\
             <button type=\"submit\" name=\"deny\" value=\"1\">Deny</button></form>",
            action = escape(action),
            user = escape(&view.user),
            resource = escape(&view.resource),
            client_id = escape(&view.client_id),
            host = escape(&view.client_host),
            request = escape(request_id),
            csrf = escape(csrf),
        );
        self.page(StatusCode::OK, "Allow access?", &body)
    }

    /// The `dev` upstream's login form, posting to `action` (the login endpoint under the
    /// issuer's path).
    pub fn login(
        &self,
        action: &str,
        request_id: &str,
        csrf: &str,
        error: Option<&str>,
    ) -> Response {
        let error_html = error
            .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
            .unwrap_or_default();
        let body = format!(
            "<h1>Sign in</h1>{error_html}<form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"request\" value=\"{request}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>Username<input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\" class=\"primary\">Sign in</button></form>",
            action = escape(action),
            request = escape(request_id),
            csrf = escape(csrf),
        );
        let status = if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        self.page(status, "Sign in", &body)
    }

    /// An error that cannot be sent back to the client (no valid redirect URI).
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        self.error_page(status, "Sign-in cannot continue", message)
    }

    fn error_page(&self, status: StatusCode, heading: &str, message: &str) -> Response {
        let body = format!(
            "<h1>{}</h1><p class=\"error\" id=\"error\">{}</p>",
            escape(heading),
            escape(message)
        );
        self.page(status, heading, &body)
    }

    /// A refused authorization request shown here rather than sent to the client's redirect
    /// URI.
    pub fn refused(&self, err: &OAuthError) -> Response {
        let status = StatusCode::from_u16(err.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
        self.error(
            status,
            &format!(
                "The request was refused ({}): {}.",
                err.code, err.description
            ),
        )
    }

    /// What the framework answered on its own (an extractor's rejection, a method the route
    /// does not take, no such route, a body over the limit, a timeout), as a page with the same
    /// status: a person never reads a framework's plain text. `Allow` and `Retry-After` are kept.
    pub fn framework(&self, status: StatusCode, headers: &HeaderMap) -> Response {
        let (heading, message) = match status {
            StatusCode::NOT_FOUND => (
                "Page not found",
                "There is no page at this address. Start again from your MCP client.",
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "Sign-in cannot continue",
                "This page cannot be opened that way. Start again from your MCP client.",
            ),
            StatusCode::REQUEST_TIMEOUT => (
                "Sign-in cannot continue",
                "The request took too long to arrive. Try again.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "Sign-in cannot continue",
                "The form sent is larger than this server accepts. Start again from your MCP client.",
            ),
            status if status.is_server_error() => (
                "Sign-in cannot continue",
                "Something went wrong on the authorization server. Try again shortly.",
            ),
            _ => (
                "Sign-in cannot continue",
                "This address is malformed: it was changed or cut short on its way here. Start again from your MCP client.",
            ),
        };
        let mut response = self.error_page(status, heading, message);
        for name in [header::ALLOW, header::RETRY_AFTER] {
            if let Some(value) = headers.get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }
}

const WHITE: Colour = Colour([0xff, 0xff, 0xff]);
const INK: Colour = Colour([0x22, 0x22, 0x22]);

fn css(colour: Colour) -> String {
    let Colour([r, g, b]) = colour;
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// WCAG 2 relative luminance.
fn luminance(colour: Colour) -> f64 {
    let linear = |channel: u8| {
        let c = f64::from(channel) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let Colour([r, g, b]) = colour;
    0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
}

/// WCAG 2 contrast ratio, from 1 (none) to 21.
fn contrast(a: Colour, b: Colour) -> f64 {
    let (a, b) = (luminance(a), luminance(b));
    (a.max(b) + 0.05) / (a.min(b) + 0.05)
}

/// White or near-black, whichever contrasts more with `background`, so that a configured colour
/// never makes its text unreadable.
fn readable_on(background: Colour) -> Colour {
    if contrast(WHITE, background) >= contrast(INK, background) {
        WHITE
    } else {
        INK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_client_name_is_shown_not_run() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    async fn html(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn acme() -> Branding {
        Branding {
            name: Some("Acme <MCP>".into()),
            logo: Some(url::Url::parse("https://cdn.acme.example:8443/img/logo.svg").unwrap()),
            primary: Some(Colour([0x0b, 0x5f, 0xff])),
            background: Some(Colour([0x10, 0x18, 0x20])),
            support: Some(url::Url::parse("https://help.acme.example/mcp?a=1&b=2").unwrap()),
        }
    }

    #[tokio::test]
    async fn without_branding_the_pages_look_as_they_always_did() {
        let pages = Pages::default();
        let response = pages.error(StatusCode::BAD_REQUEST, "No.");
        assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        let page = html(response).await;
        assert!(page.contains(&format!("<style>{STYLE}</style>")), "{page}");
        assert!(page.contains("<title>Sign-in cannot continue</title>"));
        assert!(
            !page.contains("<header") && !page.contains("<footer"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn branding_names_shows_and_colours_every_page_and_opens_the_csp_to_the_logo_only() {
        let pages = Pages::new(&acme());
        for response in [
            pages.login("/oauth/login", "r", "c", None),
            pages.consent(
                &ConsentView {
                    user: "Alice".into(),
                    client_name: None,
                    client_id: "c1".into(),
                    client_host: "127.0.0.1".into(),
                    resource: "https://mcp.example.com/mcp".into(),
                    scopes: vec![],
                },
                "/oauth/consent",
                "r",
                "c",
            ),
            pages.error(StatusCode::FORBIDDEN, "No."),
            pages.framework(StatusCode::NOT_FOUND, &HeaderMap::new()),
        ] {
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                "default-src 'none'; style-src 'unsafe-inline'; img-src https://cdn.acme.example:8443; frame-ancestors 'none'"
            );
            let page = html(response).await;
            assert!(page.contains(" — Acme &lt;MCP&gt;</title>"), "{page}");
            assert!(
                page.contains("<span id=\"brand-name\">Acme &lt;MCP&gt;</span>"),
                "{page}"
            );
            assert!(page.contains("<img id=\"brand-logo\" src=\"https://cdn.acme.example:8443/img/logo.svg\" alt=\"Acme &lt;MCP&gt; logo\">"), "{page}");
            assert!(
                page.contains("href=\"https://help.acme.example/mcp?a=1&amp;b=2\""),
                "{page}"
            );
            assert!(
                page.contains("button.primary{background:#0b5fff;color:#ffffff"),
                "{page}"
            );
            assert!(
                page.contains("html,body{background:#101820}body{color:#ffffff}"),
                "{page}"
            );
        }
    }

    #[test]
    fn text_on_a_configured_colour_is_whichever_of_white_and_ink_reads_better() {
        assert_eq!(readable_on(Colour([0x0b, 0x5f, 0xff])), WHITE);
        assert_eq!(readable_on(Colour([0x10, 0x18, 0x20])), WHITE);
        assert_eq!(readable_on(Colour([0xff, 0xd7, 0x00])), INK, "gold");
        assert_eq!(readable_on(WHITE), INK);
        assert!((contrast(WHITE, Colour([0, 0, 0])) - 21.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn links_take_the_primary_colour_only_where_it_reads_on_the_background() {
        let blue = Colour([0x0b, 0x5f, 0xff]);
        let on_white = Branding {
            primary: Some(blue),
            ..Branding::default()
        };
        let page = html(Pages::new(&on_white).error(StatusCode::BAD_REQUEST, "x")).await;
        assert!(page.contains("a{color:#0b5fff}"), "{page}");
        let on_dark = Branding {
            background: Some(Colour([0x10, 0x18, 0x20])),
            ..on_white
        };
        let page = html(Pages::new(&on_dark).error(StatusCode::BAD_REQUEST, "x")).await;
        assert!(page.contains("a{color:#ffffff}"), "{page}");
    }

    #[tokio::test]
    async fn a_framework_answer_becomes_a_page_with_its_status_and_allow_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        let response = Pages::default().framework(StatusCode::METHOD_NOT_ALLOWED, &headers);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET,HEAD");
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(html(response).await.contains("cannot be opened that way"));
    }

    #[test]
    fn pages_run_no_script_and_frame_nowhere_but_let_the_answer_reach_a_private_use_scheme() {
        let response = Pages::default().login("/oauth/login", "r", "c", None);
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
        assert!(
            !policy.contains("form-action"),
            "Chromium would block the redirect to `cursor://…` after the post: {policy}"
        );
    }
}
