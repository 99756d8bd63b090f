//! `mcp-mesh-authserver admin …`: what an operator does to the server's clients, grants, signing
//! keys and database — with the server running or stopped, on SQLite or PostgreSQL, from the
//! server's own configuration. The decisions (what to revoke, in which order, what to tell) are
//! plain functions over the store; parsing the command line and printing stay thin around them.
//!
//! Every revocation says what it cannot do: access tokens are JWTs the filter verifies offline
//! against the JWKS, so revoking stops refreshes and new tokens, and the access tokens already
//! issued live until their `exp`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use url::Url;

use crate::config::{Config, ConfigError, Overrides};
use crate::keys::{self, KeyError, KeyInfo, KeyKind, KeyRing};
use crate::oauth::Clock;
use crate::store::{
    redacted, Backend, ClientState, ListedClient, LiveFamily, Owner, PostgresStore, PurgeCutoffs,
    Purged, SqliteStore, Store, StoreError, StoredConsent,
};

/// Shown with every command that revokes: what users must know about access tokens.
const ACCESS_TOKENS_NOTE: &str = "Access tokens are JWTs the filter verifies on its own, without \
asking this server: revoking stops refreshes and new tokens at once, but an access token already \
issued stays valid until it expires (at most `lifetimes.access_seconds` after its issue).";

