//! The OAuth 2.1 protocol: what the authorization server decides, with no HTTP framework and no
//! database in sight, so every decision is a function a unit test can call.

pub mod authorize;
pub mod client_assertion;
pub mod clock;
pub mod consent;
pub mod error;
pub mod exchange;
pub mod grant;
pub mod id_jag;
pub mod identity;
pub mod introspect;
pub mod registration;
pub mod scope;
pub mod token;

pub use clock::{Clock, SystemClock};
pub use error::{ErrorCode, OAuthError};
pub use scope::Scope;
