//! Routes activities from the poller's outbox to channels: for each activity, the
//! channels whose subscriptions match get one rendered notification each (mentions
//! resolved per workspace), queued in the Slack outbox in the same transaction that
//! takes the activity off its outbox.
//!
//! Combines the store and the pure `notify` rules. Never posts to Slack itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::notify::{render, route};
use crate::store::{NewDelivery, Store, StoreError};

/// How often the activity outbox is looked at when it was empty.
const IDLE_WAIT: Duration = Duration::from_millis(500);

pub struct Router {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: crate::metrics::Metrics,
    /// Rung after deliveries are queued.
    pub delivery_wake: Arc<Notify>,
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
                _ = tokio::time::sleep(IDLE_WAIT) => {}
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
            let deliveries: Vec<NewDelivery> = route(activity, &subscriptions)
                .into_iter()
                .map(|(team_id, channel_id)| {
                    let links = &self.store.user_links;
                    let mention = |uuid: &str| links.slack_user_for(&team_id, uuid).ok().flatten();
                    NewDelivery {
                        notification: render(activity, &mention),
                        activity_id: activity.id.clone(),
                        team_id,
                        channel_id,
                    }
                })
                .collect();
            let now = self.clock.now();
            let queued = self.store.commit_routing(*seq, deliveries, now).await?;
            let latency = now.duration_since(activity.occurred_at).as_secs_f64();
            self.metrics.detection_latency.observe(latency.max(0.0));
            debug!(activity = %activity.id, repository = %activity.repository, channels = queued, "activity routed");
        }
        Ok(pending.len())
    }
}
