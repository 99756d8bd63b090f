//! RFC 7591 dynamic client registration: what a client may register, parsed once into a typed
//! [`ClientMetadata`] with a size and type limit on every field, and checked against the policy
//! before anything is stored. The endpoint is open to anyone, so whatever it stores and later
//! shows (the consent page prints the name and URIs) must be bounded.

use serde_json::{json, Map, Value};
use url::{Host, Url};

use crate::oauth::id_jag::JWT_BEARER;
use crate::oauth::{ErrorCode, OAuthError, Scope};

/// Longest `client_name`, `software_id`, `software_version`, in characters.
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest URI (redirect, client, logo, terms, policy), in bytes.
pub const MAX_URI_BYTES: usize = 2048;
/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 16;
/// Most contacts, and the longest contact in characters.
pub const MAX_CONTACTS: usize = 8;
pub const MAX_CONTACT_CHARS: usize = 256;
/// Longest `scope`, in bytes.
pub const MAX_SCOPE_BYTES: usize = 1024;
/// Most entries in `grant_types` or `response_types` (there are only four grants to name).
pub const MAX_TYPES: usize = 8;

/// An RFC 7591 §3.2.2 error: `invalid_redirect_uri` or `invalid_client_metadata`. The message
/// names the field and quotes (a bounded prefix of) the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    RedirectUri(String),
    #[error("{0}")]
    Metadata(String),
}

impl RegistrationError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::RedirectUri(_) => ErrorCode::InvalidRedirectUri,
            Self::Metadata(_) => ErrorCode::InvalidClientMetadata,
        }
    }
}

impl From<RegistrationError> for OAuthError {
    fn from(err: RegistrationError) -> Self {
        OAuthError::new(err.code(), err.to_string())
    }
}

fn metadata_error(field: &str, reason: impl std::fmt::Display) -> RegistrationError {
    RegistrationError::Metadata(format!("{field}: {reason}"))
}

/// At most 40 characters of a value, for an error message that must not echo megabytes.
pub(crate) fn quoted(value: &str) -> String {
    let mut prefix: String = value.chars().take(40).collect();
    if prefix.len() < value.len() {
        prefix.push('…');
    }
    format!("`{prefix}`")
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

/// The grants a client may register for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    /// RFC 7523 with an ID-JAG (enterprise-managed authorization).
    JwtBearer,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::JwtBearer => JWT_BEARER,
        }
    }
}

/// Client metadata as registered: every field typed and bounded; fields this server does not
/// use are dropped (neither stored nor echoed).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// Sorted, without repetition.
    pub grant_types: Vec<GrantType>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub scope: Option<Scope>,
    pub contacts: Vec<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