/// Administer the authorization server: clients, users' grants, signing keys, expired rows.
///
/// Reads the same configuration as the server (`--config`, `--database`, `--signing-key` and
/// their environment variables) and works while the server runs, on SQLite and PostgreSQL.
#[derive(Debug, Args)]
#[command(after_help = ACCESS_TOKENS_NOTE)]
pub struct Admin {
    /// Print JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Registered clients: list them, or revoke one.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// A user's grants: the sign-ins whose refresh token still works, and their consents.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Signing keys, for the rotation runbook (docs/runbooks.md): generate one, list the
    /// configured ones.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Delete expired rows now (what the server does every `server.purge_interval_seconds`)
    /// and print how many went from each table.
    Purge,
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// Every registered client: id, name, type, redirect hosts, when created and last used.
    List {
        /// Include the clients an administrator revoked.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a client: it gets no token and signs no one in from now on, every sign-in it
    /// holds stops refreshing, and its consents are forgotten. Running it again is harmless.
    #[command(after_help = ACCESS_TOKENS_NOTE)]
    Revoke {
        /// The client's `client_id` (see `admin clients list`).
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum GrantsCommand {
    /// A user's sign-ins whose refresh token still works, and the clients they approved.
    List {
        /// The user's subject: the `sub` of their tokens (`dev:<username>` with the built-in
        /// login).
        #[arg(long = "user", value_name = "SUBJECT")]
        subject: String,
    },
    /// Revoke every sign-in (refresh-token family) and consent of a user: their refresh
    /// tokens are refused from now on, and their next sign-in asks for consent again.
    #[command(after_help = ACCESS_TOKENS_NOTE)]
    Revoke {
        /// The user's subject: the `sub` of their tokens (`dev:<username>` with the built-in
        /// login).
        #[arg(long = "user", value_name = "SUBJECT")]
        subject: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a signing key into a new file (PKCS#8 PEM, mode 0600; an existing file is
    /// never overwritten) and print its `kid`.
    Generate {
        /// Where to write the key.
        #[arg(long = "out", value_name = "FILE")]
        out: PathBuf,
        /// Its algorithm: keep the one of the current key (`admin keys list`) unless a
        /// verifier needs another.
        #[arg(long, value_enum, default_value_t = Algorithm::Es256)]
        algorithm: Algorithm,
    },
    /// The configured signing keys in order: the first signs, all are published in the JWKS.
    List,
}

/// The algorithms `keys generate` offers (those the server signs with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Algorithm {
    /// P-256, ES256.
    Es256,
    /// RSA 2048, RS256.
    Rs256,
    /// Ed25519, EdDSA.
    Eddsa,
}

impl From<Algorithm> for KeyKind {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Es256 => KeyKind::P256,
            Algorithm::Rs256 => KeyKind::Rsa,
            Algorithm::Eddsa => KeyKind::Ed25519,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("no client `{0}` is registered here, and no live grant or consent names it; `admin clients list --all` shows the registered clients")]
    UnknownClient(String),
    #[error("no signing_keys are configured (the server then signs with an ephemeral key that dies with it); create one with `admin keys generate --out <file>` and list it in `signing_keys`")]
    NoSigningKeys,
    #[error("the SQLite database {0} does not exist; point `--database` (or `database` in the configuration) at the server's")]
    NoDatabase(String),
    #[error("cannot print the answer: {0}")]
    Output(#[from] std::io::Error),
}

/// Where the command takes its settings from: the server's configuration file and overrides.
pub struct Settings<'a> {
    pub config_file: Option<&'a Path>,
    pub overrides: Overrides,
}

impl Settings<'_> {
    fn config(&self) -> Result<Config, ConfigError> {
        Config::load(self.config_file, self.overrides.clone())
    }
}

/// Runs an admin command, printing its answer to `out`.
pub async fn run(
    admin: Admin,
    settings: &Settings<'_>,
    clock: &dyn Clock,
    out: &mut impl Write,
) -> Result<(), AdminError> {
    let report = match admin.command {
        AdminCommand::Keys(KeysCommand::Generate {
            out: path,
            algorithm,
        }) => {
            let key = keys::generate(algorithm.into(), &path)?;
            Report::Generated(GeneratedKey { file: path, key })
        }
        AdminCommand::Keys(KeysCommand::List) => {
            // Keys given on the command line need no configuration file.
            let files = if settings.overrides.signing_keys.is_empty() {
                settings.config()?.signing_keys
            } else {
                settings.overrides.signing_keys.clone()
            };
            Report::Keys(list_keys(&files)?)
        }
        AdminCommand::Clients(command) => {
            on_database(settings, clock, OnDatabase::Clients(command)).await?
        }
        AdminCommand::Grants(command) => {
            on_database(settings, clock, OnDatabase::Grants(command)).await?
        }
        AdminCommand::Purge => on_database(settings, clock, OnDatabase::Purge).await?,
    };
    if admin.json {
        serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.text())?;
    }
    Ok(())
}

/// The commands that work on the database.
enum OnDatabase {
    Clients(ClientsCommand),
    Grants(GrantsCommand),
    Purge,
}

/// Opens the configured database (an SQLite file must exist: a mistyped path would otherwise
/// be a new, empty database) and runs `command` on it.
async fn on_database(
    settings: &Settings<'_>,
    clock: &dyn Clock,
    command: OnDatabase,
) -> Result<Report, AdminError> {
    let config = settings.config()?;
    match Backend::of(&config.database)? {
        Backend::Sqlite => {
            let store = SqliteStore::open_existing(&config.database)
                .await?
                .ok_or_else(|| AdminError::NoDatabase(redacted(&config.database)))?;
            on_store(command, &config, &store, clock).await
        }
        Backend::Postgres => {
            let store = PostgresStore::open(&config.database).await?;
            on_store(command, &config, &store, clock).await
        }
    }
}

async fn on_store<S: Store>(
    command: OnDatabase,
    config: &Config,
    store: &S,
    clock: &dyn Clock,
) -> Result<Report, AdminError> {
    // Rows an older replica wrote during a rolling upgrade name their owner only in their JSON.
    let filled = store.fill_owners().await?;
    if filled > 0 {
        tracing::info!(
            filled,
            "owner columns filled in for grants written by an older version"
        );
    }
    let now = clock.now();
    let access_seconds = config.lifetimes.access_seconds;
    Ok(match command {
        OnDatabase::Clients(ClientsCommand::List { all }) => {
            Report::Clients(list_clients(store, all).await?)
        }
        OnDatabase::Clients(ClientsCommand::Revoke { client_id }) => {
            Report::ClientRevoked(revoke_client(store, &client_id, now, access_seconds).await?)
        }
        OnDatabase::Grants(GrantsCommand::List { subject }) => {
            Report::Grants(user_grants(store, &subject, now).await?)
        }
        OnDatabase::Grants(GrantsCommand::Revoke { subject }) => {
            Report::UserRevoked(revoke_user(store, &subject, now, access_seconds).await?)
        }
        OnDatabase::Purge => Report::Purged(
            store
                .purge(PurgeCutoffs::at(
                    now,
                    config.registration.unused_client_seconds,
                ))
                .await?,
        ),
    })
}

/// A registered client as the admin command shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientSummary {
    pub client_id: String,
    /// The name the client chose for itself, if any.
    pub client_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: ClientKind,
    /// The hosts its redirect URIs point at (for a private-use scheme, `scheme://host`).
    pub redirect_hosts: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub created_at: i64,
    /// When it last signed someone in or got a token (to the hour), if ever.
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// No secret: a native or browser app proving itself with PKCE.
    Public,
    /// Authenticates with a secret (machine clients).
    Confidential,
}

