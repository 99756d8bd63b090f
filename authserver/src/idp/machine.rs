//! The machine clients the operator registered (`machine_clients`) and the workload platforms
//! whose tokens authenticate them (`workload_identity`): for a client assertion, whose keys
//! verify it and which client it authenticates. What the verified claims must say is decided in
//! `oauth::client_assertion`.

use openidconnect::core::CoreJsonWebKeySet;
use serde_json::{json, Value};

use crate::config::{Config, EnterpriseIssuer, MachineClientConfig};
use crate::idp::enterprise::{check_signature, Signature, TrustedIssuer, VerifyError};
use crate::oauth::client_assertion::Presenter;
use crate::oauth::id_jag::{quoted, Assertion, AssertionError};
use crate::store::StoredClient;

/// A key-signed assertion is made for one request: an hour is already generous.
const MAX_CLIENT_ASSERTION_SECONDS: i64 = 3600;

/// The registered machine clients and the trusted workload platforms.
pub struct MachineClients {
    clients: Vec<MachineClient>,
    platforms: Vec<TrustedIssuer>,
    max_workload_seconds: i64,
    /// What a client that names no `scope` may have: every scope offered but `offline_access`.
    default_scope: String,
}

struct MachineClient {
    config: MachineClientConfig,
    keys: Keys,
}

/// Where a client's public keys are.
enum Keys {
    Inline(CoreJsonWebKeySet),
    Published(Box<TrustedIssuer>),
    /// It has none: its workload platform signs for it.
    Workload,
}

/// A client authenticated by an assertion, and how the assertion is to be judged.
pub struct Verified {
    pub client: StoredClient,
    /// A key-signed assertion is single-use; a workload token is not.
    pub single_use: bool,
    pub max_lifetime: i64,
}

impl MachineClients {
    /// Built from the checked configuration (`Config::resolve` refused bad keys already).
    pub fn new(config: &Config) -> Self {
        let clients = config
            .machine_clients
            .iter()
            .map(|client| MachineClient {
                keys: keys_of(client),
                config: client.clone(),
            })
            .collect();
        let workload = config.workload_identity.as_ref();
        let default_scope = config
            .scopes
            .iter()
            .filter(|scope| *scope != "offline_access")
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            clients,
            platforms: workload
                .map(|w| w.issuers.iter().cloned().map(TrustedIssuer::new).collect())
                .unwrap_or_default(),
            max_workload_seconds: workload.map_or(0, |w| {
                i64::try_from(w.max_token_seconds).unwrap_or(i64::MAX)
            }),
            default_scope,
        }
    }

    /// Whether any client may authenticate with a JWT (`private_key_jwt` is then advertised).
    pub fn any(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The workload platforms' issuers.
    pub fn platforms(&self) -> Vec<&str> {
        self.platforms.iter().map(TrustedIssuer::issuer).collect()
    }

    /// The groups the operator gave a machine client (never what a client registered itself).
    pub fn groups(&self, client_id: &str) -> Option<&[String]> {
        self.find(client_id)
            .map(|client| client.config.groups.as_slice())
            .filter(|groups| !groups.is_empty())
    }

    fn find(&self, client_id: &str) -> Option<&MachineClient> {
        self.clients
            .iter()
            .find(|c| c.config.client_id == client_id)
    }

    /// Checks the assertion's signature with the keys of whoever presents it and says which
    /// client it authenticates.
    pub async fn verify(
        &self,
        assertion: &Assertion,
        presenter: &Presenter,
    ) -> Result<Verified, VerifyError> {
        match presenter {
            Presenter::Client(client_id) => {
                let client = self
                    .find(client_id)
                    .filter(|client| !matches!(client.keys, Keys::Workload))
                    .ok_or_else(|| AssertionError::UnknownClient(quoted(client_id)))?;
                match &client.keys {
                    Keys::Inline(set) => match check_signature(set, assertion) {
                        Signature::Valid => {}
                        Signature::Invalid => return Err(AssertionError::BadSignature.into()),
                        Signature::NoKey => {
                            return Err(AssertionError::unknown_key(assertion.kid.as_deref()).into())
                        }
                    },
                    Keys::Published(keys) => keys.verify(assertion).await?,
                    Keys::Workload => {
                        return Err(AssertionError::UnknownClient(quoted(client_id)).into())
                    }
                }
                Ok(Verified {
                    client: self.stored(client),
                    single_use: true,
                    max_lifetime: MAX_CLIENT_ASSERTION_SECONDS,
                })
            }
            Presenter::Workload { issuer, subject } => {
                let unbound = || AssertionError::UnboundWorkload {
                    issuer: quoted(issuer),
                    subject: quoted(subject),
                };
                let platform = self
                    .platforms
                    .iter()
                    .find(|platform| platform.issuer() == issuer)
                    .ok_or_else(unbound)?;
                platform.verify(assertion).await?;
                let client = self
                    .clients
                    .iter()
                    .find(|client| {
                        client.config.workload.as_ref().is_some_and(|binding| {
                            &binding.issuer == issuer && &binding.subject == subject
                        })
                    })
                    .ok_or_else(unbound)?;
                Ok(Verified {
                    client: self.stored(client),
                    single_use: false,
                    max_lifetime: self.max_workload_seconds,
                })
            }
        }
    }

    /// The client as the grants read a registered one: its grant types, scope and name.
    fn stored(&self, client: &MachineClient) -> StoredClient {
        let config = &client.config;
        let mut metadata = json!({
            "client_id": config.client_id,
            "grant_types": config.grant_types,
            "scope": config.scope.clone().unwrap_or_else(|| self.default_scope.clone()),
            "token_endpoint_auth_method": "private_key_jwt",
        });
        if let Some(name) = &config.client_name {
            metadata["client_name"] = Value::String(name.clone());
        }
        StoredClient {
            client_id: config.client_id.clone(),
            secret_sha256: None,
            metadata,
            // Not in the store: nothing to mark as used, nothing for the purge.
            created_at: 0,
            last_used_at: None,
        }
    }
}

fn keys_of(client: &MachineClientConfig) -> Keys {
    if let Some(set) = client
        .jwks
        .as_ref()
        .and_then(|jwks| serde_json::from_value::<CoreJsonWebKeySet>(jwks.clone()).ok())
    {
        return Keys::Inline(set);
    }
    match &client.jwks_uri {
        Some(uri) => Keys::Published(Box::new(TrustedIssuer::new(EnterpriseIssuer {
            issuer: uri.clone(),
            jwks_uri: Some(uri.clone()),
            subject_claim: "sub".to_owned(),
            groups_claim: None,
            roles_claim: None,
            allow_http_issuer: client.allow_http_jwks_uri,
        }))),
        // A client with unreadable inline keys verifies nothing (the configuration check
        // refuses them before this).
        None if client.jwks.is_some() => Keys::Inline(CoreJsonWebKeySet::new(Vec::new())),
        None => Keys::Workload,
    }
}