impl ClientMetadata {
    /// Parses a registration request body.
    pub fn parse(body: &[u8]) -> Result<Self, RegistrationError> {
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            RegistrationError::Metadata(format!(
                "the body is not a JSON object (line {}, column {})",
                err.line(),
                err.column()
            ))
        })?;
        let object = value.as_object().ok_or_else(|| {
            RegistrationError::Metadata("the registration request must be a JSON object".into())
        })?;
        Self::from_object(object)
    }

    /// Reads every known field of `object` with its limits; unknown fields are ignored.
    pub fn from_object(object: &Map<String, Value>) -> Result<Self, RegistrationError> {
        let redirect_uris = match object.get("redirect_uris") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            _ => {
                return Err(RegistrationError::RedirectUri(
                    "redirect_uris must be a non-empty array of strings".into(),
                ))
            }
        };
        if redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(RegistrationError::RedirectUri(format!(
                "redirect_uris: {} given, at most {MAX_REDIRECT_URIS} allowed",
                redirect_uris.len()
            )));
        }
        let redirect_uris = redirect_uris
            .iter()
            .map(|item| {
                let uri = item.as_str().ok_or_else(|| {
                    RegistrationError::RedirectUri("redirect_uris must be strings".into())
                })?;
                if uri.len() > MAX_URI_BYTES {
                    return Err(RegistrationError::RedirectUri(format!(
                        "redirect_uris: {} is longer than {MAX_URI_BYTES} bytes",
                        quoted(uri)
                    )));
                }
                check_redirect_uri(uri)?;
                Ok(uri.to_owned())
            })
            .collect::<Result<Vec<_>, _>>()?;

        let token_endpoint_auth_method = match text(object, "token_endpoint_auth_method", 64)? {
            None => AuthMethod::None,
            Some(method) => match method.as_str() {
                "none" => AuthMethod::None,
                "client_secret_basic" => AuthMethod::ClientSecretBasic,
                "client_secret_post" => AuthMethod::ClientSecretPost,
                other => {
                    return Err(metadata_error(
                        "token_endpoint_auth_method",
                        format!("{} is not supported", quoted(other)),
                    ))
                }
            },
        };
        let grant_types = match strings(object, "grant_types", MAX_TYPES, 64)? {
            None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            Some(names) => {
                let mut grants = names
                    .iter()
                    .map(|name| match name.as_str() {
                        "authorization_code" => Ok(GrantType::AuthorizationCode),
                        "refresh_token" => Ok(GrantType::RefreshToken),
                        "client_credentials" => Ok(GrantType::ClientCredentials),
                        JWT_BEARER => Ok(GrantType::JwtBearer),
                        other => Err(metadata_error(
                            "grant_types",
                            format!("grant type {} is not supported", quoted(other)),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                grants.sort();
                grants.dedup();
                grants
            }
        };
        if let Some(types) = strings(object, "response_types", MAX_TYPES, 64)? {
            if let Some(other) = types.iter().find(|t| *t != "code") {
                return Err(metadata_error(
                    "response_types",
                    format!("{} is not supported; only `code` is", quoted(other)),
                ));
            }
        }
        let scope = text(object, "scope", MAX_SCOPE_BYTES)?
            .map(|wire| Scope::parse(&wire).map_err(|err| metadata_error("scope", err)))
            .transpose()?;
        let contacts =
            strings(object, "contacts", MAX_CONTACTS, MAX_CONTACT_CHARS)?.unwrap_or_default();
        Ok(Self {
            redirect_uris,
            token_endpoint_auth_method,
            grant_types,
            client_name: text(object, "client_name", MAX_TEXT_CHARS)?,
            client_uri: web_uri(object, "client_uri")?,
            logo_uri: web_uri(object, "logo_uri")?,
            tos_uri: web_uri(object, "tos_uri")?,
            policy_uri: web_uri(object, "policy_uri")?,
            scope,
            contacts,
            software_id: text(object, "software_id", MAX_TEXT_CHARS)?,
            software_version: text(object, "software_version", MAX_TEXT_CHARS)?,
        })
    }

    /// The metadata as stored and echoed back (RFC 7591 §3.2.1), defaults filled in.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("redirect_uris".into(), json!(self.redirect_uris));
        map.insert(
            "token_endpoint_auth_method".into(),
            json!(self.token_endpoint_auth_method.as_str()),
        );
        let grants: Vec<&str> = self.grant_types.iter().map(|g| g.as_str()).collect();
        map.insert("grant_types".into(), json!(grants));
        map.insert("response_types".into(), json!(["code"]));
        let optional = [
            ("client_name", &self.client_name),
            ("client_uri", &self.client_uri),
            ("logo_uri", &self.logo_uri),
            ("tos_uri", &self.tos_uri),
            ("policy_uri", &self.policy_uri),
            ("software_id", &self.software_id),
            ("software_version", &self.software_version),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                map.insert(field.into(), json!(value));
            }
        }
        if let Some(scope) = &self.scope {
            map.insert("scope".into(), json!(scope.to_string()));
        }
        if !self.contacts.is_empty() {
            map.insert("contacts".into(), json!(self.contacts));
        }
        map
    }
}

