//! Drains the Slack outbox: posts each pending notification into its channel, threaded
//! under the pull request's first message when the channel threads, updates the parent on
//! merge or decline, paces each channel (about one message a second, short bursts), waits
//! out 429s, retries transient failures with backoff, and never drops a message silently:
//! a channel Slack refuses for good pauses its subscriptions (their creators are told by
//! DM) and the message becomes a dead letter, as does one that fails too often.
//!
//! Owns the delivery loop only: pacing, the post, and recording its outcome. What to post
//! was decided by `notify`; whether a workspace can take a delivery at all (installed,
//! not held) was decided when it was queued (`store::deliveries` parks it then), and
//! every state change goes through `store::deliveries` before the loop moves on. Parked
//! deliveries cost this loop nothing; it only asks the store to resume those that are
//! ready, when rung (`unpark`: a workspace installed again) and every few minutes.
//!
//! Two things can change between queueing and posting, and both must park, never post:
//! the workspace is uninstalled (its installation is read here anyway, for the token), or
//! its notifications become held. The latter is settled by the store in the transaction
//! that marks the delivery in flight ([`DeliveryStore::begin_post`]), so this loop never
//! asks about holds itself.
//!
//! [`DeliveryStore::begin_post`]: crate::store::DeliveryStore::begin_post

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::web::{SlackError, SlackWeb};
use crate::clock::Clock;
use crate::message::Message;
use crate::metrics::{KindLabel, Metrics};
use crate::store::{BeginPost, ChannelKey, ParkReason, PendingDelivery, Store, StoreError};

/// Slack errors that mean a channel cannot take messages until a person acts.
pub const PERMANENT_CHANNEL_ERRORS: &[&str] = &[
    "channel_not_found",
    "is_archived",
    "not_in_channel",
    "account_inactive",
    "no_permission",
    "restricted_action",
];

/// How often parked deliveries are looked at again besides the `unpark` ring (a reinstall
/// rings; a lifted hold requeues or replaces its deliveries itself), so this only bounds
/// a late one.
const PARKED_RECHECK: Duration = Duration::from_secs(600);

/// How soon a channel is looked at again after the store failed to answer.
const STORE_RETRY: Duration = Duration::from_secs(5);

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

/// Which channels this replica may deliver to (per-channel leases, with several replicas
/// on one store), so each channel keeps one sender, its order and its pacing.
pub trait ChannelClaims: Send + Sync {
    /// Whether this replica may post to `channel` now.
    fn holds(&self, channel: &ChannelKey) -> bool;
    /// The channels held (with queued messages other replicas may have put there).
    fn held(&self) -> Vec<ChannelKey>;
    /// Whether this is the only replica (it holds every channel, always).
    fn exclusive(&self) -> bool;
}

/// The only replica: every channel is its own.
#[derive(Debug, Clone, Copy)]
pub struct AllChannels;

impl ChannelClaims for AllChannels {
    fn holds(&self, _: &ChannelKey) -> bool {
        true
    }

    fn held(&self) -> Vec<ChannelKey> {
        Vec::new()
    }

    fn exclusive(&self) -> bool {
        true
    }
}

pub struct Deliverer {
    pub web: SlackWeb,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
    pub metrics: Metrics,
    /// Rung when new deliveries are enqueued.
    pub wake: Arc<Notify>,
    /// Rung when a workspace is installed again (parked deliveries may resume).
    pub unpark: Arc<Notify>,
    /// The channels this replica delivers to.
    pub claims: Arc<dyn ChannelClaims>,
}

enum Outcome {
    Delivered,
    /// Try again later (not an attempt: rate limits, a store that cannot be read).
    Later(Duration, String),
    Failed(String),
    ChannelGone(String),
    /// Moved out of the queue (workspace not installed, or held), or no longer in it.
    Parked,
    /// Posted or not, nobody knows: never posted again by itself.
    Uncertain(String),
}

