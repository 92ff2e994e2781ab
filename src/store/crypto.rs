//! Encryption of tokens at rest, and keys derived for other purposes (OAuth `state`).
//!
//! Tokens are sealed with ChaCha20-Poly1305 under a 32-byte key read from
//! `storage.encryption_key_file`, or generated on first start at
//! `{storage.path}/secret.key` (mode 0600). Each ciphertext is bound to what it belongs
//! to (the associated data, e.g. a team id), so a sealed token copied onto another
//! workspace's record does not open. A store remembers a sealed check value, so opening
//! it with the wrong key is a clear error, never garbage tokens.
//!
//! Must never log, print or return a key or a plaintext in an error.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::StoreError;
use crate::config::Secret;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// The name of a generated key file inside the storage directory.
pub const GENERATED_KEY_FILE: &str = "secret.key";

/// Where the key came from, for the startup log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured(PathBuf),
    Existing(PathBuf),
    Generated(PathBuf),
}

/// Seals and opens secrets with the store's key.
#[derive(Clone)]
pub struct TokenCipher {
    key: [u8; KEY_BYTES],
    key_path: PathBuf,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCipher")
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl TokenCipher {
    /// Reads the configured key file, or the generated one in `storage_dir`, creating it
    /// (mode 0600) when neither exists.
    pub fn load_or_generate(
        configured: Option<&Path>,
        storage_dir: &Path,
    ) -> Result<(Self, KeySource), StoreError> {
        if let Some(path) = configured {
            let key = read_key(path)?;
            return Ok((
                Self::from_key(key, path),
                KeySource::Configured(path.into()),
            ));
        }
        let path = storage_dir.join(GENERATED_KEY_FILE);
        if path.exists() {
            let key = read_key(&path)?;
            return Ok((Self::from_key(key, &path), KeySource::Existing(path)));
        }
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        write_key(&path, &key)?;
        Ok((Self::from_key(key, &path), KeySource::Generated(path)))
    }

    fn from_key(key: [u8; KEY_BYTES], path: &Path) -> Self {
        Self {
            key,
            key_path: path.to_path_buf(),
        }
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let key = Key::try_from(&self.key[..]).expect("the key is 32 bytes by construction");
        ChaCha20Poly1305::new(&key)
    }

    /// Encrypts `plaintext` for `context` (the record it belongs to).
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce_bytes = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce_bytes);
        let nonce = Nonce::try_from(&nonce_bytes[..]).expect("12 bytes by construction");
        let sealed = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a short token cannot fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        BASE64.encode(out)
    }

    /// Decrypts what [`Self::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret<String>, StoreError> {
        let undecryptable = || StoreError::WrongKey {
            key_path: self.key_path.clone(),
        };
        let bytes = BASE64.decode(sealed).map_err(|_| undecryptable())?;
        if bytes.len() < NONCE_BYTES {
            return Err(undecryptable());
        }
        let (nonce_bytes, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce_bytes).map_err(|_| undecryptable())?;
        let plaintext = self
            .cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| undecryptable())?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| undecryptable())
    }

    /// A key for another purpose (such as signing OAuth state), derived from this one,
    /// so there is one secret to keep.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn read_key(path: &Path) -> Result<[u8; KEY_BYTES], StoreError> {
    let bad = |cause: String| StoreError::KeyFile {
        path: path.to_path_buf(),
        cause,
    };
    let text = std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?;
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| bad("not base64 (expected 32 random bytes, base64-encoded)".into()))?;
    bytes
        .try_into()
        .map_err(|_| bad("wrong length (expected 32 bytes, base64-encoded)".into()))
}

fn write_key(path: &Path, key: &[u8; KEY_BYTES]) -> Result<(), StoreError> {
    let bad = |cause: String| StoreError::KeyFile {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| bad(error.to_string()))?;
    writeln!(file, "{}", BASE64.encode(key)).map_err(|error| bad(error.to_string()))?;
    file.sync_all().map_err(|error| bad(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generates_a_private_key_once_and_reuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, source) = TokenCipher::load_or_generate(None, dir.path()).expect("key");
        let path = dir.path().join(GENERATED_KEY_FILE);
        assert_eq!(source, KeySource::Generated(path.clone()));
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, source) = TokenCipher::load_or_generate(None, dir.path()).expect("key");
        assert_eq!(source, KeySource::Existing(path));
        let sealed = first.seal("xoxb-secret", "T1");
        assert_eq!(
            second.open(&sealed, "T1").expect("opens").expose(),
            "xoxb-secret"
        );
    }

    #[test]
    fn sealed_tokens_do_not_show_the_plaintext_and_are_bound_to_their_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cipher, _) = TokenCipher::load_or_generate(None, dir.path()).expect("key");
        let sealed = cipher.seal("xoxb-secret", "T1");
        assert!(!sealed.contains("xoxb"));
        assert_ne!(
            sealed,
            cipher.seal("xoxb-secret", "T1"),
            "fresh nonce each time"
        );
        assert!(matches!(
            cipher.open(&sealed, "T2"),
            Err(StoreError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_different_key_cannot_open_and_says_so() {
        let one = tempfile::tempdir().expect("tempdir");
        let two = tempfile::tempdir().expect("tempdir");
        let (a, _) = TokenCipher::load_or_generate(None, one.path()).expect("key");
        let (b, _) = TokenCipher::load_or_generate(None, two.path()).expect("key");
        let error = b
            .open(&a.seal("xoxb-secret", "T1"), "T1")
            .expect_err("wrong key");
        assert!(error.to_string().contains("encryption key"), "{error}");
        assert!(!error.to_string().contains("xoxb"));
    }

    #[test]
    fn a_malformed_key_file_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        std::fs::write(&path, "short").expect("write");
        let error = TokenCipher::load_or_generate(Some(&path), dir.path()).expect_err("bad key");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cipher, _) = TokenCipher::load_or_generate(None, dir.path()).expect("key");
        assert_ne!(cipher.derive_key("a"), cipher.derive_key("b"));
        assert_eq!(cipher.derive_key("a"), cipher.derive_key("a"));
    }
}