/// A string of at most `max_chars` characters, without control characters (they would corrupt
/// a log line or the consent page).
fn bounded(field: &str, value: &str, max_chars: usize) -> Result<String, RegistrationError> {
    if value.chars().count() > max_chars {
        return Err(metadata_error(
            field,
            format!("{} is longer than {max_chars} characters", quoted(value)),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(metadata_error(
            field,
            format!("{} contains a control character", quoted(value)),
        ));
    }
    Ok(value.to_owned())
}

/// An optional string field of at most `max_chars` characters.
fn text(
    object: &Map<String, Value>,
    field: &str,
    max_chars: usize,
) -> Result<Option<String>, RegistrationError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => bounded(field, value, max_chars).map(Some),
        Some(_) => Err(metadata_error(field, "must be a string")),
    }
}

/// An optional array of at most `max_items` strings of at most `max_chars` characters each.
fn strings(
    object: &Map<String, Value>,
    field: &str,
    max_items: usize,
    max_chars: usize,
) -> Result<Option<Vec<String>>, RegistrationError> {
    let items = match object.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(metadata_error(field, "must be an array of strings")),
    };
    if items.len() > max_items {
        return Err(metadata_error(
            field,
            format!("{} entries given, at most {max_items} allowed", items.len()),
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(value) => bounded(field, value, max_chars),
            _ => Err(metadata_error(field, "must be an array of strings")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An optional http(s) URL of at most [`MAX_URI_BYTES`] (shown as a link on the consent page).
fn web_uri(object: &Map<String, Value>, field: &str) -> Result<Option<String>, RegistrationError> {
    let Some(uri) = text(object, field, MAX_URI_BYTES)? else {
        return Ok(None);
    };
    if uri.len() > MAX_URI_BYTES {
        return Err(metadata_error(
            field,
            format!("{} is longer than {MAX_URI_BYTES} bytes", quoted(&uri)),
        ));
    }
    match Url::parse(&uri) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => Ok(Some(uri)),
        _ => Err(metadata_error(
            field,
            format!("{} is not an http(s) URL", quoted(&uri)),
        )),
    }
}

/// What registration allows, from the configuration.
pub struct Policy<'a> {
    pub confidential_clients: bool,
    pub scopes: &'a [String],
    /// Whether ID-JAGs are accepted (an `enterprise` section is configured).
    pub jwt_bearer: bool,
}

/// Metadata the policy accepts, and whether the client gets a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub metadata: ClientMetadata,
    pub confidential: bool,
}

/// Checks parsed metadata against what this server offers.
pub fn validate(
    metadata: ClientMetadata,
    policy: &Policy<'_>,
) -> Result<Registration, RegistrationError> {
    let confidential = match metadata.token_endpoint_auth_method {
        AuthMethod::None => false,
        AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
            if policy.confidential_clients =>
        {
            true
        }
        AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
            return Err(metadata_error(
                "token_endpoint_auth_method",
                "confidential clients are not enabled here: register with `none` and PKCE",
            ))
        }
    };
    if !confidential && metadata.grant_types.contains(&GrantType::ClientCredentials) {
        return Err(metadata_error(
            "grant_types",
            "client_credentials needs a confidential client",
        ));
    }
    if metadata.grant_types.contains(&GrantType::JwtBearer) {
        // The ID-JAG draft: for confidential clients only, so that an identity provider naming a
        // client in an assertion does not hand that client's access to whoever holds it.
        let refusal = if !policy.jwt_bearer {
            Some("enterprise-managed authorization (ID-JAG) is not enabled here")
        } else if !confidential {
            Some("the jwt-bearer grant (ID-JAG) needs a confidential client")
        } else {
            None
        };
        if let Some(reason) = refusal {
            return Err(metadata_error(
                "grant_types",
                format!("`{JWT_BEARER}`: {reason}"),
            ));
        }
    }
    if let Some(scope) = &metadata.scope {
        let offered = Scope::parse(&policy.scopes.join(" ")).unwrap_or_default();
        if let Some(unknown) = scope.first_outside(&offered) {
            return Err(metadata_error(
                "scope",
                format!(
                    "`{unknown}` is not offered here (offered: {})",
                    policy.scopes.join(" ")
                ),
            ));
        }
    }
    Ok(Registration {
        metadata,
        confidential,
    })
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
            jwt_bearer: true,
        }
    }

    fn register(request: Value, confidential: bool) -> Result<Registration, RegistrationError> {
        validate(
            ClientMetadata::parse(request.to_string().as_bytes())?,
            &policy(confidential),
        )
    }

    /// A valid public client with `extra` fields merged in.
    fn with(extra: Value) -> Result<Registration, RegistrationError> {
        let mut request = json!({"redirect_uris": ["https://a.example.com/cb"]});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        register(request, false)
    }

    fn refused(extra: Value) -> String {
        let err = with(extra.clone()).expect_err(&extra.to_string());
        assert_eq!(err.code(), ErrorCode::InvalidClientMetadata, "{err}");
        err.to_string()
    }

    #[test]
    fn a_public_mcp_client_registers_with_defaults() {
        let registration = register(
            json!({"client_name": "VS Code", "redirect_uris": ["http://127.0.0.1:33418/"]}),
            false,
        )
        .unwrap();
        assert!(!registration.confidential);
        let stored = registration.metadata.to_json();
        assert_eq!(stored["token_endpoint_auth_method"], "none");
        assert_eq!(
            stored["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(stored["response_types"], json!(["code"]));
        assert_eq!(stored["client_name"], "VS Code");
    }

    #[test]
    fn unknown_fields_are_neither_stored_nor_echoed() {
        let stored = with(json!({"jwks": {"keys": []}, "x-anything": "a".repeat(10_000)}))
            .unwrap()
            .metadata
            .to_json();
        assert!(!stored.contains_key("jwks") && !stored.contains_key("x-anything"));
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
            register(json!({"redirect_uris": []}), false)
                .unwrap_err()
                .code(),
            ErrorCode::InvalidRedirectUri
        );
    }

    #[test]
    fn redirect_uris_are_bounded_in_number_and_length() {
        let many: Vec<String> = (0..=MAX_REDIRECT_URIS)
            .map(|i| format!("https://a.example.com/{i}"))
            .collect();
        let err = register(json!({"redirect_uris": many}), false).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRedirectUri);
        assert!(err.to_string().contains("at most 16"), "{err}");
        let long = format!("https://a.example.com/{}", "x".repeat(MAX_URI_BYTES));
        let err = register(json!({"redirect_uris": [long]}), false).unwrap_err();
        assert!(err.to_string().contains("longer than 2048 bytes"), "{err}");
        assert!(
            err.to_string().len() < 200,
            "the value is quoted, not echoed"
        );
        let err = register(json!({"redirect_uris": [7]}), false).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRedirectUri);
    }

    #[test]
    fn client_name_is_a_bounded_string_without_control_characters() {
        assert!(with(json!({"client_name": "é".repeat(MAX_TEXT_CHARS)})).is_ok());
        let err = refused(json!({"client_name": "a".repeat(2_000_000)}));
        assert!(err.starts_with("client_name:"), "{err}");
        assert!(
            err.contains("longer than 200 characters") && err.len() < 200,
            "{err}"
        );
        assert!(refused(json!({"client_name": 42})).contains("must be a string"));
        assert!(refused(json!({"client_name": "a\u{1b}[31mb"})).contains("control character"));
    }

    #[test]
    fn software_id_and_version_are_bounded_strings() {
        for field in ["software_id", "software_version"] {
            assert!(with(json!({field: "1.2.3"})).is_ok());
            assert!(refused(json!({field: "v".repeat(201)})).starts_with(field));
            assert!(refused(json!({field: ["1"]})).contains("must be a string"));
        }
    }

    #[test]
    fn informational_uris_are_bounded_http_urls() {
        for field in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
            let stored = with(json!({field: "https://app.example.com/x"}))
                .unwrap()
                .metadata
                .to_json();
            assert_eq!(stored[field], "https://app.example.com/x");
            assert!(refused(json!({field: "javascript:alert(1)"})).contains("not an http(s) URL"));
            let long = format!("https://a.example.com/{}", "x".repeat(MAX_URI_BYTES));
            assert!(refused(json!({field: long})).starts_with(field));
            assert!(refused(json!({field: {"href": "x"}})).contains("must be a string"));
        }
    }

    #[test]
    fn contacts_are_few_bounded_strings() {
        assert!(with(json!({"contacts": ["ops@example.com"]})).is_ok());
        let many: Vec<String> = (0..=MAX_CONTACTS).map(|i| format!("{i}@x")).collect();
        assert!(refused(json!({"contacts": many})).contains("at most 8"));
        assert!(refused(json!({"contacts": ["a".repeat(257)]})).starts_with("contacts:"));
        assert!(refused(json!({"contacts": "ops@example.com"})).contains("array of strings"));
        assert!(refused(json!({"contacts": [1]})).contains("array of strings"));
    }

    #[test]
    fn scope_is_bounded_well_formed_and_offered_here() {
        let stored = with(json!({"scope": "offline_access  mcp:tools"}))
            .unwrap()
            .metadata
            .to_json();
        assert_eq!(stored["scope"], "mcp:tools offline_access");
        assert!(refused(json!({"scope": "mcp:admin"})).contains("`mcp:admin`"));
        assert!(refused(json!({"scope": "a".repeat(MAX_SCOPE_BYTES + 1)})).starts_with("scope:"));
        assert!(refused(json!({"scope": "bad\"quote"})).starts_with("scope:"));
        assert!(refused(json!({"scope": ["mcp:tools"]})).contains("must be a string"));
    }

    #[test]
    fn grant_and_response_types_are_known_few_and_deduplicated() {
        let stored =
            with(json!({"grant_types": ["refresh_token", "authorization_code", "refresh_token"]}))
                .unwrap()
                .metadata
                .to_json();
        assert_eq!(
            stored["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert!(refused(json!({"grant_types": ["password"]})).contains("`password`"));
        assert!(refused(json!({"grant_types": vec!["refresh_token"; 9]})).contains("at most 8"));
        assert!(refused(json!({"grant_types": "authorization_code"})).contains("array"));
        assert!(refused(json!({"response_types": ["token"]})).contains("`token`"));
        assert!(refused(json!({"response_types": [1]})).contains("array of strings"));
    }

    #[test]
    fn token_endpoint_auth_method_is_one_this_server_supports() {
        assert!(
            refused(json!({"token_endpoint_auth_method": "private_key_jwt"}))
                .contains("`private_key_jwt`")
        );
        assert!(refused(json!({"token_endpoint_auth_method": 1})).contains("must be a string"));
    }

    #[test]
    fn confidential_clients_only_when_enabled() {
        let request = json!({"redirect_uris": ["https://a.example.com/cb"], "token_endpoint_auth_method": "client_secret_basic",
                             "grant_types": ["client_credentials"]});
        assert_eq!(
            register(request.clone(), false).unwrap_err().code(),
            ErrorCode::InvalidClientMetadata
        );
        assert!(register(request, true).unwrap().confidential);
        let public_m2m = json!({"redirect_uris": ["https://a.example.com/cb"], "grant_types": ["client_credentials"]});
        assert!(register(public_m2m, true).is_err());
    }

    #[test]
    fn the_jwt_bearer_grant_is_for_confidential_clients_where_id_jags_are_accepted() {
        let agent = json!({"redirect_uris": ["https://a.example.com/cb"], "token_endpoint_auth_method": "client_secret_post",
                           "grant_types": [JWT_BEARER]});
        let registered = register(agent.clone(), true).unwrap();
        assert_eq!(
            registered.metadata.to_json()["grant_types"],
            json!([JWT_BEARER])
        );
        let public =
            json!({"redirect_uris": ["https://a.example.com/cb"], "grant_types": [JWT_BEARER]});
        assert!(register(public, true)
            .unwrap_err()
            .to_string()
            .contains("needs a confidential client"));
        let without = Policy {
            jwt_bearer: false,
            ..policy(true)
        };
        let err = validate(
            ClientMetadata::parse(agent.to_string().as_bytes()).unwrap(),
            &without,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not enabled here"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_refused_without_echoing_it() {
        for body in [&b"not json"[..], b"[1, 2]", b"\"x\""] {
            let err = ClientMetadata::parse(body).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidClientMetadata);
        }
    }
}
