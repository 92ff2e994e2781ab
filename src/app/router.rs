//! Routes activities from the poller's outbox to channels: for each activity, the
//! channels whose subscriptions match get one rendered notification each (mentions
//! resolved per workspace), queued in the Slack outbox in the same transaction that
//! takes the activity off its outbox. A notification for a workspace that cannot take it
//! now (not installed, or its notifications held) is queued already parked: the store
//! decides that when it queues ([`Store::commit_routing`]), so the delivery loop never
//! looks at it until the workspace is installed again or the hold is lifted.
//!
//! Runs when the poller rings after a commit that appended activities, and on a slow
//! tick as a safety net (a missed ring, activities left by a previous run).
//!
//! Also queues personal notifications: one DM per linked person the activity concerns
//! (`notify::personal`), in each workspace that subscribed its repository (a channel's
//! subscription covers it), when that workspace's permissions allow direct messages and
//! the person's settings want it. A DM is a delivery whose channel is the Slack user, so
//! it is paced as its own queue and queued in the same transaction as the channels'.
//!
//! Combines the store and the pure `notify` rules. Never posts to Slack itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::bitbucket::Activity;
use crate::clock::Clock;
use crate::notify::personal::{self, Person};
use crate::notify::{Subscription, actions, render, route};
use crate::store::installations::Installation;
use crate::store::{NewDelivery, ShownFromSlack, Store, StoreError};
use crate::upgrade::{self, Feature};

/// How often the activity outbox is looked at without a ring from the poller.
pub const SAFETY_TICK: Duration = Duration::from_secs(30);

pub struct Router {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: crate::metrics::Metrics,
    /// Rung after deliveries are queued.
    pub delivery_wake: Arc<Notify>,
    /// Rung by the poller after a commit that appended activities.
    pub activities_committed: Arc<Notify>,
    /// People can link accounts, so messages may carry action buttons (in workspaces
    /// whose permissions allow the feature).
    pub action_buttons: bool,
}

