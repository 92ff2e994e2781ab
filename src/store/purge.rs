//! Purging a workspace: every record of one team, from every tree, in one transaction.
//!
//! Owns the map of where team data lives: [`TEAM_TREES`] names each tree that holds
//! per-team records and how a record names its team (the key is the team id, the key
//! starts with `<team>:`, or, for the Slack outbox and the dead, parked and uncertain
//! deliveries, which are keyed by number, the JSON value's `team_id`, plus the outbox's
//! per-channel queue keys); [`TEAM_FREE_TREES`] names the trees that hold
//! none (shared by every workspace: watched repositories, cursors, activities, dedup ids).
//! Every tree the store opens is in exactly one of the two lists, which a test checks by
//! walking the whole database. A purge is one transaction over every team tree, flushed
//! before it returns: a crash leaves all of the workspace or none of it. Must never
//! remove a record of another team, or a shared one.

use super::kv::Transactional;
use super::kv::{ConflictableTransactionError, TransactionError};
use jiff::Timestamp;
use serde::Deserialize;

use super::{Store, StoreError};

/// How a tree's records name their team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TeamKey {
    /// The key is the team id.
    Exact,
    /// The key starts with `<team>:`.
    Prefix,
    /// The key is a number; the value is JSON with a `team_id`.
    ValueTeamId,
    /// The Slack outbox's layout (`store::deliveries`): `d` + id with the delivery as
    /// JSON, and `q` + team + NUL + channel + NUL + id queue entries.
    Outbox,
}

/// Every tree holding per-team records. `installations` comes first: a guarded purge
/// checks it inside the transaction.
const TEAM_TREES: &[(&str, TeamKey)] = &[
    ("installations", TeamKey::Exact),
    ("campaigns", TeamKey::Exact),
    ("held_notifications", TeamKey::Exact),
    ("user_links", TeamKey::Prefix),
    ("user_links_by_bitbucket", TeamKey::Prefix),
    ("subscriptions", TeamKey::Prefix),
    ("channel_settings", TeamKey::Prefix),
    ("personal_settings", TeamKey::Prefix),
    ("threads", TeamKey::Prefix),
    ("slack_actions", TeamKey::Prefix),
    ("unfurl_offers", TeamKey::Prefix),
    ("reminders", TeamKey::Prefix),
    ("deliveries", TeamKey::Outbox),
    ("dead_letters", TeamKey::ValueTeamId),
    ("parked_deliveries", TeamKey::ValueTeamId),
    ("uncertain_deliveries", TeamKey::ValueTeamId),
];

/// The trees that hold no per-team record (checked by the tests against the database).
#[cfg(test)]
const TEAM_FREE_TREES: &[&str] = &[
    super::META_TREE,
    "dedup",
    "bitbucket_repositories",
    "bitbucket_cursors",
    "activity_outbox",
    "activity_ids",
];

/// A workspace removed by [`Store::purge_uninstalled_before`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedTeam {
    pub team_id: String,
    /// How many records were removed, across every tree.
    pub records: usize,
}

/// The part of a numbered record that says whose it is.
#[derive(Deserialize)]
struct TeamOf {
    team_id: String,
}

/// The installation record changed between the read and the purge (a reinstall).
struct InstallationChanged;

impl Store {
    /// Removes every record of `team_id` from every tree: installation, campaign and
    /// hold, user links and their index, subscriptions, channel settings, threads,
    /// deliveries and dead letters. Returns how many records were removed. Durable on
    /// return.
    pub async fn purge_team(&self, team_id: &str) -> Result<usize, StoreError> {
        let removed = self.purge_records(team_id, None)?.unwrap_or(0);
        self.db.flush_async().await?;
        Ok(removed)
    }

