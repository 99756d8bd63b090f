//! The few HTML pages a person sees: consent, the dev login, and errors that cannot go back to
//! the client. Every value is escaped; every page forbids framing and caching.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

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

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         button{{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem}}input{{display:block;margin:.3rem 0 1rem;padding:.4rem;width:100%}}\
         .scopes code{{font-family:monospace}}.error{{color:#b00020}}</style></head><body>{body}</body></html>",
        title = escape(title),
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No `form-action`: Chromium applies it to the redirect that follows a form post, and
            // after Allow (or a sign-in with remembered consent) that redirect goes to the
            // client's URI, which may use a private-use scheme (`cursor://…`, RFC 8252 §7.1) a
            // source list cannot name. Every value on these pages is escaped and no script runs
            // (`default-src 'none'`), so no injected form exists to be retargeted.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

/// The consent page: who is signing in, which client asks (its name is its own claim), where
/// the answer goes, which MCP server it wants, and for what. The form posts to `action` (the
/// consent endpoint under the issuer's path).
pub fn consent(view: &ConsentView, action: &str, request_id: &str, csrf: &str) -> Response {
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
         <button type=\"submit\" name=\"approve\" value=\"1\">Allow</button>\
         <button type=\"submit\" name=\"deny\" value=\"1\">Deny</button></form>",
        action = escape(action),
        user = escape(&view.user),
        resource = escape(&view.resource),
        client_id = escape(&view.client_id),
        host = escape(&view.client_host),
        request = escape(request_id),
        csrf = escape(csrf),
    );
    page(StatusCode::OK, "Allow access?", &body)
}

/// The `dev` upstream's login form, posting to `action` (the login endpoint under the issuer's
/// path).
pub fn login(action: &str, request_id: &str, csrf: &str, error: Option<&str>) -> Response {
    let error_html = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{error_html}<form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"request\" value=\"{request}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Username<input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>",
        action = escape(action),
        request = escape(request_id),
        csrf = escape(csrf),
    );
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(status, "Sign in", &body)
}

/// An error that cannot be sent back to the client (no valid redirect URI).
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h1>Sign-in cannot continue</h1><p class=\"error\" id=\"error\">{}</p>",
        escape(message)
    );
    page(status, "Sign-in error", &body)
}

/// A refused authorization request shown here rather than sent to the client's redirect URI.
pub fn refused(err: &OAuthError) -> Response {
    let status = StatusCode::from_u16(err.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    error(
        status,
        &format!(
            "The request was refused ({}): {}.",
            err.code, err.description
        ),
    )
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

    #[test]
    fn pages_run_no_script_and_frame_nowhere_but_let_the_answer_reach_a_private_use_scheme() {
        let response = login("/oauth/login", "r", "c", None);
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