impl Router {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let routed = match self.route_pending().await {
                Ok(routed) => routed,
                Err(error) => {
                    warn!(%error, "routing activities failed; will retry");
                    0
                }
            };
            if routed > 0 {
                self.delivery_wake.notify_one();
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.activities_committed.notified() => {}
                _ = tokio::time::sleep(SAFETY_TICK) => {}
            }
        }
    }

    /// Routes what is waiting; returns how many activities were routed.
    pub async fn route_pending(&self) -> Result<usize, StoreError> {
        let pending = self.store.activities.pending(100)?;
        if pending.is_empty() {
            return Ok(0);
        }
        let subscriptions = self.store.subscriptions.list_all()?;
        for (seq, activity) in &pending {
            let now = self.clock.now();
            let echo = actions::echo_of(activity);
            // Whether a team's messages carry buttons, read once per team and activity.
            let mut offers_actions: BTreeMap<String, bool> = BTreeMap::new();
            let mut deliveries = Vec::new();
            let mut shown = Vec::new();
            for (team_id, channel_id) in route(activity, &subscriptions) {
                if let Some(record) =
                    self.shown_from_slack(&team_id, &channel_id, echo.as_deref(), now)
                {
                    shown.push(record);
                    continue;
                }
                let links = &self.store.user_links;
                let mention = |uuid: &str| links.slack_user_for(&team_id, uuid).ok().flatten();
                let mut notification = render(activity, &mention);
                let buttons = *offers_actions
                    .entry(team_id.clone())
                    .or_insert_with(|| self.offers_actions(&team_id));
                if buttons {
                    actions::add_buttons(&mut notification, activity);
                }
                deliveries.push(NewDelivery {
                    notification,
                    activity_id: activity.id.clone(),
                    team_id,
                    channel_id,
                });
            }
            deliveries.extend(self.personal_deliveries(activity, &subscriptions, now)?);
            let routed = self
                .store
                .commit_routing(*seq, deliveries, &shown, now)
                .await?;
            if routed.parked > 0 {
                self.metrics
                    .deliveries
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: "parked".into(),
                    })
                    .inc_by(routed.parked as u64);
            }
            let latency = now.duration_since(activity.occurred_at).as_secs_f64();
            self.metrics.detection_latency.observe(latency.max(0.0));
            debug!(activity = %activity.id, repository = %activity.repository, channels = routed.queued, parked = routed.parked, "activity routed");
        }
        Ok(pending.len())
    }

    /// The DMs `activity` gives: per workspace that subscribed its repository and may
    /// send direct messages, one per linked person it concerns whose settings want it
    /// (the first reason they want), never to its actor (a pipeline's result excepted).
    fn personal_deliveries(
        &self,
        activity: &Activity,
        subscriptions: &[Subscription],
        now: jiff::Timestamp,
    ) -> Result<Vec<NewDelivery>, StoreError> {
        let concerned = personal::concerned(activity);
        if concerned.is_empty() {
            return Ok(Vec::new());
        }
        let repository = activity.repository.as_str();
        let teams: std::collections::BTreeSet<&str> = subscriptions
            .iter()
            .filter(|s| s.target.covers(repository) && s.coverage.covers(repository))
            .map(|s| s.team_id.as_str())
            .collect();
        let links = &self.store.user_links;
        let mut deliveries = Vec::new();
        for team_id in teams {
            let Some(installation) = self.store.installations.get(team_id)? else {
                continue;
            };
            if !upgrade::is_available(Feature::DirectMessages, &installation.scopes) {
                continue;
            }
            let buttons = self.allows_actions(&installation);
            let actor = match activity.actor.as_ref().and_then(|a| a.uuid.as_deref()) {
                Some(uuid) => links.slack_user_for(team_id, uuid)?,
                None => None,
            };
            let mut served = std::collections::BTreeSet::new();
            let mut rendered = None;
            for (person, reason) in &concerned {
                let user = match person {
                    Person::Account(uuid) => links.slack_user_for(team_id, uuid)?,
                    Person::Mentioned(mention) => links.slack_user_mentioned(team_id, mention)?,
                };
                let Some(user) = user else { continue };
                if served.contains(&user)
                    || (actor.as_ref() == Some(&user) && !reason.tells_the_actor())
                    || !self
                        .store
                        .personal_settings
                        .get(team_id, &user)?
                        .wants(*reason, now)
                {
                    continue;
                }
                let rendered = rendered.get_or_insert_with(|| {
                    let mention = |uuid: &str| links.slack_user_for(team_id, uuid).ok().flatten();
                    render(activity, &mention)
                });
                let mut notification = personal::personal_notification(*reason, rendered);
                if buttons {
                    actions::add_buttons(&mut notification, activity);
                }
                deliveries.push(NewDelivery {
                    team_id: team_id.to_string(),
                    channel_id: user.clone(),
                    activity_id: activity.id.clone(),
                    notification,
                });
                served.insert(user);
            }
        }
        Ok(deliveries)
    }

    /// The channel's message already shows this activity: someone did it from there. The
    /// record is used up by the routing commit that skips the channel.
    fn shown_from_slack(
        &self,
        team_id: &str,
        channel_id: &str,
        echo: Option<&str>,
        now: jiff::Timestamp,
    ) -> Option<ShownFromSlack> {
        let echo = echo?;
        match self
            .store
            .slack_actions
            .shown(team_id, channel_id, echo, now)
        {
            Ok(shown) => {
                if shown.is_some() {
                    debug!(
                        team = team_id,
                        channel = channel_id,
                        "activity already shown by an action from Slack; not posted again"
                    );
                }
                shown
            }
            Err(error) => {
                warn!(team = team_id, %error, "could not read actions done from Slack");
                None
            }
        }
    }

    /// Whether messages to the team carry action buttons: linking is set up and the
    /// workspace's permissions allow the feature (read now, so an upgrade needs no
    /// restart).
    fn offers_actions(&self, team_id: &str) -> bool {
        matches!(
            self.store.installations.get(team_id),
            Ok(Some(installation)) if self.allows_actions(&installation)
        )
    }

    /// Whether `installation`'s messages carry action buttons (see [`Self::offers_actions`]).
    fn allows_actions(&self, installation: &Installation) -> bool {
        self.action_buttons
            && upgrade::is_available(Feature::PullRequestActions, &installation.scopes)
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::bitbucket::{Activity, ActivityKind, PullRequestRef, RepositoryName, Target};
    use crate::clock::ManualClock;
    use crate::notify::subscription::{Features, Filters, Subscription};
    use crate::store::ParkReason;
    use crate::store::installations::tests::sample;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    /// A store where T1's C1 follows acme/api.
    async fn subscribed_store(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).expect("store");
        store
            .installations
            .upsert(sample("T1", "xoxb-1"))
            .await
            .expect("install");
        let repository: RepositoryName = "acme/api".parse().expect("name");
        store.repositories.watch(&repository).await.expect("watch");
        store
            .subscriptions
            .put(&Subscription {
                team_id: "T1".into(),
                channel_id: "C1".into(),
                target: Target::Repository("acme/api".into()),
                features: Features::defaults(),
                filters: Filters::default(),
                main_branch: Some("main".into()),
                created_by: "U1".into(),
                created_at: at(0),
                paused: None,
                private: Some(false),
                coverage: Default::default(),
            })
            .await
            .expect("subscribe");
        store
    }

    fn pull_request_created(id: &str) -> Activity {
        Activity {
            id: id.into(),
            repository: "acme/api".into(),
            occurred_at: at(1_800_000_000),
            actor: None,
            link: None,
            kind: ActivityKind::PullRequestCreated {
                pull_request: PullRequestRef {
                    id: 7,
                    title: "Add retries".into(),
                    link: None,
                    author: None,
                    source_branch: Some("feature".into()),
                    destination_branch: Some("main".into()),
                    reviewers: Vec::new(),
                },
            },
        }
    }

    fn router(store: &Store, committed: Arc<Notify>) -> Router {
        Router {
            store: store.clone(),
            clock: Arc::new(ManualClock::new(at(1_800_000_000))),
            metrics: crate::metrics::Metrics::default(),
            delivery_wake: Arc::new(Notify::new()),
            activities_committed: committed,
            action_buttons: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_activity_committed_is_routed_at_the_pollers_ring_not_the_tick() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = subscribed_store(dir.path()).await;
        let committed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(router(&store, committed.clone()).run(stop.clone()));
        // The router finds nothing and waits for a ring or its tick.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        store
            .activities
            .commit_poll("acme/api", &1u32, &[pull_request_created("pr:7")])
            .await
            .expect("commit");
        committed.notify_one();
        // Yielding keeps the paused clock where it is: only the ring can route it.
        let mut routed = false;
        for _ in 0..1_000_000 {
            if store.activities.is_empty() && store.deliveries.depth() == 1 {
                routed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(routed, "the ring did not route the activity");
        assert!(started.elapsed() < SAFETY_TICK, "{:?}", started.elapsed());
        stop.cancel();
        task.await.expect("router");
    }

    #[tokio::test]
    async fn dms_go_only_to_linked_people_of_workspaces_that_subscribed_and_may_dm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = subscribed_store(dir.path()).await;
        let every_scope: Vec<String> = crate::upgrade::required_scopes()
            .into_iter()
            .map(String::from)
            .collect();
        for team in ["T1", "T2"] {
            let mut installation = sample(team, "xoxb-1");
            installation.scopes = every_scope.clone();
            store
                .installations
                .upsert(installation)
                .await
                .expect("install");
            let link = crate::store::UserLink {
                team_id: team.into(),
                slack_user_id: "UBOB".into(),
                bitbucket_uuid: "{bob}".into(),
                account_id: None,
                display_name: "Bob".into(),
                nickname: Some("bob".into()),
                access_token: crate::config::Secret::new("access".into()),
                refresh_token: crate::config::Secret::new("refresh".into()),
                access_expires_at: at(3600),
                linked_at: at(0),
                stale: false,
                stale_notified: false,
                scopes: None,
                reconnect_asked: false,
            };
            store.user_links.put(&link).await.expect("link");
        }
        let requested = |id: &str, repository: &str| Activity {
            id: id.into(),
            repository: repository.into(),
            kind: ActivityKind::PullRequestReviewRequested {
                pull_request: match pull_request_created(id).kind {
                    ActivityKind::PullRequestCreated { pull_request } => pull_request,
                    _ => unreachable!(),
                },
                reviewer: crate::bitbucket::Actor {
                    display_name: "Bob".into(),
                    uuid: Some("{bob}".into()),
                },
            },
            ..pull_request_created(id)
        };
        store
            .activities
            .commit_poll(
                "acme/api",
                &1u32,
                &[requested("r1", "acme/api"), requested("r2", "acme/other")],
            )
            .await
            .expect("commit");
        let router = router(&store, Arc::new(Notify::new()));
        assert_eq!(router.route_pending().await.expect("route"), 2);
        let dms: Vec<(String, String, String)> = store
            .deliveries
            .pending()
            .expect("outbox")
            .into_iter()
            .filter(|d| d.channel_id.starts_with('U'))
            .map(|d| (d.team_id, d.channel_id, d.activity_id))
            .collect();
        assert_eq!(
            dms,
            vec![("T1".to_string(), "UBOB".to_string(), "r1".to_string())],
            "T2 subscribed nothing; nobody subscribed acme/other"
        );
    }

    #[tokio::test]
    async fn an_activity_for_a_held_workspace_is_queued_parked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = subscribed_store(dir.path()).await;
        store.campaigns.hold("T1").await.expect("hold");
        store
            .activities
            .commit_poll("acme/api", &1u32, &[pull_request_created("pr:7")])
            .await
            .expect("commit");
        let router = router(&store, Arc::new(Notify::new()));
        assert_eq!(router.route_pending().await.expect("route"), 1);
        assert_eq!(store.deliveries.depth(), 0);
        let parked = store.deliveries.parked().expect("parked");
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].parked, Some(ParkReason::Held));
        assert!(store.deliveries.take_enqueued_channels().is_empty());
    }
}
