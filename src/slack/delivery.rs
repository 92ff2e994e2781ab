//! Drains the Slack outbox: posts each pending notification into its channel, threaded
//! under the pull request's first message when the channel threads, updates the parent on
//! merge or decline, paces each channel (about one message a second, short bursts), waits
//! out 429s, retries transient failures with backoff, and never drops a message silently:
//! a channel Slack refuses for good pauses its subscriptions (their creators are told by
//! DM) and the message becomes a dead letter, as does one that fails too often.
//!
//! Owns the delivery loop only; what to post was decided by `notify`, and every state
//! change goes through `store::deliveries` before the loop moves on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::web::{SlackError, SlackWeb};
use crate::clock::Clock;
use crate::commands::Reply;
use crate::metrics::{KindLabel, Metrics};
use crate::store::{PendingDelivery, Store, StoreError};

/// Slack errors that mean a channel cannot take messages until a person acts.
pub const PERMANENT_CHANNEL_ERRORS: &[&str] = &[
    "channel_not_found",
    "is_archived",
    "not_in_channel",
    "account_inactive",
    "no_permission",
    "restricted_action",
];

/// How often a held delivery is looked at again. The release replaces held deliveries
/// with digests and wakes the loop, so this only bounds how long a failed read of the
/// hold delays a delivery.
const HELD_RECHECK: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Attempts before a message becomes a dead letter.
    pub max_attempts: u32,
    /// Sustained pace per channel.
    pub channel_interval: Duration,
    /// Messages a quiet channel may take at once.
    pub channel_burst: u32,
    /// How long to wait when nothing is due and nobody rings.
    pub idle_wait: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            channel_interval: Duration::from_secs(1),
            channel_burst: 3,
            idle_wait: Duration::from_secs(5),
        }
    }
}

/// A token bucket per channel.
#[derive(Debug, Clone, Copy)]
struct Pace {
    tokens: f64,
    refilled: Instant,
    blocked_until: Option<Instant>,
}

pub struct Deliverer {
    pub web: SlackWeb,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
    pub metrics: Metrics,
    /// Rung when new deliveries are enqueued.
    pub wake: Arc<Notify>,
}

enum Outcome {
    Delivered,
    /// Try again later (not an attempt: rate limits, a paused workspace).
    Later(Duration, String),
    Failed(String),
    ChannelGone(String),
}

