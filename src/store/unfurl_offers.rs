//! When each person was last offered to connect their Bitbucket account because a link
//! they shared could not be previewed, so the offer is made at most once a day, across
//! restarts.
//!
//! Keys are `<team>:<user>` (lookups never cross workspaces); values are when the offer
//! was made (big-endian Unix seconds). Never holds a token, a link or anything a person
//! wrote.

use jiff::{SignedDuration, Timestamp};

use super::{StoreError, WriteGate};

/// How long after an offer the next one may be made.
pub const OFFER_INTERVAL: SignedDuration = SignedDuration::from_hours(24);

#[derive(Clone)]
pub struct UnfurlOfferStore {
    tree: super::kv::Tree,
    gate: WriteGate,
}

fn key(team_id: &str, user_id: &str) -> String {
    format!("{team_id}:{user_id}")
}

impl UnfurlOfferStore {
    pub(super) fn new(tree: super::kv::Tree, gate: WriteGate) -> Self {
        Self { tree, gate }
    }

    /// True, and the offer recorded at `now` (flushed), when the person was not offered
    /// within [`OFFER_INTERVAL`] before `now`; false otherwise (nothing changes). Two
    /// calls racing for the same person: one wins.
    pub async fn take_offer(
        &self,
        team_id: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = key(team_id, user_id);
        let stamp = now.as_second().to_be_bytes();
        {
            let _writing = self.gate.writing()?;
            let previous = self.tree.get(key.as_bytes())?;
            if let Some(previous) = &previous {
                let offered_at = seconds(previous);
                if now.as_second() < offered_at.saturating_add(OFFER_INTERVAL.as_secs()) {
                    return Ok(false);
                }
            }
            let swapped =
                self.tree
                    .compare_and_swap(key.as_bytes(), previous.as_ref(), Some(&stamp[..]))?;
            if swapped.is_err() {
                return Ok(false);
            }
        }
        self.tree.flush_async().await?;
        Ok(true)
    }
}

fn seconds(value: &[u8]) -> i64 {
    value.try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("valid")
    }

    #[tokio::test]
    async fn one_offer_a_day_per_person_and_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let offers = &store.unfurl_offers;
        assert!(offers.take_offer("T1", "U1", at(0)).await.expect("take"));
        assert!(!offers.take_offer("T1", "U1", at(3600)).await.expect("take"));
        assert!(offers.take_offer("T1", "U2", at(3600)).await.expect("take"));
        assert!(offers.take_offer("T2", "U1", at(3600)).await.expect("take"));
        assert!(
            !offers
                .take_offer("T1", "U1", at(86_399))
                .await
                .expect("take")
        );
        assert!(
            offers
                .take_offer("T1", "U1", at(86_400))
                .await
                .expect("take")
        );
    }
}