impl Deliverer {
    /// Serves the channels round-robin: each pass gives every channel whose next message
    /// is due at most one post, so one channel's backlog never delays another's next
    /// message beyond that channel's own pacing. The next message of a channel is one
    /// ordered lookup in the store, whatever the size of the outbox.
    pub async fn run(self, stop: CancellationToken) {
        // With other replicas, a message in flight may be theirs: it is found (and made
        // uncertain) when its channel's lease comes here after its holder stopped.
        let recovered = if self.claims.exclusive() {
            self.store.deliveries.recover_in_flight().await
        } else {
            Ok(0)
        };
        match recovered {
            Ok(0) => {}
            Ok(count) => warn!(
                count,
                "messages were being posted when the daemon stopped: they are uncertain (maybe posted) and will not be posted again by themselves; see `bitbucket-slack outbox --uncertain`"
            ),
            Err(error) => warn!(%error, "could not look for messages left in flight"),
        }
        let started = self.clock.now();
        let mut channels: BTreeMap<ChannelKey, Timestamp> =
            match self.store.deliveries.queued_channels() {
                Ok(queued) => queued
                    .into_iter()
                    .map(|channel| (channel, started))
                    .collect(),
                Err(error) => {
                    warn!(%error, "cannot read the outbox's channels; retrying as messages arrive");
                    BTreeMap::new()
                }
            };
        let mut paces: HashMap<ChannelKey, Pace> = HashMap::new();
        let mut next_unpark = Instant::now();
        loop {
            if stop.is_cancelled() {
                return;
            }
            if Instant::now() >= next_unpark {
                self.unpark_ready().await;
                next_unpark = Instant::now() + PARKED_RECHECK;
            }
            let now = self.clock.now();
            for channel in self.store.deliveries.take_enqueued_channels() {
                channels.entry(channel).or_insert(now);
            }
            for channel in self.claims.held() {
                channels.entry(channel).or_insert(now);
            }
            // A channel another replica holds is its to serve; it comes back here with
            // its lease.
            channels.retain(|channel, _| self.claims.holds(channel));
            let due: Vec<ChannelKey> = channels
                .iter()
                .filter(|(_, ready)| **ready <= now)
                .map(|(channel, _)| channel.clone())
                .collect();
            let mut soonest: Option<Instant> = None;
            for channel in due {
                if stop.is_cancelled() {
                    return;
                }
                let head = match self.store.deliveries.head(&channel.0, &channel.1) {
                    Ok(Some(head)) => head,
                    Ok(None) => {
                        channels.remove(&channel);
                        continue;
                    }
                    Err(error) => {
                        warn!(%error, "cannot read a channel's next message; retrying");
                        channels.insert(channel, later(now, STORE_RETRY));
                        continue;
                    }
                };
                if head.not_before > now {
                    channels.insert(channel, head.not_before);
                    continue;
                }
                let pace = paces.entry(channel.clone()).or_insert(Pace {
                    tokens: f64::from(self.settings.channel_burst),
                    refilled: Instant::now(),
                    blocked_until: None,
                });
                if let Some(ready_at) = self.take_token(pace) {
                    soonest = Some(soonest.map_or(ready_at, |s| s.min(ready_at)));
                    continue;
                }
                let span = info_span!("delivery", id = head.id, team = %head.team_id, channel = %head.channel_id);
                let outcome = self.deliver(&head).instrument(span.clone()).await;
                if let Outcome::Later(wait, _) = &outcome {
                    let now = Instant::now();
                    pace.blocked_until = Some(now.checked_add(*wait).unwrap_or(now));
                }
                if let Err(error) = self.settle(head, outcome).instrument(span).await {
                    warn!(%error, "could not record a delivery's outcome; it will be looked at again");
                    channels.insert(channel, later(now, STORE_RETRY));
                    continue;
                }
                match self.store.deliveries.head(&channel.0, &channel.1) {
                    Ok(Some(next)) => {
                        channels.insert(channel, next.not_before);
                    }
                    Ok(None) => {
                        channels.remove(&channel);
                    }
                    Err(_) => {
                        channels.insert(channel, later(now, STORE_RETRY));
                    }
                }
            }
            let wait = self.idle_wait(soonest, channels.values().min().copied());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = self.unpark.notified() => next_unpark = Instant::now(),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Asks the store to put parked deliveries whose workspace can take them again back
    /// into their queues.
    async fn unpark_ready(&self) {
        match self.store.deliveries.resume_parked(self.clock.now()).await {
            Ok(0) => {}
            Ok(count) => info!(count, "parked messages resumed"),
            Err(error) => warn!(%error, "could not resume parked messages"),
        }
    }

    /// How long to wait for the next paced channel or the next channel's due message.
    fn idle_wait(&self, soonest_paced: Option<Instant>, next_due: Option<Timestamp>) -> Duration {
        let mut wait = self.settings.idle_wait;
        if let Some(at) = soonest_paced {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        if let Some(next) = next_due {
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
        if delivery.in_flight.is_some() {
            // Its post started and was never recorded (a store failure after the post):
            // posting it again could double it.
            return Outcome::Uncertain(
                "its post was never recorded: it may or may not have been posted".into(),
            );
        }
        let installation = match self.store.installations.get(&delivery.team_id) {
            Ok(Some(installation)) if installation.is_active() => installation,
            Ok(_) => return self.park(delivery, ParkReason::NotInstalled).await,
            Err(error) => return Outcome::Later(STORE_RETRY, error.to_string()),
        };
        let Some(token) = installation.bot_token.as_ref() else {
            return self.park(delivery, ParkReason::NotInstalled).await;
        };
        // Parked instead when the workspace's notifications were held after it was
        // queued; when that cannot be read, the delivery waits: better late than posted
        // while held.
        let marked = match self
            .store
            .deliveries
            .begin_post(delivery, self.clock.now())
            .await
        {
            Ok(BeginPost::Post(marked)) => *marked,
            Ok(BeginPost::Parked(_)) => {
                self.count("parked");
                return Outcome::Parked;
            }
            Ok(BeginPost::Gone) => return Outcome::Parked,
            Err(error) => return Outcome::Later(STORE_RETRY, error.to_string()),
        };
        match self.post(token, &marked).await {
            Ok(()) => Outcome::Delivered,
            Err(PostError::Slack(SlackError::Timeout { method })) => {
                self.count("uncertain");
                Outcome::Uncertain(format!(
                    "Slack did not answer {method} in time: it may or may not have been posted"
                ))
            }
            Err(PostError::Unrecorded(error)) => {
                self.count("uncertain");
                warn!(%error, "posted, but the store could not record it");
                Outcome::Uncertain(format!(
                    "posted, but the store could not record it ({error})"
                ))
            }
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

    async fn park(&self, delivery: &PendingDelivery, reason: ParkReason) -> Outcome {
        match self.store.deliveries.park(delivery, reason).await {
            Ok(()) => {
                self.count("parked");
                Outcome::Parked
            }
            Err(error) => Outcome::Later(STORE_RETRY, error.to_string()),
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
                self.store
                    .deliveries
                    .complete(delivery, None)
                    .await
                    .map_err(PostError::Unrecorded)?;
            }
            (Some(key), None) => {
                let ts = self
                    .web
                    .post_message(token, channel, &notification.message)
                    .await?;
                self.store
                    .deliveries
                    .complete(delivery, Some((key, &ts)))
                    .await
                    .map_err(PostError::Unrecorded)?;
            }
            (None, _) => {
                self.web
                    .post_message(token, channel, &notification.message)
                    .await?;
                self.store
                    .deliveries
                    .complete(delivery, None)
                    .await
                    .map_err(PostError::Unrecorded)?;
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
        delivery.in_flight = None;
        match outcome {
            Outcome::Delivered | Outcome::Parked => Ok(()),
            Outcome::Uncertain(reason) => {
                warn!(%reason, "a message is uncertain: listed by `bitbucket-slack outbox --uncertain`, not posted again by itself");
                self.store
                    .deliveries
                    .make_uncertain(&delivery, &reason)
                    .await
            }
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
                .post_message(&token, &subscription.created_by, &Message::text(text))
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
    /// Before the post: nothing was sent.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// After a successful post: it was sent, but not recorded.
    #[error("posted, but not recorded: {0}")]
    Unrecorded(StoreError),
}
