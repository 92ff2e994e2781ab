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
//! Combines the store and the pure `notify` rules. Never posts to Slack itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::notify::{actions, render, route};
use crate::store::{NewDelivery, Store, StoreError};
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
            let deliveries: Vec<NewDelivery> = route(activity, &subscriptions)
                .into_iter()
                .filter(|(team_id, channel_id)| {
                    !self.shown_from_slack(team_id, channel_id, echo.as_deref(), now)
                })
                .map(|(team_id, channel_id)| {
                    let links = &self.store.user_links;
                    let mention = |uuid: &str| links.slack_user_for(&team_id, uuid).ok().flatten();
                    let mut notification = render(activity, &mention);
                    if self.offers_actions(&team_id) {
                        actions::add_buttons(&mut notification, activity);
                    }
                    NewDelivery {
                        notification,
                        activity_id: activity.id.clone(),
                        team_id,
                        channel_id,
                    }
                })
                .collect();
            let routed = self.store.commit_routing(*seq, deliveries, now).await?;
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

    /// The channel's message already shows this activity: someone did it from there.
    fn shown_from_slack(
        &self,
        team_id: &str,
        channel_id: &str,
        echo: Option<&str>,
        now: jiff::Timestamp,
    ) -> bool {
        let Some(echo) = echo else { return false };
        match self
            .store
            .slack_actions
            .take(team_id, channel_id, echo, now)
        {
            Ok(shown) => {
                if shown {
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
                false
            }
        }
    }

    /// Whether messages to the team carry action buttons: linking is set up and the
    /// workspace's permissions allow the feature (read now, so an upgrade needs no
    /// restart).
    fn offers_actions(&self, team_id: &str) -> bool {
        self.action_buttons
            && matches!(
                self.store.installations.get(team_id),
                Ok(Some(installation)) if upgrade::is_available(Feature::PullRequestActions, &installation.scopes)
            )
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