    /// Purges (as [`Self::purge_team`]) every workspace uninstalled before `cutoff`. A
    /// workspace reinstalled meanwhile is kept. Durable on return.
    pub async fn purge_uninstalled_before(
        &self,
        cutoff: Timestamp,
    ) -> Result<Vec<PurgedTeam>, StoreError> {
        let mut purged = Vec::new();
        let mut failed = None;
        for (team_id, record) in self.installations.uninstalled_before(cutoff)? {
            match self.purge_records(&team_id, Some(&record)) {
                Ok(Some(records)) => purged.push(PurgedTeam { team_id, records }),
                Ok(None) => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        if !purged.is_empty() || failed.is_some() {
            // The purges done so far are made durable, whether or not one failed.
            self.db.flush_async().await?;
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(purged),
        }
    }

    /// The purge itself. With `expected_installation`, only while the installation
    /// record is still exactly those bytes (`None` otherwise). Not flushed.
    fn purge_records(
        &self,
        team_id: &str,
        expected_installation: Option<&[u8]>,
    ) -> Result<Option<usize>, StoreError> {
        let mut trees = Vec::with_capacity(TEAM_TREES.len());
        let mut keys = Vec::with_capacity(TEAM_TREES.len());
        for &(name, layout) in TEAM_TREES {
            let tree = self.db.open_tree(name)?;
            keys.push(team_keys(&tree, name, layout, team_id)?);
            trees.push(tree);
        }
        let _writing = self.gate.writing()?;
        let outcome = trees[..].transaction(|views| {
            if let Some(expected) = expected_installation {
                let current = views[0].get(team_id.as_bytes())?;
                if current.as_deref() != Some(expected) {
                    return Err(ConflictableTransactionError::Abort(InstallationChanged));
                }
            }
            let mut removed = 0;
            for (view, keys) in views.iter().zip(&keys) {
                for key in keys {
                    removed += usize::from(view.remove(key)?.is_some());
                }
            }
            Ok(removed)
        });
        match outcome {
            Ok(removed) => Ok(Some(removed)),
            Err(TransactionError::Abort(InstallationChanged)) => Ok(None),
            Err(TransactionError::Storage(error)) => Err(error),
        }
    }
}

/// The keys of `team_id`'s records in `tree`.
fn team_keys(
    tree: &super::kv::Tree,
    name: &str,
    layout: TeamKey,
    team_id: &str,
) -> Result<Vec<super::kv::IVec>, StoreError> {
    match layout {
        TeamKey::Exact => Ok(vec![super::kv::IVec::from(team_id.as_bytes())]),
        TeamKey::Prefix => Ok(tree
            .scan_prefix(format!("{team_id}:").as_bytes())
            .keys()
            .collect::<Result<_, _>>()?),
        TeamKey::Outbox => {
            let mut keys = Vec::new();
            for item in tree.scan_prefix([b'd']) {
                let (key, value) = item?;
                let owner: TeamOf = serde_json::from_slice(&value)
                    .map_err(|error| StoreError::Corrupt(format!("a record in {name}: {error}")))?;
                if owner.team_id == team_id {
                    keys.push(key);
                }
            }
            let mut queue = vec![b'q'];
            queue.extend_from_slice(team_id.as_bytes());
            queue.push(0);
            for key in tree.scan_prefix(queue).keys() {
                keys.push(key?);
            }
            Ok(keys)
        }
        TeamKey::ValueTeamId => {
            let mut keys = Vec::new();
            for item in tree.iter() {
                let (key, value) = item?;
                let owner: TeamOf = serde_json::from_slice(&value)
                    .map_err(|error| StoreError::Corrupt(format!("a record in {name}: {error}")))?;
                if owner.team_id == team_id {
                    keys.push(key);
                }
            }
            Ok(keys)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::bitbucket::Target;
    use crate::bitbucket::{Activity, ActivityKind, RepositoryName};
    use crate::config::Secret;
    use crate::message::Message;
    use crate::notify::Notification;
    use crate::notify::subscription::{Features, Filters, Subscription};
    use crate::store::installations::tests::sample;
    use crate::store::{NewDelivery, UserLink};
    use crate::upgrade::campaign::{CampaignState, InstallMode};

    /// Team ids that cannot occur by chance in a sealed value or anything else stored.
    const GONE: &str = "TGONE1";
    const KEPT: &str = "TKEEP2";

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    fn delivery(team: &str, channel: &str, text: &str) -> NewDelivery {
        NewDelivery {
            team_id: team.into(),
            channel_id: channel.into(),
            activity_id: format!("acme/api:{text}"),
            notification: Notification {
                message: Message::text(text),
                thread_key: Some("acme/api:pr:7".into()),
                parent_update: None,
            },
        }
    }

    /// Gives `team` a record in every tree that holds per-team data, through the
    /// stores' own operations.
    async fn fill_team(store: &Store, team: &str) {
        store
            .installations
            .upsert(sample(team, &format!("xoxb-{team}")))
            .await
            .expect("install");
        store
            .user_links
            .put(&UserLink {
                team_id: team.into(),
                slack_user_id: format!("U-{team}"),
                bitbucket_uuid: format!("{{uuid-{team}}}"),
                account_id: None,
                display_name: "Ada".into(),
                nickname: None,
                access_token: Secret::new(format!("bb-access-{team}")),
                refresh_token: Secret::new(format!("bb-refresh-{team}")),
                access_expires_at: at(3600),
                linked_at: at(0),
                stale: false,
                stale_notified: false,
                scopes: None,
                reconnect_asked: false,
            })
            .await
            .expect("link");
        let mut personal = crate::notify::personal::PersonalSettings::default();
        personal.set(crate::notify::personal::NotifyKind::Mentions, true);
        store
            .personal_settings
            .put(team, &format!("U-{team}"), &personal)
            .await
            .expect("personal settings");
        store
            .subscriptions
            .put(&Subscription {
                team_id: team.into(),
                channel_id: "C1".into(),
                target: Target::Repository("acme/api".into()),
                features: Features::defaults(),
                filters: Filters::default(),
                main_branch: Some("main".into()),
                created_by: "U1".into(),
                created_at: at(0),
                paused: None,
                private: None,
                coverage: Default::default(),
            })
            .await
            .expect("subscribe");
        store
            .subscriptions
            .set_threading(team, "C1", false)
            .await
            .expect("setting");
        store
            .slack_actions
            .record(team, "C1", "acme/api#7:approved:{u}", at(10))
            .await
            .expect("action from Slack");
        store
            .unfurl_offers
            .take_offer(team, "U1", at(10))
            .await
            .expect("a connect offer");
        store
            .reminders
            .set_channel(&super::super::ChannelReminder {
                team_id: team.into(),
                channel_id: "C1".into(),
                schedule: crate::notify::reminders::Schedule::morning("UTC"),
                set_by: "U1".into(),
                set_at: at(0),
                last_slot: at(0),
            })
            .await
            .expect("reminder");
        store
            .reminders
            .commit_digest_slot(team, &format!("U-{team}"), at(5), Vec::new(), at(5))
            .await
            .expect("digest slot");
        let ids = store
            .deliveries
            .enqueue(
                vec![
                    delivery(team, "C1", "posted"),
                    delivery(team, "C1", "dead"),
                    delivery(team, "C1", "waiting"),
                    delivery(team, "C1", "parked"),
                    delivery(team, "C2", "uncertain"),
                ],
                at(10),
            )
            .await
            .expect("enqueue");
        let pending = store.deliveries.pending().expect("pending");
        let of = |id: u64| {
            pending
                .iter()
                .find(|delivery| delivery.id == id)
                .expect("enqueued")
        };
        store
            .deliveries
            .complete(of(ids[0]), Some(("acme/api:pr:7", "1700000000.000100")))
            .await
            .expect("complete");
        store
            .deliveries
            .dead_letter(of(ids[1]))
            .await
            .expect("dead letter");
        store
            .deliveries
            .park(of(ids[3]), crate::store::ParkReason::NotInstalled)
            .await
            .expect("park");
        store
            .deliveries
            .make_uncertain(of(ids[4]), "timed out")
            .await
            .expect("uncertain");
        store
            .campaigns
            .put(team, &CampaignState::new(InstallMode::OAuth))
            .await
            .expect("campaign");
        store.campaigns.hold(team).await.expect("hold");
    }

    /// Records shared by every workspace.
    async fn fill_shared(store: &Store) {
        let repo: RepositoryName = "acme/api".parse().expect("name");
        store.repositories.watch(&repo).await.expect("watch");
        let activity = Activity {
            id: "acme/api:branch:main".into(),
            repository: "acme/api".into(),
            occurred_at: at(5),
            actor: None,
            link: None,
            kind: ActivityKind::BranchCreated {
                branch: "main".into(),
                head: "abc".into(),
            },
        };
        store
            .activities
            .commit_poll("acme/api", &1u32, &[activity])
            .await
            .expect("poll");
        store
            .dedup
            .first_sighting(crate::store::DedupKind::Event, "Ev1", at(5))
            .expect("dedup");
    }

    type Entries = BTreeMap<String, BTreeSet<(Vec<u8>, Vec<u8>)>>;

    /// Every entry of every tree in the database, whatever the tree.
    fn walk(store: &Store) -> Entries {
        let mut all = Entries::new();
        for tree_name in store.db.tree_names().expect("tree names") {
            let tree = store.db.open_tree(&tree_name).expect("tree");
            let entries = tree
                .iter()
                .map(|item| {
                    let (key, value) = item.expect("entry");
                    (key.to_vec(), value.to_vec())
                })
                .collect();
            all.insert(tree_name, entries);
        }
        all
    }

    fn mentions(entry: &(Vec<u8>, Vec<u8>), team: &str) -> bool {
        let needle = team.as_bytes();
        [&entry.0, &entry.1]
            .iter()
            .any(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
    }

    fn without(entries: &Entries, team: &str) -> Entries {
        entries
            .iter()
            .map(|(tree, entries)| {
                let kept = entries
                    .iter()
                    .filter(|entry| !mentions(entry, team))
                    .cloned()
                    .collect();
                (tree.clone(), kept)
            })
            .collect()
    }

    async fn filled(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).expect("open");
        fill_shared(&store).await;
        fill_team(&store, GONE).await;
        fill_team(&store, KEPT).await;
        store
    }

    #[tokio::test]
    async fn a_purge_leaves_nothing_of_the_team_in_any_tree_and_everything_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path()).await;
        let before = walk(&store);
        for (tree, entries) in &before {
            assert!(
                !entries.is_empty(),
                "the fixture leaves the tree {tree} empty: give it records of both teams"
            );
        }
        for (tree, _) in TEAM_TREES {
            for team in [GONE, KEPT] {
                assert!(
                    before[*tree].iter().any(|entry| mentions(entry, team)),
                    "the fixture gives {team} no record in {tree}"
                );
            }
        }

        let removed = store.purge_team(GONE).await.expect("purge");

        let after = walk(&store);
        for (tree, entries) in &after {
            for entry in entries {
                assert!(
                    !mentions(entry, GONE),
                    "{tree} still holds a record of the purged team: key {:?}",
                    String::from_utf8_lossy(&entry.0)
                );
            }
        }
        let expected = without(&before, GONE);
        assert_eq!(
            after, expected,
            "everything not of the purged team is untouched"
        );
        let count = |entries: &Entries| entries.values().map(BTreeSet::len).sum::<usize>();
        assert_eq!(removed, count(&before) - count(&after));
        assert_eq!(store.purge_team(GONE).await.expect("again"), 0);
    }

    #[tokio::test]
    async fn every_tree_is_either_a_team_tree_or_a_team_free_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path()).await;
        let team_trees: BTreeSet<&str> = TEAM_TREES.iter().map(|(name, _)| *name).collect();
        let free: BTreeSet<&str> = TEAM_FREE_TREES.iter().copied().collect();
        assert!(team_trees.is_disjoint(&free));
        for name in walk(&store).keys() {
            assert!(
                team_trees.contains(name.as_str()) || free.contains(name.as_str()),
                "the tree {name} is in neither TEAM_TREES nor TEAM_FREE_TREES (src/store/purge.rs)"
            );
        }
        // A team-free tree really holds nothing of a team.
        for (tree, entries) in walk(&store) {
            if free.contains(tree.as_str()) {
                assert!(
                    !entries
                        .iter()
                        .any(|entry| mentions(entry, GONE) || mentions(entry, KEPT)),
                    "{tree} holds team data"
                );
            }
        }
    }