impl Deliverer {
    pub async fn run(self, stop: CancellationToken) {
        let mut paces: HashMap<(String, String), Pace> = HashMap::new();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let now = self.clock.now();
            let due = match self.store.deliveries.due(now, 50) {
                Ok(due) => due,
                Err(error) => {
                    warn!(%error, "cannot read the outbox; retrying");
                    Vec::new()
                }
            };
            let mut soonest: Option<Instant> = None;
            let mut delivered_any = false;
            for delivery in due {
                if stop.is_cancelled() {
                    return;
                }
                if self.hold_if_held(&delivery).await {
                    continue;
                }
                let channel = (delivery.team_id.clone(), delivery.channel_id.clone());
                let pace = paces.entry(channel).or_insert(Pace {
                    tokens: f64::from(self.settings.channel_burst),
                    refilled: Instant::now(),
                    blocked_until: None,
                });
                if let Some(ready_at) = self.take_token(pace) {
                    soonest = Some(soonest.map_or(ready_at, |s| s.min(ready_at)));
                    continue;
                }
                let span = info_span!("delivery", id = delivery.id, team = %delivery.team_id, channel = %delivery.channel_id);
                let outcome = self.deliver(&delivery).instrument(span.clone()).await;
                if let Outcome::Later(wait, _) = &outcome {
                    let now = Instant::now();
                    pace.blocked_until = Some(now.checked_add(*wait).unwrap_or(now));
                }
                delivered_any |= matches!(outcome, Outcome::Delivered);
                if let Err(error) = self.settle(delivery, outcome).instrument(span).await {
                    warn!(%error, "could not record a delivery's outcome; it will be retried");
                }
            }
            if delivered_any {
                continue;
            }
            let wait = self.idle_wait(soonest);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A workspace whose permission upgrade is overdue has its notifications held: the
    /// delivery stays in the outbox (not an attempt) until the upgrade replaces the held
    /// ones with a digest, which wakes this loop. Returns whether it was held. When the
    /// hold cannot be read, the delivery waits too: better late than posted while held.
    async fn hold_if_held(&self, delivery: &PendingDelivery) -> bool {
        let reason = match self.store.campaigns.is_held(&delivery.team_id) {
            Ok(false) => return false,
            Ok(true) => "held until the workspace's permissions are updated".to_string(),
            Err(error) => {
                warn!(%error, "cannot read whether the workspace's notifications are held");
                format!("could not read whether notifications are held: {error}")
            }
        };
        let mut held = delivery.clone();
        held.not_before = later(self.clock.now(), HELD_RECHECK);
        held.last_error = Some(reason);
        if let Err(error) = self
            .store
            .deliveries
            .reschedule_if_unchanged(delivery, &held)
            .await
        {
            warn!(%error, "could not reschedule a held delivery");
        }
        true
    }

    /// How long to wait for the next paced channel or the next scheduled retry.
    fn idle_wait(&self, soonest_channel: Option<Instant>) -> Duration {
        let mut wait = self.settings.idle_wait;
        if let Some(at) = soonest_channel {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        if let Ok(Some(next)) = self.store.deliveries.next_due() {
            let until = next.duration_since(self.clock.now());
            let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
            wait = wait.min(until);
        }
        wait.max(Duration::from_millis(10))
    }

    /// `None` when the channel may take a message now (a token is used); otherwise when.
    fn take_token(&self, pace: &mut Pace) -> Option<Instant> {
        let now = Instant::now();
        if let Some(blocked) = pace.blocked_until {
            if blocked > now {
                return Some(blocked);
            }
            pace.blocked_until = None;
        }
        let interval = self
            .settings
            .channel_interval
            .as_secs_f64()
            .max(f64::EPSILON);
        let refill = now.duration_since(pace.refilled).as_secs_f64() / interval;
        pace.tokens = (pace.tokens + refill).min(f64::from(self.settings.channel_burst));
        pace.refilled = now;
        if pace.tokens >= 1.0 {
            pace.tokens -= 1.0;
            None
        } else {
            Some(now + Duration::from_secs_f64((1.0 - pace.tokens) * interval))
        }
    }

    async fn deliver(&self, delivery: &PendingDelivery) -> Outcome {
        let installation = match self.store.installations.get(&delivery.team_id) {
            Ok(Some(installation)) if installation.is_active() => installation,
            Ok(_) => {
                return Outcome::Later(
                    Duration::from_secs(60),
                    "the workspace has no active installation".into(),
                );
            }
            Err(error) => return Outcome::Failed(error.to_string()),
        };
        let Some(token) = installation.bot_token.as_ref() else {
            return Outcome::Later(Duration::from_secs(60), "no bot token".into());
        };
        match self.post(token, delivery).await {
            Ok(()) => Outcome::Delivered,
            Err(PostError::Slack(SlackError::RateLimited { retry_after, .. })) => {
                self.count("rate_limited");
                Outcome::Later(
                    retry_after
                        .unwrap_or(Duration::from_secs(30))
                        .min(crate::slack::web::RETRY_AFTER_MAX),
                    "rate limited".into(),
                )
            }
            Err(PostError::Slack(SlackError::Api { code, .. }))
                if PERMANENT_CHANNEL_ERRORS.contains(&code.as_str()) =>
            {
                Outcome::ChannelGone(code)
            }
            Err(error) => Outcome::Failed(error.to_string()),
        }
    }

    async fn post(
        &self,
        token: &crate::config::Secret<String>,
        delivery: &PendingDelivery,
    ) -> Result<(), PostError> {
        let notification = &delivery.notification;
        let (team, channel) = (&delivery.team_id, &delivery.channel_id);
        let threaded = match &notification.thread_key {
            Some(key) if self.store.subscriptions.threading(team, channel)? => Some(key.as_str()),
            _ => None,
        };
        let parent = match threaded {
            Some(key) => self.store.deliveries.thread_parent(team, channel, key)?,
            None => None,
        };
        match (threaded, parent) {
            (Some(_), Some(parent_ts)) => {
                let broadcast = notification.parent_update.is_some();
                self.web
                    .post_in_thread(
                        token,
                        channel,
                        &notification.message,
                        Some(&parent_ts),
                        broadcast,
                    )
                    .await?;
                if let Some(update) = &notification.parent_update {
                    if let Err(error) = self
                        .web
                        .update_message(token, channel, &parent_ts, update)
                        .await
                    {
                        warn!(%error, "could not update the thread's parent message");
                    }
                }
                self.store.deliveries.complete(delivery, None).await?;
            }
            (Some(key), None) => {
                let ts = self
                    .web
                    .post_message(token, channel, &notification.message)
                    .await?;
                self.store
                    .deliveries
                    .complete(delivery, Some((key, &ts)))
                    .await?;
            }
            (None, _) => {
                self.web
                    .post_message(token, channel, &notification.message)
                    .await?;
                self.store.deliveries.complete(delivery, None).await?;
            }
        }
        self.count("delivered");
        Ok(())
    }

    async fn settle(
        &self,
        mut delivery: PendingDelivery,
        outcome: Outcome,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        match outcome {
            Outcome::Delivered => Ok(()),
            Outcome::Later(wait, reason) => {
                delivery.not_before = later(now, wait);
                delivery.last_error = Some(reason);
                self.store.deliveries.reschedule(&delivery).await
            }
            Outcome::Failed(reason) => {
                delivery.attempts += 1;
                delivery.last_error = Some(reason.clone());
                self.count("failed");
                if delivery.attempts >= self.settings.max_attempts {
                    warn!(attempts = delivery.attempts, %reason, "giving up on a message: moved to the dead letters");
                    self.count("dead_lettered");
                    self.store.deliveries.dead_letter(&delivery).await
                } else {
                    let backoff =
                        Duration::from_secs(2u64.saturating_pow(delivery.attempts).min(300));
                    delivery.not_before = later(now, backoff);
                    warn!(attempts = delivery.attempts, %reason, retry_in_secs = backoff.as_secs(), "delivery failed; will retry");
                    self.store.deliveries.reschedule(&delivery).await
                }
            }
            Outcome::ChannelGone(code) => {
                delivery.last_error = Some(code.clone());
                self.count("channel_gone");
                self.pause_channel(&delivery, &code).await?;
                self.store.deliveries.dead_letter(&delivery).await
            }
        }
    }

    /// Pauses the channel's subscriptions and tells each creator once.
    async fn pause_channel(
        &self,
        delivery: &PendingDelivery,
        code: &str,
    ) -> Result<(), StoreError> {
        let paused = self
            .store
            .subscriptions
            .pause_channel(
                &delivery.team_id,
                &delivery.channel_id,
                code,
                self.clock.now(),
            )
            .await?;
        let Some(token) = self
            .store
            .installations
            .get(&delivery.team_id)?
            .and_then(|installation| installation.bot_token)
        else {
            return Ok(());
        };
        let mut told = Vec::new();
        for subscription in paused {
            info!(target = %subscription.target.as_str(), %code, "subscription paused");
            if told.contains(&subscription.created_by) {
                continue;
            }
            told.push(subscription.created_by.clone());
            let text = format!(
                "Your Bitbucket subscription to `{}` in <#{}> is paused: Slack answered `{code}` when I posted there. \
                 If the channel is private, invite me with `/invite @bitbucket`; then run `/bitbucket subscribe {}` in it to resume.",
                subscription.target.as_str(),
                subscription.channel_id,
                subscription.target.as_str()
            );
            if let Err(error) = self
                .web
                .post_message(&token, &subscription.created_by, &Reply::text(text))
                .await
            {
                warn!(%error, "could not tell the subscriber that the subscription is paused");
            }
        }
        Ok(())
    }

    fn count(&self, kind: &str) {
        self.metrics
            .deliveries
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }
}

fn later(now: Timestamp, wait: Duration) -> Timestamp {
    SignedDuration::try_from(wait)
        .ok()
        .and_then(|wait| now.checked_add(wait).ok())
        .unwrap_or(now)
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error(transparent)]
    Slack(#[from] SlackError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
