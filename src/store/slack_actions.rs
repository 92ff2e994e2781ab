//! What people did from Slack messages (an approval, a merge, a rerun, ...) and where
//! the message showing it is, so the router can drop the poller's later activity for the
//! same action in that channel instead of posting it a second time.
//!
//! Keys are `<team>:<channel>:<echo key>` (the echo key is `notify::actions`'): lookups
//! never cross workspaces. Values are when it was done (big-endian Unix seconds). A
//! record is used once, and one older than [`ECHO_LIFETIME`] is ignored and pruned.
//! Never holds a token or any text a person wrote.

use jiff::{SignedDuration, Timestamp};

use super::{StoreError, WriteGate};

/// How long the poller may take to see an action done from Slack.
pub const ECHO_LIFETIME: SignedDuration = SignedDuration::from_hours(24);

#[derive(Clone)]
pub struct SlackActionStore {
    tree: super::kv::Tree,
    gate: WriteGate,
}

fn key(team_id: &str, channel_id: &str, echo: &str) -> String {
    format!("{team_id}:{channel_id}:{echo}")
}

impl SlackActionStore {
    pub(super) fn new(tree: super::kv::Tree, gate: WriteGate) -> Self {
        Self { tree, gate }
    }

    /// Records that `echo` was done from a message in `channel_id` at `now` (flushed),
    /// and forgets the team's records older than [`ECHO_LIFETIME`].
    pub async fn record(
        &self,
        team_id: &str,
        channel_id: &str,
        echo: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let cutoff = now.as_second() - ECHO_LIFETIME.as_secs();
        {
            let _writing = self.gate.writing()?;
            for entry in self.tree.scan_prefix(format!("{team_id}:").as_bytes()) {
                let (old, value) = entry?;
                if seconds(&value) < cutoff {
                    self.tree.remove(old)?;
                }
            }
            self.tree.insert(
                key(team_id, channel_id, echo).as_bytes(),
                &now.as_second().to_be_bytes()[..],
            )?;
        }
        self.tree.flush_async().await?;
        Ok(())
    }

    /// The record that `echo` was done from Slack in this channel within
    /// [`ECHO_LIFETIME`] of `now`, if there is one. Reading does not use it up: the
    /// routing transaction that drops the activity does ([`super::Store::commit_routing`]),
    /// so a failed commit leaves it for the activity's retry.
    pub fn shown(
        &self,
        team_id: &str,
        channel_id: &str,
        echo: &str,
        now: Timestamp,
    ) -> Result<Option<ShownFromSlack>, StoreError> {
        let key = key(team_id, channel_id, echo).into_bytes();
        let Some(value) = self.tree.get(&key)? else {
            return Ok(None);
        };
        let fresh = seconds(&value) >= now.as_second() - ECHO_LIFETIME.as_secs();
        Ok(fresh.then_some(ShownFromSlack(key)))
    }

    /// The tree, for the routing transaction.
    pub(super) fn tree(&self) -> &super::kv::Tree {
        &self.tree
    }
}

/// A record of an action done from Slack that an activity matched: the routing
/// transaction removes it with the activity, so it is used exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownFromSlack(Vec<u8>);

impl ShownFromSlack {
    pub(super) fn key(&self) -> &[u8] {
        &self.0
    }
}

fn seconds(value: &[u8]) -> i64 {
    value.try_into().map(i64::from_be_bytes).unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("valid")
    }

    #[tokio::test]
    async fn a_record_is_used_once_per_team_and_channel_by_the_routing_commit_and_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let actions = &store.slack_actions;
        actions
            .record("T1", "C1", "acme/api#7:approved:{u}", at(100))
            .await
            .expect("record");
        let shown = |team: &str, channel: &str, echo: &str, second: i64| {
            actions
                .shown(team, channel, echo, at(second))
                .expect("read")
        };
        assert_eq!(shown("T2", "C1", "acme/api#7:approved:{u}", 101), None);
        assert_eq!(shown("T1", "C2", "acme/api#7:approved:{u}", 101), None);
        let used = shown("T1", "C1", "acme/api#7:approved:{u}", 101).expect("recorded");
        assert!(
            shown("T1", "C1", "acme/api#7:approved:{u}", 101).is_some(),
            "reading does not use it up"
        );
        // The activity being routed (its content does not matter to the commit).
        store
            .activities
            .outbox_tree()
            .insert(1u64.to_be_bytes(), &b"{}"[..])
            .expect("an activity to route");
        store.set_write_faults(true);
        assert!(
            store
                .commit_routing(1, Vec::new(), std::slice::from_ref(&used), at(101))
                .await
                .is_err()
        );
        store.set_write_faults(false);
        assert!(
            shown("T1", "C1", "acme/api#7:approved:{u}", 101).is_some(),
            "a failed routing commit keeps the record for the retry"
        );
        store
            .commit_routing(1, Vec::new(), &[used], at(101))
            .await
            .expect("routing commits");
        assert_eq!(
            shown("T1", "C1", "acme/api#7:approved:{u}", 102),
            None,
            "used by the routing commit"
        );
        actions
            .record("T1", "C1", "acme/api#7:merged:{u}", at(100))
            .await
            .expect("record");
        assert_eq!(
            shown("T1", "C1", "acme/api#7:merged:{u}", 100 + 2 * 86_400),
            None,
            "expired"
        );
    }
}
