//! RFC 7591 dynamic client registration: what a client may register, checked before anything
//! is stored.

use serde_json::{json, Map, Value};
use url::{Host, Url};

/// An RFC 7591 §3.2.2 error: `invalid_redirect_uri` or `invalid_client_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    RedirectUri(String),
    #[error("{0}")]
    Metadata(String),
}

impl RegistrationError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::RedirectUri(_) => "invalid_redirect_uri",
            Self::Metadata(_) => "invalid_client_metadata",
        }
    }
}

/// What registration allows, from the configuration.
pub struct Policy<'a> {
    pub confidential_clients: bool,
    pub scopes: &'a [String],
}

/// Checked client metadata, normalised (defaults filled in) as it is stored and echoed back.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub metadata: Map<String, Value>,
    pub confidential: bool,
}

pub fn validate(request: &Value, policy: &Policy<'_>) -> Result<Registration, RegistrationError> {
    let meta = |reason: &str| RegistrationError::Metadata(reason.to_owned());
    let object = request
        .as_object()
        .ok_or_else(|| meta("the registration request must be a JSON object"))?;

    let redirect_uris: Vec<String> = match object.get("redirect_uris") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    RegistrationError::RedirectUri("redirect_uris must be strings".into())
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(RegistrationError::RedirectUri(
                "redirect_uris must be a non-empty array".into(),
            ))
        }
    };
    for uri in &redirect_uris {
        check_redirect_uri(uri)?;
    }

    let auth_method = match object.get("token_endpoint_auth_method") {
        None => "none",
        Some(Value::String(method)) => method.as_str(),
        Some(_) => return Err(meta("token_endpoint_auth_method must be a string")),
    };
    let confidential = match auth_method {
        "none" => false,
        "client_secret_basic" | "client_secret_post" if policy.confidential_clients => true,
        "client_secret_basic" | "client_secret_post" => {
            return Err(meta("confidential clients are not enabled here: register with token_endpoint_auth_method \"none\" and PKCE"))
        }
        other => return Err(meta(&format!("token_endpoint_auth_method `{other}` is not supported"))),
    };

    let grant_types = strings(object, "grant_types")?
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    for grant in &grant_types {
        match grant.as_str() {
            "authorization_code" | "refresh_token" => {}
            "client_credentials" if confidential => {}
            "client_credentials" => {
                return Err(meta("client_credentials needs a confidential client"))
            }
            other => return Err(meta(&format!("grant type `{other}` is not supported"))),
        }
    }
    let response_types = strings(object, "response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|t| t != "code") {
        return Err(meta("only response type `code` is supported"));
    }
    if let Some(Value::String(scope)) = object.get("scope") {
        if let Some(unknown) = scope
            .split_ascii_whitespace()
            .find(|s| !policy.scopes.iter().any(|a| a == s))
        {
            return Err(meta(&format!(
                "scope `{unknown}` is not offered here (offered: {})",
                policy.scopes.join(" ")
            )));
        }
    }

    let mut metadata = Map::new();
    for field in [
        "client_name",
        "client_uri",
        "logo_uri",
        "scope",
        "software_id",
        "software_version",
        "contacts",
        "tos_uri",
        "policy_uri",
    ] {
        if let Some(value) = object.get(field) {
            metadata.insert(field.to_owned(), value.clone());
        }
    }
    metadata.insert("redirect_uris".into(), json!(redirect_uris));
    metadata.insert("token_endpoint_auth_method".into(), json!(auth_method));
    metadata.insert("grant_types".into(), json!(grant_types));
    metadata.insert("response_types".into(), json!(response_types));
    Ok(Registration {
        metadata,
        confidential,
    })
}

fn strings(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<String>>, RegistrationError> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| RegistrationError::Metadata(format!("{field} must be strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(RegistrationError::Metadata(format!(
            "{field} must be an array"
        ))),
    }
}

/// https anywhere; http only to a loopback host (RFC 8252 §7.3, any port); or a private-use
/// scheme (RFC 8252 §7.1). Never a fragment.
pub fn check_redirect_uri(uri: &str) -> Result<(), RegistrationError> {
    let bad = |reason: &str| RegistrationError::RedirectUri(format!("`{uri}`: {reason}"));
    let url = Url::parse(uri).map_err(|err| bad(&err.to_string()))?;
    if url.fragment().is_some() {
        return Err(bad("a redirect URI must not have a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host() {
            Some(Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
            Some(Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
            Some(Host::Domain("localhost")) => Ok(()),
            _ => Err(bad(
                "http is allowed only to a loopback address (use https)",
            )),
        },
        "javascript" | "data" | "file" | "ftp" | "ws" | "wss" | "about" | "blob" => {
            Err(bad("this scheme cannot be a redirect URI"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(confidential: bool) -> Policy<'static> {
        static SCOPES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let scopes = SCOPES.get_or_init(|| vec!["mcp:tools".into(), "offline_access".into()]);
        Policy {
            confidential_clients: confidential,
            scopes,
        }
    }

    #[test]
    fn a_public_mcp_client_registers_with_defaults() {
        let registration = validate(
            &json!({"client_name": "VS Code", "redirect_uris": ["http://127.0.0.1:33418/"]}),
            &policy(false),
        )
        .unwrap();
        assert!(!registration.confidential);
        assert_eq!(registration.metadata["token_endpoint_auth_method"], "none");
        assert_eq!(
            registration.metadata["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(registration.metadata["client_name"], "VS Code");
    }

    #[test]
    fn redirect_uris_must_be_https_loopback_or_private_use() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:8765/callback",
            "http://[::1]:1/cb",
            "http://localhost:9/cb",
            "com.example.app:/oauth2redirect",
            "vscode://vscode.github-authentication/did-authenticate",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://evil.example.com/cb",
            "https://a.example.com/cb#frag",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(
                matches!(
                    check_redirect_uri(bad),
                    Err(RegistrationError::RedirectUri(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            validate(&json!({"redirect_uris": []}), &policy(false))
                .unwrap_err()
                .code(),
            "invalid_redirect_uri"
        );
    }

    #[test]
    fn confidential_clients_only_when_enabled() {
        let request = json!({"redirect_uris": ["https://a.example.com/cb"], "token_endpoint_auth_method": "client_secret_basic",
                             "grant_types": ["client_credentials"]});
        assert_eq!(
            validate(&request, &policy(false)).unwrap_err().code(),
            "invalid_client_metadata"
        );
        assert!(validate(&request, &policy(true)).unwrap().confidential);
        let public_m2m = json!({"redirect_uris": ["https://a.example.com/cb"], "grant_types": ["client_credentials"]});
        assert!(validate(&public_m2m, &policy(true)).is_err());
    }

    #[test]
    fn unknown_scopes_grants_and_response_types_are_refused() {
        let base = |extra: Value| {
            let mut request = json!({"redirect_uris": ["https://a.example.com/cb"]});
            request
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            validate(&request, &policy(false))
        };
        assert!(base(json!({"scope": "mcp:tools offline_access"})).is_ok());
        assert!(base(json!({"scope": "mcp:admin"}))
            .unwrap_err()
            .to_string()
            .contains("mcp:admin"));
        assert!(base(json!({"grant_types": ["password"]})).is_err());
        assert!(base(json!({"response_types": ["token"]})).is_err());
        assert!(base(json!({"token_endpoint_auth_method": "private_key_jwt"})).is_err());
    }
}
