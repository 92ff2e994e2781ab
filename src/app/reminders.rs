//! Review reminders at work: `/bitbucket remind` ([`ReviewReminders::answer`]) and the
//! background component `reminders` ([`ReviewReminders::run`]) that, each minute (or at
//! the next due slot, or when rung), finds the channels' reminders and the people's
//! morning digests that are due, reads the open pull requests they list and hands each
//! message to the Slack outbox in the same store transaction that records its slot as
//! handled (`store::ReminderStore`), so a slot gives exactly one message across restarts
//! and crashes.
//!
//! Channels are read with the daemon's Bitbucket credential (the repositories their
//! subscriptions cover, at most [`MAX_REPOSITORIES`]); a digest with the person's own
//! linked token, so it lists only what they can read. Nothing is sent (the slot is
//! recorded and logged) for a workspace without an active installation or whose
//! permissions lack [`Feature::ReviewReminders`], a channel whose subscriptions are all
//! paused or removed, a muted person or a stale link. Combines the store, the clients and
//! the pure `notify::reminders` rules; never posts to Slack itself and never logs a token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::accounts::{Accounts, LoginError};
use crate::bitbucket::accounts::AccountError;
use crate::bitbucket::open_pulls::OpenPullRequest;
use crate::bitbucket::{BitbucketClient, Target};
use crate::clock::Clock;
use crate::message::Message;
use crate::notify::Notification;
use crate::notify::personal::NotifyKind;
use crate::notify::reminders::{
    DEFAULT_HOUR, DEFAULT_MINUTE, Days, Due, RemindCommand, Schedule, digest_message, due,
    parse_zone, reminder_message,
};
use crate::notify::subscription::{Subscription, covered_repositories};
use crate::slack::web::SlackWeb;
use crate::store::installations::Installation;
use crate::store::{ChannelReminder, NewDelivery, SlotCommit, Store, StoreError};
use crate::upgrade::{self, Feature};

/// The most repositories one reminder or digest reads.
pub const MAX_REPOSITORIES: usize = 25;
/// The longest the component waits without looking (the clock may have moved).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a person's Slack time zone is kept before users.info is asked again.
const ZONE_TTL: SignedDuration = SignedDuration::from_hours(24);
/// How long a failed users.info is not asked again (UTC meanwhile).
const ZONE_RETRY: SignedDuration = SignedDuration::from_hours(1);

/// Rings the component (a reminder set, a test that moved its manual clock). Each ring is
/// numbered, and the component publishes the number of the last ring whose pass has
/// finished, so a caller can wait until it has acted ([`Self::settled`]).
#[derive(Clone)]
pub struct ReminderSignal {
    inner: Arc<SignalInner>,
}

struct SignalInner {
    notify: Notify,
    rung: AtomicU64,
    handled: tokio::sync::watch::Sender<u64>,
}

impl Default for ReminderSignal {
    fn default() -> Self {
        ReminderSignal {
            inner: Arc::new(SignalInner {
                notify: Notify::new(),
                rung: AtomicU64::new(0),
                handled: tokio::sync::watch::Sender::new(0),
            }),
        }
    }
}

impl std::fmt::Debug for ReminderSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReminderSignal")
    }
}

impl ReminderSignal {
    /// Look at every reminder again; returns the ring's number for [`Self::settled`].
    pub fn wake(&self) -> u64 {
        let number = self.inner.rung.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.notify.notify_one();
        number
    }

    /// Waits until a pass that began after ring `number` has finished (never returns if
    /// the component has stopped).
    pub async fn settled(&self, number: u64) {
        let mut handled = self.inner.handled.subscribe();
        let _ = handled.wait_for(|handled| *handled >= number).await;
    }
}

/// A person's Slack time zone as last read, and when.
type ZoneCache = HashMap<(String, String), (Option<String>, Timestamp)>;

/// Why a due slot is left for the next pass instead of being recorded.
struct TryAgain;

#[derive(Clone)]
pub struct ReviewReminders {
    pub store: Store,
    pub web: SlackWeb,
    pub clock: Arc<dyn Clock>,
    /// The daemon's credential, for channels; `None` when none is configured.
    pub bitbucket: Option<BitbucketClient>,
    /// People's links and tokens, for digests.
    pub accounts: Accounts,
    /// `reminders.grace_secs`.
    pub grace: SignedDuration,
    /// Rung after messages are queued.
    pub delivery_wake: Arc<Notify>,
    pub signal: ReminderSignal,
    zones: Arc<Mutex<ZoneCache>>,
}