impl From<ListedClient> for ClientSummary {
    fn from(listed: ListedClient) -> Self {
        let client = listed.client;
        let redirect_uris: Vec<String> = client.metadata["redirect_uris"]
            .as_array()
            .map(|uris| {
                uris.iter()
                    .filter_map(|uri| uri.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut redirect_hosts: Vec<String> = Vec::new();
        for host in redirect_uris.iter().map(|uri| redirect_host(uri)) {
            if !redirect_hosts.contains(&host) {
                redirect_hosts.push(host);
            }
        }
        Self {
            client_name: client.metadata["client_name"].as_str().map(str::to_owned),
            kind: if client.secret_sha256.is_some() {
                ClientKind::Confidential
            } else {
                ClientKind::Public
            },
            client_id: client.client_id,
            redirect_hosts,
            redirect_uris,
            created_at: client.created_at,
            last_used_at: client.last_used_at,
            revoked_at: listed.revoked_at,
        }
    }
}

/// The host a redirect URI sends the code to: for http(s) the host (a loopback client may use
/// any port), for a private-use scheme (`cursor://…`) the scheme and what follows it.
fn redirect_host(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            url.host_str().unwrap_or_default().to_owned()
        }
        Ok(url) => match url.host_str() {
            Some(host) => format!("{}://{host}", url.scheme()),
            None => format!("{}:", url.scheme()),
        },
        Err(_) => uri.to_owned(),
    }
}

/// The registered clients, oldest first; revoked ones only with `all`.
pub async fn list_clients<S: Store>(
    store: &S,
    all: bool,
) -> Result<Vec<ClientSummary>, AdminError> {
    Ok(store
        .clients()
        .await?
        .into_iter()
        .filter(|listed| all || listed.revoked_at.is_none())
        .map(ClientSummary::from)
        .collect())
}

/// What revoking a client did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRevocation {
    pub client_id: String,
    pub registration: Registration,
    /// When an administrator revoked it (now, or before).
    pub revoked_at: Option<i64>,
    /// Sign-ins whose refresh token stopped working now.
    pub families_revoked: u64,
    pub consents_deleted: u64,
    /// How long access tokens already issued stay valid, at most (`lifetimes.access_seconds`).
    pub access_tokens_valid_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    RevokedNow,
    RevokedBefore,
    /// A client metadata document URL: never registered, so it cannot be barred, only
    /// stripped of what it holds.
    NotRegistered,
}

/// Revokes a client: first the client (no new sign-in or token from this moment), then every
/// family it holds, then its consents. Each step is idempotent, so a second run finishes what
/// a failed one left, and revokes what a sign-in in progress may have added since.
pub async fn revoke_client<S: Store>(
    store: &S,
    client_id: &str,
    now: i64,
    access_seconds: u64,
) -> Result<ClientRevocation, AdminError> {
    let state = store.revoke_client(client_id, now).await?;
    let owner = Owner::Client(client_id);
    let families_revoked = store
        .revoke_families(owner, "client revoked by an administrator", now)
        .await?;
    let consents_deleted = store.delete_consents(owner).await?;
    let (registration, revoked_at) = match state {
        ClientState::RevokedNow => (Registration::RevokedNow, Some(now)),
        ClientState::RevokedBefore(at) => (Registration::RevokedBefore, Some(at)),
        ClientState::Unknown if families_revoked == 0 && consents_deleted == 0 => {
            return Err(AdminError::UnknownClient(client_id.to_owned()))
        }
        ClientState::Unknown => (Registration::NotRegistered, None),
    };
    tracing::warn!(
        client_id,
        families_revoked,
        consents_deleted,
        "client revoked by an administrator"
    );
    Ok(ClientRevocation {
        client_id: client_id.to_owned(),
        registration,
        revoked_at,
        families_revoked,
        consents_deleted,
        access_tokens_valid_seconds: access_seconds,
    })
}

/// A user's live sign-ins and consents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserGrants {
    pub subject: String,
    pub sign_ins: Vec<LiveFamily>,
    pub consents: Vec<StoredConsent>,
}

pub async fn user_grants<S: Store>(
    store: &S,
    subject: &str,
    now: i64,
) -> Result<UserGrants, AdminError> {
    let owner = Owner::User(subject);
    Ok(UserGrants {
        subject: subject.to_owned(),
        sign_ins: store.live_families(owner, now).await?,
        consents: store.consents(owner).await?,
    })
}

/// What revoking a user's grants did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRevocation {
    pub subject: String,
    pub families_revoked: u64,
    pub consents_deleted: u64,
    /// How long access tokens already issued stay valid, at most (`lifetimes.access_seconds`).
    pub access_tokens_valid_seconds: u64,
}

/// Revokes every family of a user that could still be refreshed, and forgets their consents.
/// Nothing found is not an error (subjects are not kept anywhere else to check a typo
/// against), but the answer says so and how subjects look.
pub async fn revoke_user<S: Store>(
    store: &S,
    subject: &str,
    now: i64,
    access_seconds: u64,
) -> Result<UserRevocation, AdminError> {
    let owner = Owner::User(subject);
    let families_revoked = store
        .revoke_families(owner, "user's grants revoked by an administrator", now)
        .await?;
    let consents_deleted = store.delete_consents(owner).await?;
    tracing::warn!(
        subject,
        families_revoked,
        consents_deleted,
        "user's grants revoked by an administrator"
    );
    Ok(UserRevocation {
        subject: subject.to_owned(),
        families_revoked,
        consents_deleted,
        access_tokens_valid_seconds: access_seconds,
    })
}

/// A configured signing key, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedKey {
    pub file: PathBuf,
    /// `signs` for the first, `published` for the others.
    pub role: &'static str,
    #[serde(flatten)]
    pub key: KeyInfo,
}

