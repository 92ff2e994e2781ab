//! Ids of Slack envelopes and events already seen, so Slack's retries are handled once.
//!
//! Keys are `kind:id`, values the time first seen (big-endian Unix seconds). Entries live
//! for the configured retention (at least an hour) and are then pruned. The record is
//! written before the envelope is acked; it reaches disk with sled's periodic flush
//! (every 500 ms) and on shutdown. That is enough: Slack only redelivers envelopes that
//! were not acked, and an envelope lost in that window was not acked either.

use jiff::Timestamp;

use super::{StoreError, WriteGate};

/// Which id space an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupKind {
    Envelope,
    Event,
    /// The nonce of an OAuth `state`: each may be used once.
    OAuthState,
}

impl DedupKind {
    fn prefix(self) -> &'static str {
        match self {
            DedupKind::Envelope => "envelope:",
            DedupKind::Event => "event:",
            DedupKind::OAuthState => "oauth_state:",
        }
    }
}

#[derive(Clone)]
pub struct DedupStore {
    tree: super::kv::Tree,
    gate: WriteGate,
}

impl DedupStore {
    pub(super) fn new(tree: super::kv::Tree, gate: WriteGate) -> Self {
        Self { tree, gate }
    }

    /// Records `id` as seen at `now`. True the first time, false for a repeat.
    pub fn first_sighting(
        &self,
        kind: DedupKind,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let key = format!("{}{id}", kind.prefix());
        let seen_at = now.as_second().to_be_bytes();
        let _writing = self.gate.writing()?;
        let swapped = self.tree.compare_and_swap(
            key.as_bytes(),
            None as Option<&[u8]>,
            Some(&seen_at[..]),
        )?;
        Ok(swapped.is_ok())
    }

    /// Forgets ids first seen before `cutoff`; returns how many.
    pub fn prune(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            let seen_at = value
                .as_ref()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if seen_at < cutoff.as_second() {
                let _writing = self.gate.writing()?;
                self.tree.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    #[test]
    fn an_id_is_new_once_per_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let dedup = &store.dedup;
        assert!(
            dedup
                .first_sighting(DedupKind::Envelope, "e1", at(10))
                .expect("ok")
        );
        assert!(
            !dedup
                .first_sighting(DedupKind::Envelope, "e1", at(11))
                .expect("ok")
        );
        assert!(
            dedup
                .first_sighting(DedupKind::Event, "e1", at(11))
                .expect("ok")
        );
    }

    #[test]
    fn sightings_survive_a_reopen_and_are_pruned_after_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            assert!(
                store
                    .dedup
                    .first_sighting(DedupKind::Event, "Ev1", at(100))
                    .expect("ok")
            );
            assert!(
                store
                    .dedup
                    .first_sighting(DedupKind::Event, "Ev2", at(5000))
                    .expect("ok")
            );
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert!(
            !store
                .dedup
                .first_sighting(DedupKind::Event, "Ev1", at(200))
                .expect("ok")
        );
        assert_eq!(store.dedup.prune(at(1000)).expect("prune"), 1);
        assert_eq!(store.dedup.len(), 1);
        assert!(
            store
                .dedup
                .first_sighting(DedupKind::Event, "Ev1", at(6000))
                .expect("ok")
        );
    }
}