impl ReviewReminders {
    pub fn new(
        store: Store,
        web: SlackWeb,
        clock: Arc<dyn Clock>,
        bitbucket: Option<BitbucketClient>,
        accounts: Accounts,
        grace: SignedDuration,
        delivery_wake: Arc<Notify>,
    ) -> Self {
        ReviewReminders {
            store,
            web,
            clock,
            bitbucket,
            accounts,
            grace,
            delivery_wake,
            signal: ReminderSignal::default(),
            zones: Arc::default(),
        }
    }

    /// The component: a pass at once (a slot missed while the daemon was down is sent
    /// within the grace window), then one at the next due slot, each minute, or when rung.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let ring = self.signal.inner.rung.load(Ordering::SeqCst);
            let next = self.pass().await;
            self.signal.inner.handled.send_replace(ring);
            let now = self.clock.now();
            let wait = next
                .and_then(|next| Duration::try_from(next.duration_since(now)).ok())
                .map_or(MAX_WAIT, |until| {
                    until.clamp(Duration::from_secs(1), MAX_WAIT)
                });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.signal.inner.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Handles every due slot; returns the earliest slot still to come.
    async fn pass(&self) -> Option<Timestamp> {
        let mut earliest: Option<Timestamp> = None;
        let mut note = |next: Option<Timestamp>| {
            if let Some(next) = next {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
        };
        match self.store.reminders.channels() {
            Ok(reminders) => {
                for reminder in reminders {
                    note(self.channel_pass(&reminder).await);
                }
            }
            Err(error) => warn!(%error, "could not read the review reminders; will retry"),
        }
        match self.store.personal_settings.list_all() {
            Ok(people) => {
                for (team_id, user_id, settings) in people {
                    if settings.is_on(NotifyKind::Digest) {
                        note(self.digest_pass(&team_id, &user_id, &settings).await);
                    }
                }
            }
            Err(error) => warn!(%error, "could not read personal settings for digests; will retry"),
        }
        debug!(next = ?earliest, "review reminders checked");
        earliest
    }

    /// One channel's reminder: sends or skips its due slot; returns its next slot.
    async fn channel_pass(&self, reminder: &ChannelReminder) -> Option<Timestamp> {
        let now = self.clock.now();
        let (team, channel) = (reminder.team_id.as_str(), reminder.channel_id.as_str());
        let deliveries = match due(
            &reminder.schedule,
            Some(reminder.last_slot),
            now,
            self.grace,
        ) {
            Due::Nothing => return reminder.schedule.next_slot(now),
            Due::Skip(slot) => {
                info!(team, channel, %slot, grace = %self.grace, "a review reminder's slot passed longer ago than reminders.grace_secs (the daemon was not running); skipped");
                Some((slot, Vec::new()))
            }
            Due::Send(slot) => match self.channel_message(reminder, now).await {
                Ok(message) => Some((
                    slot,
                    message
                        .map(|message| delivery(team, channel, slot, "reminder", message))
                        .into_iter()
                        .collect(),
                )),
                Err(TryAgain) => None,
            },
        };
        if let Some((slot, deliveries)) = deliveries {
            let result = self
                .store
                .reminders
                .commit_channel_slot(team, channel, slot, deliveries, now)
                .await;
            self.committed(result, team, channel, slot);
        }
        reminder.schedule.next_slot(now)
    }

    /// The channel's reminder now: `None` when nothing is to be posted (logged why).
    async fn channel_message(
        &self,
        reminder: &ChannelReminder,
        now: Timestamp,
    ) -> Result<Option<Message>, TryAgain> {
        let (team, channel) = (reminder.team_id.as_str(), reminder.channel_id.as_str());
        let installation = match self.store.installations.get(team) {
            Ok(Some(installation)) if installation.is_active() => installation,
            Ok(_) => {
                info!(
                    team,
                    channel, "review reminder not sent: the workspace has no active installation"
                );
                return Ok(None);
            }
            Err(error) => {
                warn!(team, %error, "could not read the installation for a review reminder; will retry");
                return Err(TryAgain);
            }
        };
        if !upgrade::is_available(Feature::ReviewReminders, &installation.scopes) {
            info!(
                team,
                channel,
                "review reminder not sent: the workspace's permissions do not allow review reminders yet"
            );
            return Ok(None);
        }
        let subscriptions = match self.store.subscriptions.list_channel(team, channel) {
            Ok(subscriptions) => subscriptions,
            Err(error) => {
                warn!(team, channel, %error, "could not read a channel's subscriptions; will retry");
                return Err(TryAgain);
            }
        };
        let active: Vec<Subscription> = subscriptions
            .into_iter()
            .filter(|s| s.paused.is_none())
            .collect();
        if active.is_empty() {
            info!(
                team,
                channel, "review reminder not sent: the channel has no active subscription"
            );
            return Ok(None);
        }
        let Some(client) = &self.bitbucket else {
            warn!(
                team,
                channel, "review reminder not sent: no Bitbucket credential is configured"
            );
            return Ok(None);
        };
        let repositories = self.repositories_of(&active).map_err(|error| {
            warn!(team, %error, "could not read the watched repositories; will retry");
            TryAgain
        })?;
        let mut pulls = Vec::new();
        let mut read = 0;
        for repository in &repositories {
            match client.open_pull_requests(repository).await {
                Ok(found) => {
                    read += 1;
                    pulls.extend(found);
                }
                Err(error) => {
                    warn!(team, channel, repository = %repository, %error, "could not read a repository's open pull requests for a review reminder")
                }
            }
        }
        if read == 0 && !repositories.is_empty() {
            return Err(TryAgain);
        }
        let links = &self.store.user_links;
        let mention = |uuid: &str| links.slack_user_for(team, uuid).ok().flatten();
        let message = reminder_message(pulls, now, &mention);
        if message.is_none() {
            debug!(
                team,
                channel, "no pull request waits for review; no reminder posted"
            );
        }
        Ok(message)
    }

    /// One person's digest: sends or skips its due slot; returns its next slot.
    async fn digest_pass(
        &self,
        team: &str,
        user: &str,
        settings: &crate::notify::personal::PersonalSettings,
    ) -> Option<Timestamp> {
        let now = self.clock.now();
        let installation = match self.store.installations.get(team) {
            Ok(Some(installation)) if installation.is_active() => installation,
            Ok(_) => return None,
            Err(error) => {
                warn!(team, %error, "could not read the installation for a digest; will retry");
                return None;
            }
        };
        let zone = self.zone_of(&installation, user).await;
        let schedule = Schedule::morning(&zone);
        let last = match self.store.reminders.digest_last_slot(team, user) {
            Ok(last) => last,
            Err(error) => {
                warn!(team, user, %error, "could not read a digest's last slot; will retry");
                return schedule.next_slot(now);
            }
        };
        let deliveries = match due(&schedule, last, now, self.grace) {
            Due::Nothing => return schedule.next_slot(now),
            Due::Skip(slot) => {
                info!(team, user, %slot, "a digest's slot passed longer ago than reminders.grace_secs (the daemon was not running); skipped");
                Some((slot, Vec::new()))
            }
            Due::Send(slot) => {
                match self
                    .digest_message(&installation, user, settings, now)
                    .await
                {
                    Ok(message) => Some((
                        slot,
                        message
                            .map(|message| delivery(team, user, slot, "digest", message))
                            .into_iter()
                            .collect(),
                    )),
                    Err(TryAgain) => None,
                }
            }
        };
        if let Some((slot, deliveries)) = deliveries {
            let result = self
                .store
                .reminders
                .commit_digest_slot(team, user, slot, deliveries, now)
                .await;
            self.committed(result, team, user, slot);
        }
        schedule.next_slot(now)
    }

    /// The person's digest now: `None` when nothing is to be sent (logged why).
    async fn digest_message(
        &self,
        installation: &Installation,
        user: &str,
        settings: &crate::notify::personal::PersonalSettings,
        now: Timestamp,
    ) -> Result<Option<Message>, TryAgain> {
        let team = installation.team_id.as_str();
        if settings.is_muted(now) {
            info!(
                team,
                user, "digest not sent: the person muted their notifications"
            );
            return Ok(None);
        }
        if !upgrade::is_available(Feature::ReviewReminders, &installation.scopes) {
            info!(
                team,
                user,
                "digest not sent: the workspace's permissions do not allow review reminders yet"
            );
            return Ok(None);
        }
        let link = match self.store.user_links.get(team, user) {
            Ok(Some(link)) if !link.stale => link,
            Ok(Some(_)) => {
                info!(
                    team,
                    user, "digest not sent: the person's Bitbucket link is stale"
                );
                return Ok(None);
            }
            Ok(None) => {
                info!(
                    team,
                    user, "digest not sent: the person has no linked Bitbucket account"
                );
                return Ok(None);
            }
            Err(error) => {
                warn!(team, user, %error, "could not read a link for a digest; will retry");
                return Err(TryAgain);
            }
        };
        let Some(client) = &self.accounts.client else {
            return Ok(None);
        };
        let token = match self.accounts.access_token(team, user).await {
            Ok(Some(token)) => token,
            Ok(None) | Err(LoginError::Stale) => {
                info!(
                    team,
                    user, "digest not sent: the person's Bitbucket link is stale"
                );
                return Ok(None);
            }
            Err(error) => {
                warn!(team, user, %error, "could not get a person's token for a digest; will retry");
                return Err(TryAgain);
            }
        };
        let subscriptions: Vec<Subscription> = match self.store.subscriptions.list_all() {
            Ok(all) => all.into_iter().filter(|s| s.team_id == team).collect(),
            Err(error) => {
                warn!(team, %error, "could not read subscriptions for a digest; will retry");
                return Err(TryAgain);
            }
        };
        let repositories = self.repositories_of(&subscriptions).map_err(|error| {
            warn!(team, %error, "could not read the watched repositories; will retry");
            TryAgain
        })?;
        let mut pulls: Vec<OpenPullRequest> = Vec::new();
        let mut answered = 0;
        for repository in &repositories {
            match client.open_pull_requests(&token, repository).await {
                Ok(found) => {
                    answered += 1;
                    pulls.extend(found);
                }
                // Not theirs to read: left out.
                Err(AccountError::Http { status: 403 | 404 }) => answered += 1,
                Err(AccountError::Unauthorized) => {
                    self.accounts.link_rejected(team, user).await;
                    info!(
                        team,
                        user, "digest not sent: Bitbucket refused the person's token"
                    );
                    return Ok(None);
                }
                Err(error) => {
                    warn!(team, user, repository = %repository, %error, "could not read a repository's open pull requests for a digest")
                }
            }
        }
        if answered == 0 && !repositories.is_empty() {
            return Err(TryAgain);
        }
        let links = &self.store.user_links;
        let mention = |uuid: &str| links.slack_user_for(team, uuid).ok().flatten();
        Ok(digest_message(pulls, &link.bitbucket_uuid, now, &mention))
    }

    /// The repositories `subscriptions` cover (`notify::subscription::covered_repositories`;
    /// the watched list is read only for a workspace target); at most [`MAX_REPOSITORIES`].
    fn repositories_of(&self, subscriptions: &[Subscription]) -> Result<Vec<String>, StoreError> {
        let watched = if subscriptions
            .iter()
            .any(|subscription| matches!(subscription.target, Target::Workspace(_)))
        {
            self.store.repositories.names()?
        } else {
            Vec::new()
        };
        Ok(covered_repositories(subscriptions, &watched)
            .into_iter()
            .take(MAX_REPOSITORIES)
            .collect())
    }

    fn committed(
        &self,
        result: Result<SlotCommit, StoreError>,
        team: &str,
        to: &str,
        slot: Timestamp,
    ) {
        match result {
            Ok(SlotCommit::Recorded { queued, parked }) => {
                if queued > 0 {
                    self.delivery_wake.notify_one();
                }
                debug!(team, to, %slot, queued, parked, "reminder slot recorded");
            }
            Ok(SlotCommit::AlreadyHandled) => {
                debug!(team, to, %slot, "reminder slot was handled already")
            }
            Ok(SlotCommit::Gone) => debug!(team, to, "reminder turned off meanwhile"),
            Err(error) => {
                warn!(team, to, %slot, %error, "could not record a reminder slot; will retry")
            }
        }
    }

    /// The person's Slack time zone (users.info, kept for a day), else UTC.
    async fn zone_of(&self, installation: &Installation, user: &str) -> String {
        let key = (installation.team_id.clone(), user.to_string());
        let now = self.clock.now();
        let cached = self
            .zones
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&key)
            .cloned();
        let zone = match cached {
            Some((zone, read_at))
                if now.duration_since(read_at)
                    < if zone.is_some() { ZONE_TTL } else { ZONE_RETRY } =>
            {
                zone
            }
            _ => {
                let zone = self.read_zone(installation, user).await;
                self.zones
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(key, (zone.clone(), now));
                zone
            }
        };
        zone.unwrap_or_else(|| "UTC".to_string())
    }