fn list_keys(files: &[PathBuf]) -> Result<Vec<ListedKey>, AdminError> {
    if files.is_empty() {
        return Err(AdminError::NoSigningKeys);
    }
    let ring = KeyRing::load(files)?;
    Ok(files
        .iter()
        .zip(ring.describe())
        .enumerate()
        .map(|(position, (file, key))| ListedKey {
            file: file.clone(),
            role: if position == 0 { "signs" } else { "published" },
            key,
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedKey {
    pub file: PathBuf,
    #[serde(flatten)]
    pub key: KeyInfo,
}

/// An admin command's answer: JSON as is, or text for a person.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Report {
    Clients(Vec<ClientSummary>),
    ClientRevoked(ClientRevocation),
    Grants(UserGrants),
    UserRevoked(UserRevocation),
    Purged(Purged),
    Keys(Vec<ListedKey>),
    Generated(GeneratedKey),
}

impl Report {
    fn text(&self) -> String {
        match self {
            Self::Clients(clients) => clients_text(clients),
            Self::ClientRevoked(revocation) => client_revoked_text(revocation),
            Self::Grants(grants) => grants_text(grants),
            Self::UserRevoked(revocation) => user_revoked_text(revocation),
            Self::Purged(purged) => purged_text(purged),
            Self::Keys(keys) => keys_text(keys),
            Self::Generated(generated) => generated_text(generated),
        }
    }
}

fn clients_text(clients: &[ClientSummary]) -> String {
    if clients.is_empty() {
        return "No client is registered.\n".to_owned();
    }
    let rows = clients.iter().map(|client| {
        vec![
            client.client_id.clone(),
            match (client.kind, client.revoked_at) {
                (_, Some(_)) => "revoked".to_owned(),
                (ClientKind::Public, None) => "public".to_owned(),
                (ClientKind::Confidential, None) => "confidential".to_owned(),
            },
            client.client_name.clone().unwrap_or_else(|| "-".to_owned()),
            client.redirect_hosts.join(", "),
            when(client.created_at),
            client.last_used_at.map_or_else(|| "never".to_owned(), when),
        ]
    });
    table(
        &[
            "CLIENT ID",
            "TYPE",
            "NAME (its own claim)",
            "REDIRECT HOSTS",
            "CREATED",
            "LAST USED",
        ],
        rows,
    )
}

/// The line every revocation ends with.
fn access_tokens_line(access_seconds: u64) -> String {
    format!(
        "Access tokens already issued stay valid until they expire, at most {access_seconds} s after their issue: the filter verifies them without asking this server.\n"
    )
}

fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

fn client_revoked_text(revocation: &ClientRevocation) -> String {
    let id = printable(&revocation.client_id);
    let head = match revocation.registration {
        Registration::RevokedNow => {
            format!("Revoked client {id}: it gets no token and signs no one in from now on.")
        }
        Registration::RevokedBefore => format!(
            "Client {id} was already revoked ({}).",
            revocation.revoked_at.map_or_else(String::new, when)
        ),
        Registration::NotRegistered => format!(
            "{id} is not registered here (a client metadata document URL): it can start new sign-ins, each asking for consent again."
        ),
    };
    format!(
        "{head}\n{} can no longer be refreshed; {} deleted.\n{}",
        plural(revocation.families_revoked, "sign-in", "sign-ins"),
        plural(revocation.consents_deleted, "consent", "consents"),
        access_tokens_line(revocation.access_tokens_valid_seconds)
    )
}

fn grants_text(grants: &UserGrants) -> String {
    let subject = printable(&grants.subject);
    let mut text = if grants.sign_ins.is_empty() {
        format!("{subject} has no sign-in whose refresh token still works.\n")
    } else {
        format!(
            "Sign-ins of {subject} whose refresh token still works:\n{}",
            table(
                &[
                    "CLIENT ID",
                    "RESOURCE",
                    "SCOPE",
                    "SIGNED IN",
                    "LAST REFRESH",
                    "EXPIRES"
                ],
                grants.sign_ins.iter().map(|family| {
                    vec![
                        family.client_id.clone(),
                        family.resource.clone(),
                        family.scope.clone(),
                        when(family.signed_in_at),
                        family.refreshed_at.map_or_else(|| "never".to_owned(), when),
                        when(family.expires_at),
                    ]
                }),
            )
        )
    };
    if grants.consents.is_empty() {
        text.push_str(&format!("{subject} has approved no client.\n"));
    } else {
        text.push_str(&format!(
            "Clients {subject} approved:\n{}",
            table(
                &["CLIENT ID", "RESOURCE", "SCOPE", "APPROVED"],
                grants.consents.iter().map(|consent| {
                    vec![
                        consent.client_id.clone(),
                        consent.resource.clone(),
                        consent.scope.clone(),
                        when(consent.approved_at),
                    ]
                }),
            )
        ));
    }
    text
}

fn user_revoked_text(revocation: &UserRevocation) -> String {
    let subject = printable(&revocation.subject);
    if revocation.families_revoked == 0 && revocation.consents_deleted == 0 {
        return format!(
            "Nothing to revoke: {subject} has no sign-in that could be refreshed and no consent. \
             A subject is the `sub` of the user's tokens (`dev:<username>` with the built-in login); \
             `admin grants list --user <subject>` shows what a user holds.\n"
        );
    }
    format!(
        "Revoked {} of {subject}: their refresh tokens are refused from now on. {} deleted: their next sign-in asks again.\n{}",
        plural(revocation.families_revoked, "sign-in", "sign-ins"),
        plural(revocation.consents_deleted, "consent", "consents"),
        access_tokens_line(revocation.access_tokens_valid_seconds)
    )
}

fn purged_text(purged: &Purged) -> String {
    let counts = [
        ("auth_requests", purged.auth_requests),
        ("upstream_logins", purged.upstream_logins),
        ("codes", purged.codes),
        ("refresh_tokens", purged.refresh_tokens),
        ("upstream_tokens", purged.upstream_tokens),
        ("revoked_families", purged.revoked_families),
        ("clients", purged.clients),
        ("consents", purged.consents),
        ("total", purged.total()),
    ];
    table(
        &["TABLE", "ROWS DELETED"],
        counts
            .iter()
            .map(|(name, count)| vec![(*name).to_owned(), count.to_string()]),
    )
}

fn keys_text(keys: &[ListedKey]) -> String {
    let listed = table(
        &["#", "ROLE", "ALGORITHM", "KID", "FILE"],
        keys.iter().enumerate().map(|(position, listed)| {
            vec![
                (position + 1).to_string(),
                listed.role.to_owned(),
                listed.key.algorithm.to_owned(),
                listed.key.kid.clone(),
                listed.file.display().to_string(),
            ]
        }),
    );
    let note = if keys.len() == 1 {
        "One key: it signs and is the only one published. To rotate, see docs/runbooks.md (`admin keys generate`, then publish the new key second).\n"
    } else {
        "The first key signs; the others stay published so that the tokens they signed remain valid until they expire.\n"
    };
    format!("{listed}{note}")
}

fn generated_text(generated: &GeneratedKey) -> String {
    format!(
        "Wrote {} (mode 0600): {} key, kid {}.\nNext (docs/runbooks.md, signing-key rotation): publish it as the second of `signing_keys`, roll out, wait the filters' JWKS refresh, then make it the first.\n",
        generated.file.display(),
        generated.key.algorithm,
        generated.key.kid
    )
}

/// A Unix time as a person reads it, in UTC to the minute.
fn when(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|time| time.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| at.to_string())
}

/// Longest text a table cell shows (JSON has it whole).
const MAX_CELL: usize = 60;

/// Text for a terminal: a client's name, a subject, a scope come from clients and identity
/// providers, so control characters (escape sequences that could rewrite the screen) and
/// bidirectional overrides (that reorder what is shown) are replaced, and long text is cut.
fn printable(text: &str) -> String {
    let mut chars = text.chars().map(|ch| {
        if ch.is_control() || matches!(ch, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            '\u{fffd}'
        } else {
            ch
        }
    });
    let kept: String = chars.by_ref().take(MAX_CELL).collect();
    if chars.next().is_some() {
        format!("{kept}…")
    } else {
        kept
    }
}

/// Columns aligned with spaces, every cell made printable.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(headers.to_vec());
    for row in &rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::clock::ManualClock;
    use crate::oauth::grant::{Grant, User};
    use crate::store::{Administration, Housekeeping, StoredClient};
    use clap::Parser;
    use serde_json::{json, Value};

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 24 * 3600;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/auth.db", dir.path().display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, store)
    }

    fn grant(client_id: &str, subject: &str) -> Grant {
        Grant {
            client_id: client_id.into(),
            resource: "https://mcp.example.com/mcp".into(),
            scope: "mcp:tools offline_access".into(),
            user: User {
                subject: subject.into(),
                email: None,
                name: None,
                groups: vec![],
                roles: vec![],
            },
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "x".into(),
        }
    }

    async fn register(store: &SqliteStore, client_id: &str, metadata: Value, secret: bool) {
        store
            .save_client(&StoredClient {
                client_id: client_id.into(),
                secret_sha256: secret.then(|| "ab".repeat(32)),
                metadata,
                created_at: NOW - DAY,
                last_used_at: None,
            })
            .await
            .unwrap();
    }

    /// A sign-in of `subject` in `client_id`: a refresh family whose token `token` lives a week.
    async fn sign_in(store: &SqliteStore, token: &str, client_id: &str, subject: &str) {
        store
            .save_refresh(
                token,
                &grant(client_id, subject),
                &format!("family-{token}"),
                NOW + 7 * DAY,
                NOW - 60,
            )
            .await
            .unwrap();
    }

    async fn family_revoked(store: &SqliteStore, token: &str) -> bool {
        store
            .find_refresh(token, NOW)
            .await
            .unwrap()
            .unwrap()
            .family_revoked
    }

    async fn consent(store: &SqliteStore, subject: &str, client_id: &str) {
        store
            .save_consent(
                subject,
                client_id,
                "https://mcp.example.com/mcp",
                "mcp:tools",
                NOW - 60,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_revoked_client_is_barred_its_sign_ins_end_and_a_second_run_changes_nothing() {
        let (_dir, store) = store().await;
        let metadata = json!({"redirect_uris": ["http://127.0.0.1/cb"]});
        register(&store, "c1", metadata.clone(), false).await;
        register(&store, "c2", metadata, false).await;
        sign_in(&store, "c1-alice", "c1", "dev:alice").await;
        sign_in(&store, "c1-bob", "c1", "dev:bob").await;
        sign_in(&store, "c2-alice", "c2", "dev:alice").await;
        // A code not yet exchanged: its family must not start later.
        store
            .save_code(
                "c1-code",
                &grant("c1", "dev:carol"),
                "family-code",
                NOW + 60,
            )
            .await
            .unwrap();
        consent(&store, "dev:alice", "c1").await;
        consent(&store, "dev:alice", "c2").await;

        let revoked = revoke_client(&store, "c1", NOW, 3600).await.unwrap();
        assert_eq!(
            revoked,
            ClientRevocation {
                client_id: "c1".into(),
                registration: Registration::RevokedNow,
                revoked_at: Some(NOW),
                families_revoked: 3,
                consents_deleted: 1,
                access_tokens_valid_seconds: 3600,
            }
        );
        assert_eq!(
            store.client("c1").await.unwrap(),
            None,
            "no lookup finds it"
        );
        assert!(family_revoked(&store, "c1-alice").await);
        assert!(family_revoked(&store, "c1-bob").await);
        assert_eq!(
            store.redeem_code("c1-code", NOW).await.unwrap(),
            crate::store::Redeemed::Invalid
        );
        assert!(!family_revoked(&store, "c2-alice").await, "another client");
        assert!(store.client("c2").await.unwrap().is_some());
        assert!(store
            .consent("dev:alice", "c2", "https://mcp.example.com/mcp")
            .await
            .unwrap()
            .is_some());

        let again = revoke_client(&store, "c1", NOW + 100, 3600).await.unwrap();
        assert_eq!(
            (again.registration, again.revoked_at),
            (Registration::RevokedBefore, Some(NOW))
        );
        assert_eq!((again.families_revoked, again.consents_deleted), (0, 0));

        let err = revoke_client(&store, "c3", NOW, 3600).await.unwrap_err();
        assert!(matches!(&err, AdminError::UnknownClient(id) if id == "c3"));
        assert!(err.to_string().contains("`c3`"), "{err}");
    }

    #[tokio::test]
    async fn a_metadata_document_client_loses_what_it_holds_though_it_was_never_registered() {
        let (_dir, store) = store().await;
        let url = "https://app.example.com/client.json";
        sign_in(&store, "doc-alice", url, "dev:alice").await;
        let revoked = revoke_client(&store, url, NOW, 3600).await.unwrap();
        assert_eq!(
            (revoked.registration, revoked.families_revoked),
            (Registration::NotRegistered, 1)
        );
        assert!(family_revoked(&store, "doc-alice").await);
        let text = client_revoked_text(&revoked);
        assert!(text.contains("not registered here"), "{text}");
    }

    #[tokio::test]
    async fn revoking_a_user_ends_their_live_sign_ins_and_consents_and_no_one_elses() {
        let (dir, store) = store().await;
        sign_in(&store, "alice-1", "c1", "dev:alice").await;
        sign_in(&store, "alice-2", "c2", "dev:alice").await;
        sign_in(&store, "bob-1", "c1", "dev:bob").await;
        // Dead already: not counted, not listed.
        store
            .save_refresh(
                "alice-old",
                &grant("c1", "dev:alice"),
                "family-old",
                NOW - 1,
                NOW - DAY,
            )
            .await
            .unwrap();
        consent(&store, "dev:alice", "c1").await;
        consent(&store, "dev:bob", "c1").await;
        // A rotation: the family's current token is the successor, refreshed at NOW - 30.
        store
            .rotate_refresh(
                "alice-1",
                &crate::store::Rotation {
                    successor_sha256: "alice-1b",
                    successor_sealed: b"sealed",
                    grant: &grant("c1", "dev:alice"),
                    family_id: "family-alice-1",
                    expires_at: NOW + 7 * DAY,
                    family_issued_at: NOW - 60,
                    upstream_sealed: None,
                },
                NOW - 30,
            )
            .await
            .unwrap();

        let listed = user_grants(&store, "dev:alice", NOW).await.unwrap();
        let families: Vec<(&str, &str, Option<i64>)> = listed
            .sign_ins
            .iter()
            .map(|f| (f.family_id.as_str(), f.client_id.as_str(), f.refreshed_at))
            .collect();
        assert_eq!(
            families,
            [
                ("family-alice-1", "c1", Some(NOW - 30)),
                ("family-alice-2", "c2", None)
            ]
        );
        assert_eq!(listed.consents.len(), 1);

        let revoked = revoke_user(&store, "dev:alice", NOW, 600).await.unwrap();
        assert_eq!((revoked.families_revoked, revoked.consents_deleted), (2, 1));
        assert!(family_revoked(&store, "alice-1b").await);
        assert!(family_revoked(&store, "alice-2").await);
        assert!(!family_revoked(&store, "bob-1").await, "another user");
        assert!(
            !family_revoked(&store, "alice-old").await,
            "dead, left to the purge"
        );
        assert_eq!(
            user_grants(&store, "dev:alice", NOW).await.unwrap(),
            UserGrants {
                subject: "dev:alice".into(),
                sign_ins: vec![],
                consents: vec![]
            }
        );
        assert_eq!(
            user_grants(&store, "dev:bob", NOW)
                .await
                .unwrap()
                .consents
                .len(),
            1
        );
        let text = user_revoked_text(&revoked);
        assert!(text.contains("Revoked 2 sign-ins of dev:alice"), "{text}");
        assert!(text.contains("at most 600 s"), "{text}");

        // A sign-in written by a replica older than migration 0008 (no owner columns) is found
        // once its owner is filled in from its JSON.
        sign_in(&store, "alice-old-replica", "c1", "dev:alice").await;
        let old_replica =
            sqlx::SqlitePool::connect(&format!("sqlite://{}/auth.db", dir.path().display()))
                .await
                .unwrap();
        sqlx::query("UPDATE refresh_tokens SET client_id = NULL, subject = NULL WHERE token_sha256 = 'alice-old-replica'")
            .execute(&old_replica)
            .await
            .unwrap();
        assert_eq!(store.fill_owners().await.unwrap(), 1);
        assert_eq!(
            revoke_user(&store, "dev:alice", NOW, 600)
                .await
                .unwrap()
                .families_revoked,
            1
        );
        assert!(family_revoked(&store, "alice-old-replica").await);

        let nothing = revoke_user(&store, "alice", NOW, 600).await.unwrap();
        let text = user_revoked_text(&nothing);
        assert!(
            text.starts_with("Nothing to revoke") && text.contains("dev:<username>"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_client_list_tells_type_hosts_and_use_and_shows_revoked_ones_on_request() {
        let (_dir, store) = store().await;
        register(
            &store,
            "native",
            json!({"client_name": "Claude", "redirect_uris": [
                "http://127.0.0.1:33418/cb", "http://127.0.0.1:40000/cb", "cursor://anysphere.cursor/oauth"]}),
            false,
        )
        .await;
        register(
            &store,
            "machine",
            json!({"redirect_uris": ["https://jobs.example.com/cb"]}),
            true,
        )
        .await;
        register(&store, "gone", json!({}), false).await;
        store.client_used("native", NOW - 10).await.unwrap();
        revoke_client(&store, "gone", NOW, 3600).await.unwrap();

        let listed = list_clients(&store, false).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|c| c.client_id.as_str()).collect();
        assert_eq!(ids, ["machine", "native"], "oldest first, then by id");
        let (machine, native) = (&listed[0], &listed[1]);
        assert_eq!(native.client_name.as_deref(), Some("Claude"));
        assert_eq!(native.kind, ClientKind::Public);
        assert_eq!(
            native.redirect_hosts,
            ["127.0.0.1", "cursor://anysphere.cursor"]
        );
        assert_eq!(native.last_used_at, Some(NOW - 10));
        assert_eq!(machine.kind, ClientKind::Confidential);
        assert_eq!(machine.last_used_at, None);
        let all = list_clients(&store, true).await.unwrap();
        let gone = all.iter().find(|c| c.client_id == "gone").unwrap();
        assert_eq!((all.len(), gone.revoked_at), (3, Some(NOW)));

        let text = clients_text(&all);
        let line = |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap().to_owned();
        assert!(text.starts_with("CLIENT ID"), "{text}");
        assert!(
            line("machine").contains("confidential") && line("machine").ends_with("never"),
            "{text}"
        );
        assert!(
            line("native").contains("public") && line("native").ends_with(&when(NOW - 10)),
            "{text}"
        );
        assert!(line("gone").contains("revoked"), "{text}");
    }

    #[test]
    fn text_from_clients_cannot_drive_the_terminal() {
        assert_eq!(
            printable("evil\u{1b}[2J\u{7}name"),
            "evil\u{fffd}[2J\u{fffd}name"
        );
        assert_eq!(printable("abc\u{202e}fed"), "abc\u{fffd}fed");
        let long = "x".repeat(MAX_CELL + 5);
        assert_eq!(printable(&long).chars().count(), MAX_CELL + 1);
        let text = table(
            &["A", "B"],
            vec![vec!["\u{1b}]0;pwned\u{7}".into(), "b".into()]].into_iter(),
        );
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    /// The admin command line as `main` parses it (after `mcp-mesh-authserver`).
    #[derive(Debug, Parser)]
    struct Line {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Admin(Admin),
    }

    async fn run_line(
        settings: &Settings<'_>,
        clock: &ManualClock,
        args: &[&str],
    ) -> Result<String, AdminError> {
        let Top::Admin(admin) =
            Line::try_parse_from([&["mcp-mesh-authserver", "admin"], args].concat())
                .unwrap()
                .command;
        let mut out = Vec::new();
        run(admin, settings, clock, &mut out).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn the_commands_work_on_the_configured_database_and_answer_json_for_scripts() {
        let (dir, store) = store().await;
        register(
            &store,
            "unused",
            json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
            false,
        )
        .await;
        sign_in(&store, "alice-1", "used", "dev:alice").await;
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "issuer: http://localhost:9000\nresources: [http://localhost:9000/mcp]\n\
                 database: sqlite://{}/auth.db\nregistration: {{unused_client_seconds: 3600}}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let settings = Settings {
            config_file: Some(&config),
            overrides: Overrides::default(),
        };
        let clock = ManualClock::at(NOW);

        let listed: Value = serde_json::from_str(
            &run_line(&settings, &clock, &["clients", "list", "--json"])
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(listed[0]["client_id"], "unused");
        assert_eq!(listed[0]["type"], "public");
        assert_eq!(listed[0]["last_used_at"], Value::Null);

        let grants: Value = serde_json::from_str(
            &run_line(
                &settings,
                &clock,
                &["grants", "list", "--user", "dev:alice", "--json"],
            )
            .await
            .unwrap(),
        )
        .unwrap();
        assert_eq!(grants["sign_ins"][0]["client_id"], "used");

        // Registered a day ago and never used, with an hour allowed: the purge takes it.
        let purged: Value = serde_json::from_str(
            &run_line(&settings, &clock, &["purge", "--json"])
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(purged["clients"], 1);
        let text = run_line(&settings, &clock, &["purge"]).await.unwrap();
        assert!(
            text.lines()
                .any(|line| line.starts_with("clients") && line.ends_with(" 0")),
            "{text}"
        );

        let text = run_line(
            &settings,
            &clock,
            &["grants", "revoke", "--user", "dev:alice"],
        )
        .await
        .unwrap();
        assert!(
            text.contains("at most 3600 s"),
            "the configured access-token lifetime: {text}"
        );

        let err = run_line(&settings, &clock, &["clients", "revoke", "nope"])
            .await
            .unwrap_err();
        assert!(matches!(err, AdminError::UnknownClient(_)));

        let elsewhere = Settings {
            config_file: Some(&config),
            overrides: Overrides {
                database: Some(format!("sqlite://{}/typo.db", dir.path().display())),
                ..Overrides::default()
            },
        };
        let err = run_line(&elsewhere, &clock, &["clients", "list"])
            .await
            .unwrap_err();
        assert!(matches!(err, AdminError::NoDatabase(_)), "{err}");
        assert!(
            !dir.path().join("typo.db").exists(),
            "no empty database was created"
        );
    }

    #[tokio::test]
    async fn keys_are_listed_in_order_from_the_command_line_without_a_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(NOW);
        let first = dir.path().join("current.pem");
        let second = dir.path().join("next.pem");
        let none = Settings {
            config_file: None,
            overrides: Overrides::default(),
        };
        let out = run_line(
            &none,
            &clock,
            &["keys", "generate", "--out", first.to_str().unwrap()],
        )
        .await
        .unwrap();
        assert!(out.contains("ES256 key, kid "), "{out}");
        run_line(
            &none,
            &clock,
            &[
                "keys",
                "generate",
                "--algorithm",
                "eddsa",
                "--out",
                second.to_str().unwrap(),
            ],
        )
        .await
        .unwrap();
        let keys = Settings {
            config_file: None,
            overrides: Overrides {
                signing_keys: vec![first.clone(), second.clone()],
                ..Overrides::default()
            },
        };
        let listed: Value = serde_json::from_str(
            &run_line(&keys, &clock, &["keys", "list", "--json"])
                .await
                .unwrap(),
        )
        .unwrap();
        let ring = KeyRing::load(&[first, second]).unwrap();
        let jwks = ring.jwks();
        for (position, (role, algorithm)) in [("signs", "ES256"), ("published", "EdDSA")]
            .iter()
            .enumerate()
        {
            assert_eq!(listed[position]["role"], *role);
            assert_eq!(listed[position]["algorithm"], *algorithm);
            assert_eq!(
                listed[position]["kid"], jwks["keys"][position]["kid"],
                "the kid the JWKS publishes"
            );
        }
        let err = run_line(&none, &clock, &["keys", "list"])
            .await
            .unwrap_err();
        assert!(
            matches!(err, AdminError::Config(_)),
            "no configuration, no keys given: {err}"
        );
    }
}
