//! OAuth `state`: signed, expiring, single-use tokens that tie a callback to the
//! redirect that started it.
//!
//! Signing and checking are pure: they take the key and `now` (only [`random_nonce`]
//! reads randomness). A state is
//! `base64url(claims JSON) "." base64url(HMAC-SHA256)`; the claims carry a random nonce
//! that the callback consumes once (the store remembers used nonces), an expiry, and
//! optionally the workspace and user it is bound to. Never accepts a state whose
//! signature does not verify, in constant time.
//!
//! A neutral leaf: both `http/` (the pages that check states) and `app/` (which issues the
//! Bitbucket login's) use it, and it imports nothing from the crate. Must never do I/O or
//! read the clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The purpose of a Slack install's state (`/slack/install` → `/slack/oauth/callback`).
pub const SLACK_INSTALL: &str = "slack_install";
/// The purpose of a Bitbucket account link's state (`/bitbucket login` → the login page →
/// `/bitbucket/oauth/callback`).
pub const BITBUCKET_LOGIN: &str = "bitbucket_login";

/// How long a state is accepted after it was issued.
pub const STATE_LIFETIME: SignedDuration = SignedDuration::from_mins(10);

/// What a state says about its flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// Which flow it belongs to, such as `slack_install`.
    pub purpose: String,
    pub nonce: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// Why a state was refused. The user sees [`StateError::message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the state is malformed")]
    Malformed,
    #[error("the state's signature does not verify")]
    BadSignature,
    #[error("the state is for another flow")]
    WrongPurpose,
    #[error("the state expired")]
    Expired,
    #[error("the state was already used")]
    Replayed,
}

impl StateError {
    pub fn message(&self) -> &'static str {
        match self {
            StateError::Malformed | StateError::BadSignature | StateError::WrongPurpose => {
                "This link is not valid. Start again from the beginning."
            }
            StateError::Expired => "This link expired (links last 10 minutes). Start again.",
            StateError::Replayed => "This link was already used. Start again to get a fresh one.",
        }
    }
}

/// A fresh random nonce (128 bits, hex) for [`issue`]; the one impure helper here.
pub fn random_nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length")
}

/// Issues a state for `purpose`, valid for [`STATE_LIFETIME`] from `now`.
pub fn issue(
    key: &[u8; 32],
    purpose: &str,
    nonce: String,
    team_id: Option<String>,
    user_id: Option<String>,
    now: Timestamp,
) -> String {
    let claims = StateClaims {
        purpose: purpose.to_string(),
        nonce,
        expires_at: now.as_second() + STATE_LIFETIME.as_secs(),
        team_id,
        user_id,
    };
    let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
    let mut signer = mac(key);
    signer.update(payload.as_bytes());
    let signature = B64.encode(signer.finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Checks signature, purpose and expiry. Whether the nonce was used before is the
/// caller's to check (it needs the store).
pub fn verify(
    key: &[u8; 32],
    purpose: &str,
    state: &str,
    now: Timestamp,
) -> Result<StateClaims, StateError> {
    let (payload, signature) = state.split_once('.').ok_or(StateError::Malformed)?;
    let signature = B64.decode(signature).map_err(|_| StateError::Malformed)?;
    let mut verifier = mac(key);
    verifier.update(payload.as_bytes());
    verifier
        .verify_slice(&signature)
        .map_err(|_| StateError::BadSignature)?;
    let bytes = B64.decode(payload).map_err(|_| StateError::Malformed)?;
    let claims: StateClaims = serde_json::from_slice(&bytes).map_err(|_| StateError::Malformed)?;
    if claims.purpose != purpose {
        return Err(StateError::WrongPurpose);
    }
    if now.as_second() > claims.expires_at {
        return Err(StateError::Expired);
    }
    Ok(claims)
}

/// A value bound to one flow's nonce for `purpose` (such as a browser cookie), which only
/// the key's holder can make.
pub fn bind(key: &[u8; 32], purpose: &str, nonce: &str) -> String {
    let mut signer = mac(key);
    signer.update(purpose.as_bytes());
    signer.update(b":");
    signer.update(nonce.as_bytes());
    B64.encode(signer.finalize().into_bytes())
}

/// Compares two byte strings in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    #[test]
    fn a_fresh_state_verifies_with_its_claims() {
        let state = issue(
            &KEY,
            "slack_install",
            "n1".into(),
            Some("T1".into()),
            None,
            at(1000),
        );
        let claims = verify(&KEY, "slack_install", &state, at(1000 + 599)).expect("valid");
        assert_eq!(claims.nonce, "n1");
        assert_eq!(claims.team_id.as_deref(), Some("T1"));
        assert_eq!(claims.expires_at, 1600);
    }

    #[test]
    fn bindings_belong_to_one_nonce_and_one_key() {
        let one = bind(&KEY, "browser", "n1");
        assert_eq!(one, bind(&KEY, "browser", "n1"));
        assert_ne!(one, bind(&KEY, "browser", "n2"));
        assert_ne!(one, bind(&[8; 32], "browser", "n1"));
        assert!(constant_time_eq(one.as_bytes(), one.as_bytes()));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn refusals() {
        let state = issue(&KEY, "slack_install", "n1".into(), None, None, at(1000));
        assert_eq!(
            verify(&KEY, "slack_install", &state, at(1601)),
            Err(StateError::Expired)
        );
        assert_eq!(
            verify(&[8; 32], "slack_install", &state, at(1000)),
            Err(StateError::BadSignature)
        );
        assert_eq!(
            verify(&KEY, "bitbucket_login", &state, at(1000)),
            Err(StateError::WrongPurpose)
        );
        assert_eq!(
            verify(&KEY, "slack_install", "garbage", at(1000)),
            Err(StateError::Malformed)
        );
        let (payload, signature) = state.split_once('.').expect("two parts");
        let forged = format!("{}x.{signature}", payload);
        assert_eq!(
            verify(&KEY, "slack_install", &forged, at(1000)),
            Err(StateError::BadSignature)
        );
    }
}