    async fn read_zone(&self, installation: &Installation, user: &str) -> Option<String> {
        let token = installation.bot_token.as_ref()?;
        match self.web.user_time_zone(token, user).await {
            Ok(Some(zone)) => match parse_zone(&zone) {
                Ok(zone) => Some(zone),
                Err(_) => {
                    info!(team = %installation.team_id, user, "Slack gave a time zone jiff does not know; using UTC");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                info!(team = %installation.team_id, user, %error, "could not read a person's time zone; using UTC");
                None
            }
        }
    }

    /// `/bitbucket remind ...` in `channel_id`.
    pub async fn answer(
        &self,
        installation: &Installation,
        channel_id: &str,
        user_id: &str,
        command: &RemindCommand,
    ) -> Message {
        let team = installation.team_id.as_str();
        let sorry = |error: StoreError| {
            warn!(team, channel = channel_id, %error, "could not read or store a review reminder");
            Message::text(
                "Sorry, something went wrong with this channel's review reminder. The error was logged.",
            )
        };
        if channel_id.starts_with('D') {
            return Message::text(
                "Review reminders are for channels: run `/bitbucket remind` in the channel that should get them. \
                 For your own morning list, turn on the digest with `/bitbucket notify on digest`.",
            );
        }
        let now = self.clock.now();
        match command {
            RemindCommand::List => match self.store.reminders.channel(team, channel_id) {
                Ok(Some(reminder)) => Message::text(format!(
                    "This channel's review reminder: {}, set by <@{}>. The next one: {}.",
                    reminder.schedule.describe(),
                    reminder.set_by,
                    next_local(&reminder.schedule, now)
                )),
                Ok(None) => Message::text(
                    "This channel has no review reminder. Set one with `/bitbucket remind [at HH:MM] [weekdays|daily] [time zone]`.",
                ),
                Err(error) => sorry(error),
            },
            RemindCommand::Off => match self.store.reminders.remove_channel(team, channel_id).await
            {
                Ok(Some(previous)) => {
                    info!(
                        team,
                        channel = channel_id,
                        user = user_id,
                        "review reminder turned off"
                    );
                    Message::text(format!(
                        "Review reminders for this channel are off (it was {}).",
                        previous.schedule.describe()
                    ))
                }
                Ok(None) => Message::text("This channel had no review reminder; nothing changed."),
                Err(error) => sorry(error),
            },
            RemindCommand::Set { at, days, zone } => {
                let zone = match zone {
                    Some(zone) => zone.clone(),
                    None => self.zone_of(installation, user_id).await,
                };
                let (hour, minute) = at.unwrap_or((DEFAULT_HOUR, DEFAULT_MINUTE));
                let schedule = Schedule {
                    hour,
                    minute,
                    days: days.unwrap_or(Days::Weekdays),
                    zone,
                };
                let reminder = ChannelReminder {
                    team_id: team.to_string(),
                    channel_id: channel_id.to_string(),
                    schedule: schedule.clone(),
                    set_by: user_id.to_string(),
                    set_at: now,
                    last_slot: now,
                };
                let previous = match self.store.reminders.set_channel(&reminder).await {
                    Ok(previous) => previous,
                    Err(error) => return sorry(error),
                };
                self.signal.wake();
                info!(team, channel = channel_id, user = user_id, schedule = %schedule.describe(), "review reminder set");
                let mut reply = format!(
                    "Review reminders for this channel: {}. The first one: {}.",
                    schedule.describe(),
                    next_local(&schedule, now)
                );
                if let Some(previous) = previous {
                    reply.push_str(&format!(
                        " This replaces the previous reminder ({}).",
                        previous.schedule.describe()
                    ));
                }
                let active = self
                    .store
                    .subscriptions
                    .list_channel(team, channel_id)
                    .map(|subscriptions| subscriptions.iter().any(|s| s.paused.is_none()))
                    .unwrap_or(true);
                if !active {
                    reply.push_str(
                        " This channel has no active subscription yet: nothing is posted until it subscribes to repositories with `/bitbucket subscribe`.",
                    );
                }
                Message::text(reply)
            }
        }
    }
}

fn next_local(schedule: &Schedule, now: Timestamp) -> String {
    schedule
        .next_slot(now)
        .map_or_else(|| "unknown".to_string(), |slot| schedule.local(slot))
}

/// The outbox row of a reminder or digest for `to` (a channel, or a person's DMs).
fn delivery(team: &str, to: &str, slot: Timestamp, what: &str, message: Message) -> NewDelivery {
    NewDelivery {
        team_id: team.to_string(),
        channel_id: to.to_string(),
        activity_id: format!("{what}:{to}:{}", slot.as_second()),
        notification: Notification {
            message,
            thread_key: None,
            parent_update: None,
        },
    }
}