    #[tokio::test]
    async fn only_workspaces_uninstalled_before_the_cutoff_are_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path()).await;
        store
            .installations
            .mark_uninstalled(GONE, at(1000))
            .await
            .expect("uninstall");
        assert!(
            store
                .purge_uninstalled_before(at(999))
                .await
                .expect("purge")
                .is_empty()
        );
        let purged = store
            .purge_uninstalled_before(at(1001))
            .await
            .expect("purge");
        assert_eq!(purged.len(), 1);
        assert_eq!(purged[0].team_id, GONE);
        assert!(purged[0].records > 1);
        assert!(store.installations.get(GONE).expect("get").is_none());
        assert!(
            store
                .user_links
                .get(GONE, "U-TGONE1")
                .expect("get")
                .is_none()
        );
        assert!(store.installations.get(KEPT).expect("get").is_some());
        assert!(
            store
                .user_links
                .get(KEPT, "U-TKEEP2")
                .expect("get")
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_workspace_reinstalled_before_the_purge_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path()).await;
        store
            .installations
            .mark_uninstalled(GONE, at(1000))
            .await
            .expect("uninstall");
        let stale = store
            .installations
            .uninstalled_before(at(1001))
            .expect("list");
        assert_eq!(stale.len(), 1);
        store
            .installations
            .upsert(sample(GONE, "xoxb-again"))
            .await
            .expect("reinstall");
        assert_eq!(
            store.purge_records(GONE, Some(&stale[0].1)).expect("purge"),
            None
        );
        assert!(store.installations.get(GONE).expect("get").is_some());
        assert_eq!(store.subscriptions.count_for_team(GONE), 1);
    }

    #[tokio::test]
    async fn a_late_reschedule_or_dead_letter_does_not_bring_a_purged_delivery_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = filled(dir.path()).await;
        let mut waiting = store
            .deliveries
            .pending()
            .expect("pending")
            .into_iter()
            .find(|delivery| delivery.team_id == GONE)
            .expect("a delivery of the team");
        store.purge_team(GONE).await.expect("purge");
        waiting.not_before = at(100);
        store
            .deliveries
            .reschedule(&waiting)
            .await
            .expect("reschedule");
        store
            .deliveries
            .dead_letter(&waiting)
            .await
            .expect("dead letter");
        let left = walk(&store);
        assert!(
            left.values().flatten().all(|entry| !mentions(entry, GONE)),
            "a purged delivery came back: {:?}",
            left.iter()
                .filter(|(_, entries)| entries.iter().any(|entry| mentions(entry, GONE)))
                .map(|(tree, _)| tree)
                .collect::<Vec<_>>()
        );
    }
}
