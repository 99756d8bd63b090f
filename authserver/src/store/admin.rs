//! What the admin command asks of the database: the registered clients, the live grants and
//! consents of a client or a user, and revoking them. The statements are in `sql.rs` with the
//! rest; the decisions (what to revoke, in which order, what to tell) are in `crate::admin`.

use std::future::Future;

use super::{StoreError, StoredClient};

/// Whose grants and consents a statement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// A client, by `client_id`.
    Client(&'a str),
    /// A user, by the subject their tokens carry as `sub`.
    User(&'a str),
}

impl<'a> Owner<'a> {
    /// The column that names this owner in `codes`, `refresh_tokens` and `consents`.
    pub(crate) fn column(&self) -> &'static str {
        match self {
            Self::Client(_) => "client_id",
            Self::User(_) => "subject",
        }
    }

    pub(crate) fn id(&self) -> &'a str {
        match self {
            Self::Client(id) | Self::User(id) => id,
        }
    }
}

/// A registered client as the admin command lists it: revoked ones included.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedClient {
    pub client: StoredClient,
    pub revoked_at: Option<i64>,
}

/// A grant family a refresh token can still continue: one sign-in of one user in one client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveFamily {
    pub family_id: String,
    pub client_id: String,
    pub subject: String,
    pub resource: String,
    pub scope: String,
    /// When the user signed in (the family's first refresh token).
    pub signed_in_at: i64,
    /// When its refresh token was last rotated, if ever.
    pub refreshed_at: Option<i64>,
    /// When its current refresh token expires unless used.
    pub expires_at: i64,
}

/// A user's remembered approval of a client for a resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredConsent {
    pub subject: String,
    pub client_id: String,
    pub resource: String,
    pub scope: String,
    pub approved_at: i64,
}

/// What marking a client revoked found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// It was registered and is revoked from now on.
    RevokedNow,
    /// An administrator had revoked it already, at this time.
    RevokedBefore(i64),
    /// No client is registered with this id.
    Unknown,
}

type Io<T> = Result<T, StoreError>;

/// The admin command's statements (implemented with the rest of the SQL in `sql.rs`).
pub trait Administration {
    /// Fills in the owner columns of codes and refresh tokens written without them — by a
    /// replica older than migration 0008, during a rolling upgrade — so that no revocation
    /// misses them. Returns how many rows it filled.
    fn fill_owners(&self) -> impl Future<Output = Io<u64>> + Send;

    /// Every registered client, oldest first, revoked ones included.
    fn clients(&self) -> impl Future<Output = Io<Vec<ListedClient>>> + Send;

    /// Marks a client revoked: every lookup of it finds nothing from now on.
    fn revoke_client(
        &self,
        client_id: &str,
        now: i64,
    ) -> impl Future<Output = Io<ClientState>> + Send;

    /// The owner's families whose refresh token still works at `now`, oldest first.
    fn live_families(
        &self,
        owner: Owner<'_>,
        now: i64,
    ) -> impl Future<Output = Io<Vec<LiveFamily>>> + Send;

    /// Revokes every family of the owner that an unused code or refresh token could still
    /// continue at `now`; returns how many were revoked (not counting those revoked before).
    fn revoke_families(
        &self,
        owner: Owner<'_>,
        reason: &str,
        now: i64,
    ) -> impl Future<Output = Io<u64>> + Send;

    /// The owner's remembered consents, oldest first.
    fn consents(&self, owner: Owner<'_>) -> impl Future<Output = Io<Vec<StoredConsent>>> + Send;

    /// Forgets the owner's consents (the next sign-in asks again); returns how many.
    fn delete_consents(&self, owner: Owner<'_>) -> impl Future<Output = Io<u64>> + Send;
}
