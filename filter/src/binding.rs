//! Ids bound to the principal they were issued to, without state.
//!
//! A server hands out ids (task ids, session ids) that anyone holding one can use. The filter
//! replaces such an id by a sealed one, `b1.<mac>.<id>`, whose MAC covers a purpose label, the
//! token's issuer and subject and the id, under a key from the configuration (`binding_key`).
//! Every Envoy worker and every replica sharing the key can check, with no shared store, that the
//! caller presenting a sealed id is the one it was issued to, and recover the server's id.
//!
//! The purpose is part of the MAC so that an id sealed as one kind (a task) is no use as another
//! (a session), even where the server's ids look alike.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Version tag of the sealed form; a new form gets a new tag, so old ids fail as malformed.
const VERSION: &str = "b1";
/// Domain separation: these MACs are never valid for anything else keyed the same.
const DOMAIN: &[u8] = b"mcp-mesh-auth/binding/b1";
/// Shortest key accepted: HMAC-SHA256 is only as strong as its key.
pub const MIN_KEY_BYTES: usize = 32;

/// What a sealed id is for; an id sealed for one purpose never opens for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A task id of MCP 2025-11-25 (`tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`).
    Task,
    /// An `Mcp-Session-Id`.
    Session,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Session => "session",
        }
    }
}

/// Why `binding_key` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingKeyError {
    #[error("`binding_key` is not base64 ({0}); generate one with `openssl rand -base64 32`")]
    NotBase64(String),
    #[error("`binding_key` decodes to {0} bytes; it needs at least {MIN_KEY_BYTES} random bytes (`openssl rand -base64 32`)")]
    TooShort(usize),
}

/// Why a presented id does not open for this caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("`{0}` is not an id this filter handed out (expected `b1.<mac>.<id>`): use the id exactly as the answer through the filter gave it")]
    Malformed(String),
    #[error("`{0}` was issued to another principal, or for another use, or under another `binding_key`: only its creator can use it")]
    Foreign(String),
}

/// The secret that seals ids; the same on every worker and replica that must accept them.
#[derive(Clone)]
pub struct BindingKey {
    /// HMAC-SHA256 keyed once; each seal or open clones it.
    keyed: HmacSha256,
}

impl std::fmt::Debug for BindingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindingKey(..)")
    }
}

impl BindingKey {
    /// The key from its base64 text (standard or URL-safe alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, BindingKeyError> {
        let indifferent =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        let trimmed = text.trim();
        let key = GeneralPurpose::new(&alphabet::STANDARD, indifferent)
            .decode(trimmed)
            .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, indifferent).decode(trimmed))
            .map_err(|err| BindingKeyError::NotBase64(err.to_string()))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(BindingKeyError::TooShort(key.len()));
        }
        // HMAC accepts keys of any length; the error cannot occur.
        let keyed = <HmacSha256 as Mac>::new_from_slice(&key)
            .map_err(|_| BindingKeyError::TooShort(key.len()))?;
        Ok(Self { keyed })
    }

    /// `id` sealed to the principal `(issuer, subject)` for `purpose`.
    pub fn seal(&self, purpose: Purpose, id: &str, issuer: &str, subject: &str) -> String {
        let mac = self
            .mac(purpose, id, issuer, subject)
            .finalize()
            .into_bytes();
        format!(
            "{VERSION}.{}.{}",
            URL_SAFE_NO_PAD.encode(mac),
            URL_SAFE_NO_PAD.encode(id)
        )
    }

    /// The id inside `sealed`, if it was sealed for `purpose` to `(issuer, subject)` under this key.
    pub fn open(
        &self,
        purpose: Purpose,
        sealed: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<String, BindingError> {
        let malformed = || BindingError::Malformed(sealed.to_owned());
        let mut parts = sealed.split('.');
        let (Some(VERSION), Some(mac), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| malformed())?;
        let id = URL_SAFE_NO_PAD
            .decode(id)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(malformed)?;
        self.mac(purpose, &id, issuer, subject)
            .verify_slice(&mac)
            .map_err(|_| BindingError::Foreign(sealed.to_owned()))?;
        Ok(id)
    }

    /// The MAC over the purpose and the length-prefixed issuer, subject and id (so that no two
    /// different triples give the same input).
    fn mac(&self, purpose: Purpose, id: &str, issuer: &str, subject: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(DOMAIN);
        for field in [purpose.label(), issuer, subject, id] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    fn key() -> BindingKey {
        BindingKey::from_base64(KEY).unwrap()
    }

    #[test]
    fn the_creator_gets_the_servers_id_back() {
        let sealed = key().seal(Purpose::Task, "task-42", "https://as", "alice");
        assert!(sealed.starts_with("b1."), "{sealed}");
        assert!(
            !sealed.contains("task-42"),
            "the server's id is not shown in clear"
        );
        assert_eq!(
            key().open(Purpose::Task, &sealed, "https://as", "alice"),
            Ok("task-42".into())
        );
    }

    #[test]
    fn another_subject_or_issuer_cannot_use_it() {
        let sealed = key().seal(Purpose::Task, "t", "https://as", "alice");
        for (issuer, subject) in [("https://as", "bob"), ("https://other", "alice")] {
            assert_eq!(
                key().open(Purpose::Task, &sealed, issuer, subject),
                Err(BindingError::Foreign(sealed.clone()))
            );
        }
    }

    #[test]
    fn a_task_id_is_no_session_id() {
        let sealed = key().seal(Purpose::Task, "same", "i", "s");
        assert!(matches!(
            key().open(Purpose::Session, &sealed, "i", "s"),
            Err(BindingError::Foreign(_))
        ));
    }

    #[test]
    fn the_fields_cannot_be_shifted_into_each_other() {
        let sealed = key().seal(Purpose::Task, "c", "ab", "");
        assert!(key().open(Purpose::Task, &sealed, "a", "b").is_err());
    }

    #[test]
    fn a_forged_or_swapped_id_is_refused() {
        let sealed = key().seal(Purpose::Task, "mine", "i", "alice");
        let mac = sealed.split('.').nth(1).unwrap();
        let forged = format!("b1.{mac}.{}", URL_SAFE_NO_PAD.encode("theirs"));
        assert!(matches!(
            key().open(Purpose::Task, &forged, "i", "alice"),
            Err(BindingError::Foreign(_))
        ));
        let other_key = BindingKey::from_base64(&"A".repeat(44)).unwrap();
        assert!(matches!(
            other_key.open(Purpose::Task, &sealed, "i", "alice"),
            Err(BindingError::Foreign(_))
        ));
    }

    #[test]
    fn a_raw_server_id_is_malformed_and_quoted() {
        for raw in ["task-42", "b1.x", "b1.!!.aa", "b2.aa.aa", "b1.aa.aa.aa"] {
            let err = key().open(Purpose::Task, raw, "i", "s").unwrap_err();
            assert_eq!(err, BindingError::Malformed(raw.into()));
            assert!(err.to_string().contains(raw), "{err}");
        }
    }

    #[test]
    fn keys_must_be_base64_and_long_enough() {
        assert_eq!(
            BindingKey::from_base64("c2hvcnQ=").unwrap_err(),
            BindingKeyError::TooShort(5)
        );
        assert!(matches!(
            BindingKey::from_base64("not base64!"),
            Err(BindingKeyError::NotBase64(_))
        ));
        let url_safe = URL_SAFE_NO_PAD.encode([0xfb_u8; 32]);
        assert!(BindingKey::from_base64(&url_safe).is_ok(), "{url_safe}");
        assert_eq!(format!("{:?}", key()), "BindingKey(..)", "never logged");
    }
}
