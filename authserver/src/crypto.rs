//! Upstream tokens at rest: AES-256-GCM under a key read from a secret file.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key file {path}: {message} (32 random bytes, raw or base64: `openssl rand -base64 32`)")]
    KeyFile { path: PathBuf, message: String },
    #[error("a stored upstream token could not be decrypted (wrong encryption key?)")]
    Decrypt,
}

pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let fail = |message: &str| CryptoError::KeyFile {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        let raw = std::fs::read(path).map_err(|err| fail(&err.to_string()))?;
        let key = if raw.len() == 32 {
            raw
        } else {
            let text =
                String::from_utf8(raw).map_err(|_| fail("neither 32 raw bytes nor base64"))?;
            STANDARD
                .decode(text.trim())
                .map_err(|_| fail("neither 32 raw bytes nor base64"))?
        };
        if key.len() != 32 {
            return Err(fail(&format!("the key is {} bytes, not 32", key.len())));
        }
        let cipher =
            Aes256Gcm::new_from_slice(&key).map_err(|_| fail("the key is not 32 bytes"))?;
        Ok(Self { cipher })
    }

    /// A sealer whose key is derived from `secret` (SHA-256 of `label` and `secret`): what it
    /// seals opens only for whoever holds `secret`, with no server key involved. The token
    /// endpoint seals a refresh token's successor under the old token this way.
    pub fn derived(label: &str, secret: &[u8]) -> Self {
        let key: [u8; 32] = Sha256::new()
            .chain_update(label.as_bytes())
            .chain_update([0u8])
            .chain_update(secret)
            .finalize()
            .into();
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// `nonce || ciphertext` of `plaintext`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut sealed = nonce.to_vec();
        // Encryption with a fresh nonce cannot fail for inputs this small.
        sealed.extend(self.cipher.encrypt(&nonce, plaintext).unwrap_or_default());
        sealed
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_BYTES {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
        self.cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn key_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents).unwrap();
        file
    }

    #[test]
    fn sealed_tokens_open_only_with_their_key() {
        let a = Sealer::from_file(key_file(STANDARD.encode([7u8; 32]).as_bytes()).path()).unwrap();
        let b = Sealer::from_file(key_file(&[9u8; 32]).path()).unwrap();
        let sealed = a.seal(b"upstream refresh token");
        assert!(
            !sealed.windows(8).any(|w| w == b"upstream"),
            "not stored in the clear"
        );
        assert_eq!(a.open(&sealed).unwrap(), b"upstream refresh token");
        assert!(b.open(&sealed).is_err());
        assert_ne!(a.seal(b"x"), a.seal(b"x"), "a fresh nonce every time");
    }

    #[test]
    fn a_derived_sealer_opens_only_with_the_same_secret() {
        let sealed = Sealer::derived("label", b"old token").seal(b"successor");
        assert_eq!(
            Sealer::derived("label", b"old token")
                .open(&sealed)
                .unwrap(),
            b"successor"
        );
        assert!(Sealer::derived("label", b"other token")
            .open(&sealed)
            .is_err());
        assert!(Sealer::derived("other label", b"old token")
            .open(&sealed)
            .is_err());
    }

    #[test]
    fn a_short_key_is_refused_with_advice() {
        let err = Sealer::from_file(key_file(b"c2hvcnQ=").path())
            .err()
            .unwrap();
        assert!(err.to_string().contains("openssl rand"), "{err}");
    }
}
