//! The permission-upgrade driver: feeds each installation's campaign
//! (`upgrade::campaign::step`) with what happens (startup, scope changes, the clock,
//! clicks) and executes the effects it returns: DMs to admins, edits of earlier DMs,
//! holding and releasing a workspace's channel notifications, ephemeral answers.
//!
//! The only code that executes campaign effects. The new state is saved *before* the
//! effects run, so a restart (or a crash) resends nothing; a failed DM is logged, not
//! retried (the next reminder follows at the interval), except after a 429, which is
//! waited out once. Steps are serialized by one lock, so a click and a tick never
//! interleave. The task sleeps until the earliest `next_wake` across installations, or
//! until [`UpgradeSignal`] rings (a scope change, or a test that moved its manual clock).
//!
//! Never decides what to send or when (that is `upgrade::campaign`), never posts a
//! channel notification itself (it holds and releases them in the store, and the
//! delivery loop posts), and never logs a token.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::{Secret, UpgradeConfig};
use crate::message::Message;
use crate::notify::Notification;
use crate::slack::web::{SlackError, SlackWeb};
use crate::store::{InstallSource, Installation, NewDelivery, Store};
use crate::upgrade::campaign::{
    self, CampaignEvent, CampaignState, Effect, InstallMode, PermissionsAnswer,
};
use crate::upgrade::{self, messages};

/// The longest the driver sleeps without looking again, so that a changed wall clock
/// (or a missed signal) is noticed within the hour.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Rings the driver: "these workspaces' scopes were just read" (install, reinstall,
/// re-check), or simply "look again now". Cheap to clone; no ring is lost. Each ring is
/// numbered, and the driver publishes the number of the last ring it has fully handled,
/// so a caller can wait until the driver has acted on its ring ([`Self::settled`]).
#[derive(Clone)]
pub struct UpgradeSignal {
    inner: Arc<SignalInner>,
}

struct SignalInner {
    teams: Mutex<BTreeSet<String>>,
    notify: Notify,
    /// The number of the latest ring.
    rung: AtomicU64,
    /// The number of the latest ring whose pass has finished.
    handled: tokio::sync::watch::Sender<u64>,
}

impl Default for UpgradeSignal {
    fn default() -> Self {
        UpgradeSignal {
            inner: Arc::new(SignalInner {
                teams: Mutex::new(BTreeSet::new()),
                notify: Notify::new(),
                rung: AtomicU64::new(0),
                handled: tokio::sync::watch::Sender::new(0),
            }),
        }
    }
}

impl std::fmt::Debug for UpgradeSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSignal")
    }
}

impl UpgradeSignal {
    /// The installation of `team_id` was written with freshly read scopes.
    pub fn scopes_changed(&self, team_id: &str) -> u64 {
        self.teams().insert(team_id.to_string());
        self.ring()
    }

    /// Look at every campaign's wake time again (the clock may have moved). Returns the
    /// ring's number, for [`Self::settled`].
    pub fn wake(&self) -> u64 {
        self.ring()
    }

    /// Waits until the driver has finished a pass that began after ring `number` (it
    /// never returns if the driver has stopped).
    pub async fn settled(&self, number: u64) {
        let mut handled = self.inner.handled.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = handled.wait_for(|handled| *handled >= number).await;
    }

    fn ring(&self) -> u64 {
        let number = self.inner.rung.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.notify.notify_one();
        number
    }

    /// Starts a pass: the rings it will have handled, and the teams to refresh.
    fn begin_pass(&self) -> (u64, BTreeSet<String>) {
        let number = self.inner.rung.load(Ordering::SeqCst);
        (number, std::mem::take(&mut *self.teams()))
    }

    fn end_pass(&self, number: u64) {
        self.inner.handled.send_if_modified(|handled| {
            let moved = number > *handled;
            *handled = (*handled).max(number);
            moved
        });
    }

    fn teams(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.inner
            .teams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where an ephemeral answer goes.
#[derive(Debug, Clone)]
pub enum AnswerTo {
    /// An interaction's `response_url`.
    ResponseUrl(String),
    /// chat.postEphemeral in a channel.
    Channel(String),
}

/// The campaigns of every installation: shared by the driver task and the handlers.
#[derive(Clone)]
pub struct Campaigns {
    pub store: Store,
    pub web: SlackWeb,
    pub clock: Arc<dyn Clock>,
    pub config: UpgradeConfig,
    /// `{http.public_url}` without its trailing slash.
    pub public_url: String,
    /// Rung after held notifications are released as digests.
    pub delivery_wake: Arc<Notify>,
    step_lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Campaigns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Campaigns")
    }
}

impl Campaigns {
    pub fn new(
        store: Store,
        web: SlackWeb,
        clock: Arc<dyn Clock>,
        config: UpgradeConfig,
        public_url: &url::Url,
        delivery_wake: Arc<Notify>,
    ) -> Self {
        Campaigns {
            store,
            web,
            clock,
            config,
            public_url: public_url.as_str().trim_end_matches('/').to_string(),
            delivery_wake,
            step_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Runs the driver until `stop`.
    pub async fn run(self, signal: UpgradeSignal, stop: CancellationToken) {
        match self.store.installations.list() {
            Ok(installations) => {
                for installation in installations.iter().filter(|i| i.is_active()) {
                    self.refresh(installation).await;
                }
            }
            Err(error) => warn!(%error, "cannot list installations for the upgrade campaigns"),
        }
        match self.store.campaigns.list() {
            Ok(campaigns) => {
                let running = campaigns
                    .iter()
                    .filter(|(_, state)| state.phase.is_running())
                    .count();
                info!(running, "permission-upgrade campaigns checked at startup");
            }
            Err(error) => warn!(%error, "cannot read the upgrade campaigns"),
        }
        loop {
            let (pass, teams) = signal.begin_pass();
            for team in teams {
                match self.store.installations.get(&team) {
                    Ok(Some(installation)) if installation.is_active() => {
                        self.refresh(&installation).await
                    }
                    Ok(_) => debug!(team = %team, "scope change for an inactive installation"),
                    Err(error) => warn!(%error, team = %team, "cannot read the installation"),
                }
            }
            let next = self.tick_due().await;
            signal.end_pass(pass);
            let wait = next.map_or(MAX_SLEEP, |at| {
                let until = at.duration_since(self.clock.now());
                Duration::try_from(until).unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = signal.inner.notify.notified() => {}
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
            }
        }
    }

    /// Re-reads the admins and feeds them and the installation's scopes to its campaign,
    /// in one step (no reader ever sees the admins without the scopes).
    pub async fn refresh(&self, installation: &Installation) {
        let admins = self.resolve_admins(installation).await;
        let granted = installation.scopes.clone();
        let scopes = match installation.source {
            InstallSource::OAuth => CampaignEvent::OAuthCompleted { granted },
            InstallSource::ConfiguredToken => CampaignEvent::ScopesChecked { granted },
        };
        self.feed(
            installation,
            vec![CampaignEvent::AdminsKnown { admins }, scopes],
            None,
        )
        .await;
    }

    /// Ticks every campaign that is due (with its admins looked up again); returns the
    /// earliest wake time after that.
    async fn tick_due(&self) -> Option<Timestamp> {
        let campaigns = match self.store.campaigns.list() {
            Ok(campaigns) => campaigns,
            Err(error) => {
                warn!(%error, "cannot read the upgrade campaigns");
                return None;
            }
        };
        let now = self.clock.now();
        let mut earliest: Option<Timestamp> = None;
        for (team, state) in campaigns {
            let Some(wake) = state.next_wake else {
                continue;
            };
            let installation = match self.store.installations.get(&team) {
                Ok(Some(installation)) if installation.is_active() => installation,
                _ => continue,
            };
            let wake = if wake <= now {
                // The admins are looked up again before anything due is sent, so that
                // a new admin is told and a former one is not.
                let admins = self.resolve_admins(&installation).await;
                let events = vec![CampaignEvent::AdminsKnown { admins }, CampaignEvent::Tick];
                match self.feed(&installation, events, None).await {
                    Some(state) => state.next_wake,
                    None => None,
                }
            } else {
                Some(wake)
            };
            if let Some(wake) = wake {
                earliest = Some(earliest.map_or(wake, |e| e.min(wake)));
            }
        }
        earliest
    }

    /// A click on **Update permissions** by `user_id`: answered ephemerally.
    pub async fn clicked(&self, installation: &Installation, user_id: &str, answer_to: AnswerTo) {
        let is_admin = self.is_configured_admin(installation, user_id);
        let event = CampaignEvent::ButtonClicked {
            user_id: user_id.to_string(),
            is_admin,
        };
        self.feed(installation, vec![event], Some(&answer_to)).await;
    }

    /// `user_id` was refused `/bitbucket login`: admins whose reminder is due are nudged.
    pub async fn login_refused(&self, installation: &Installation, user_id: &str) {
        let event = CampaignEvent::LoginRefused {
            user_id: user_id.to_string(),
        };
        self.feed(installation, vec![event], None).await;
    }

    /// What `/bitbucket upgrade` shows `user_id`: the same answer as a click.
    pub fn answer(&self, installation: &Installation, user_id: &str) -> Message {
        let state = self.current_state(installation);
        let PermissionsAnswer {
            message,
            needs_install_url,
        } = campaign::permissions_answer(
            &state,
            user_id,
            self.is_configured_admin(installation, user_id),
        );
        self.finish_answer(installation, message, needs_install_url)
    }

    /// The campaign as it stands for the installation's scopes now: the stored one, or
    /// (before the driver saw the installation, its newest scopes or the clock's latest
    /// date) what it would be. Nothing is saved or sent: the driver does that.
    pub fn current_state(&self, installation: &Installation) -> CampaignState {
        let now = self.clock.now();
        let stored = match self.store.campaigns.get(&installation.team_id) {
            Ok(Some(state)) => state,
            _ => {
                return campaign::unrecorded(
                    mode_of(installation),
                    self.known_admins(installation, Vec::new()),
                    &installation.scopes,
                    &self.config.schedule,
                    now,
                );
            }
        };
        let event = if stored.missing_scopes == missing_scopes(installation) {
            CampaignEvent::Tick
        } else {
            CampaignEvent::ScopesChecked {
                granted: installation.scopes.clone(),
            }
        };
        campaign::step(&stored, &event, &self.config.schedule, now).0
    }

    /// The admins to name in refusals: the campaign's, else the configured ones and the
    /// installer.
    pub fn admins(&self, installation: &Installation) -> Vec<String> {
        match self.store.campaigns.get(&installation.team_id) {
            Ok(Some(state)) if !state.admins.is_empty() => state.admins,
            _ => self.known_admins(installation, Vec::new()),
        }
    }

    fn is_configured_admin(&self, installation: &Installation, user_id: &str) -> bool {
        self.config.admins.iter().any(|admin| admin == user_id)
            || installation.installer_user_id.as_deref() == Some(user_id)
    }

    /// Workspace admins and owners (when `users:read` is granted), the installer, and
    /// `upgrade.admins`, without duplicates.
    async fn resolve_admins(&self, installation: &Installation) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(token) = &installation.bot_token {
            if installation
                .scopes
                .iter()
                .any(|scope| scope == "users:read")
            {
                match self.web.workspace_admins(token).await {
                    Ok(admins) => found = admins,
                    Err(error) => {
                        warn!(%error, team = %installation.team_id, "cannot list the workspace's admins; using the installer and upgrade.admins")
                    }
                }
            }
        }
        self.known_admins(installation, found)
    }

    fn known_admins(&self, installation: &Installation, mut admins: Vec<String>) -> Vec<String> {
        let extra = installation
            .installer_user_id
            .iter()
            .chain(self.config.admins.iter());
        for admin in extra {
            if !admins.contains(admin) {
                admins.push(admin.clone());
            }
        }
        admins
    }

    /// One step: load, apply `events` in order, save, then execute the effects; the
    /// `MessageSent`s they produce are applied the same way. Returns the saved state.
    /// The lock covers load-apply-save only, never a call to Slack: one workspace's slow
    /// DM does not hold up another's campaign.
    async fn feed(
        &self,
        installation: &Installation,
        events: Vec<CampaignEvent>,
        answer_to: Option<&AnswerTo>,
    ) -> Option<CampaignState> {
        let team = installation.team_id.as_str();
        let mut pending = events;
        let mut latest = None;
        while !pending.is_empty() {
            let stepping = self.step_lock.lock().await;
            let state = match self.store.campaigns.get(team) {
                Ok(Some(state)) => state,
                Ok(None) => CampaignState::new(mode_of(installation)),
                Err(error) => {
                    warn!(%error, team, "cannot read the upgrade campaign");
                    return None;
                }
            };
            let now = self.clock.now();
            let mut next = state.clone();
            let mut effects = Vec::new();
            for event in std::mem::take(&mut pending) {
                let (stepped, more) = campaign::step(&next, &event, &self.config.schedule, now);
                next = stepped;
                effects.extend(more);
            }
            if next != state {
                if let Err(error) = self.store.campaigns.put(team, &next).await {
                    warn!(%error, team, "cannot save the upgrade campaign; its effects are skipped");
                    return None;
                }
                if next.phase != state.phase {
                    info!(
                        team,
                        from = state.phase.name(),
                        to = next.phase.name(),
                        "permission-upgrade phase changed"
                    );
                }
            }
            drop(stepping);
            for effect in effects {
                if let Some(sent) = self.execute(installation, effect, answer_to).await {
                    pending.push(sent);
                }
            }
            latest = Some(next);
        }
        if let Some(state) = &latest {
            self.reconcile_hold(installation, state).await;
        }
        latest
    }

    /// Executes one effect; a posted DM comes back as the `MessageSent` to feed.
    async fn execute(
        &self,
        installation: &Installation,
        effect: Effect,
        answer_to: Option<&AnswerTo>,
    ) -> Option<CampaignEvent> {
        let team = installation.team_id.as_str();
        let token = installation.bot_token.as_ref()?;
        match effect {
            Effect::SendDm {
                admin,
                message_id,
                message,
            } => match once_more_if_rate_limited(|| {
                self.web.post_direct_message(token, &admin, &message)
            })
            .await
            {
                Ok((channel, ts)) => {
                    info!(team, admin = %admin, kind = %message.text, "permission-upgrade message sent");
                    return Some(CampaignEvent::MessageSent {
                        admin,
                        message_id,
                        channel,
                        ts,
                    });
                }
                Err(error) => {
                    warn!(%error, team, admin = %admin, "could not send a permission-upgrade message; the next reminder follows at the interval")
                }
            },
            Effect::UpdateMessage {
                admin,
                message_ref,
                message,
                ..
            } => {
                let edited = once_more_if_rate_limited(|| {
                    self.web
                        .update_message(token, &message_ref.channel, &message_ref.ts, &message)
                })
                .await;
                if let Err(error) = edited {
                    warn!(%error, team, admin = %admin, "could not mark an earlier permission-upgrade message as done");
                }
            }
            Effect::HoldNotifications => match self.store.campaigns.hold(team).await {
                Ok(()) => info!(team, "deadline passed: channel notifications are held"),
                Err(error) => warn!(%error, team, "could not hold the channel notifications"),
            },
            Effect::ReleaseNotifications { digest } => self.release(team, digest).await,
            Effect::WakeAt(_) => {}
            Effect::Ephemeral {
                user_id,
                message,
                needs_install_url,
            } => {
                let reply = self.finish_answer(installation, message, needs_install_url);
                self.answer_ephemerally(Some(token), &user_id, &reply, answer_to)
                    .await;
            }
        }
        None
    }

    fn finish_answer(
        &self,
        installation: &Installation,
        reply: Message,
        needs_url: bool,
    ) -> Message {
        if !needs_url {
            return reply;
        }
        messages::with_install_url(reply, &self.install_url(&installation.team_id))
    }

    /// `{http.public_url}/slack/install?team=T`: the OAuth flow bound to the workspace.
    pub fn install_url(&self, team_id: &str) -> String {
        format!("{}/slack/install?team={team_id}", self.public_url)
    }

    /// Answers a click, visible only to `user_id`: through the interaction's response_url,
    /// else with chat.postEphemeral (which needs the bot token).
    pub async fn answer_ephemerally(
        &self,
        token: Option<&Secret<String>>,
        user_id: &str,
        reply: &Message,
        answer_to: Option<&AnswerTo>,
    ) {
        let result = match (answer_to, token) {
            (Some(AnswerTo::ResponseUrl(url)), _) => self.web.respond(url, reply).await,
            (Some(AnswerTo::Channel(channel)), Some(token)) => {
                self.web
                    .post_ephemeral(token, channel, user_id, reply)
                    .await
            }
            (Some(AnswerTo::Channel(_)), None) | (None, _) => return,
        };
        if let Err(error) = result {
            warn!(%error, user = user_id, "could not answer a permission-upgrade click");
        }
    }

    /// Replaces the held deliveries with one digest per channel and lifts the hold.
    async fn release(&self, team: &str, digest: bool) {
        let held = match self.store.campaigns.held_deliveries(team) {
            Ok(held) => held,
            Err(error) => {
                warn!(%error, team, "cannot read the held notifications");
                return;
            }
        };
        let (replaced, digests) = if digest {
            let mut by_channel: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut replaced = Vec::new();
            for delivery in &held {
                replaced.push(delivery.id);
                by_channel
                    .entry(delivery.channel_id.clone())
                    .or_default()
                    .push(delivery.notification.message.text.clone());
            }
            let now = self.clock.now().as_second();
            let digests = by_channel
                .into_iter()
                .map(|(channel, fallbacks)| NewDelivery {
                    team_id: team.to_string(),
                    activity_id: format!("upgrade-digest:{team}:{channel}:{now}"),
                    channel_id: channel,
                    notification: Notification {
                        message: messages::held_digest(&fallbacks),
                        thread_key: None,
                        parent_update: None,
                    },
                })
                .collect();
            (replaced, digests)
        } else {
            (Vec::new(), Vec::new())
        };
        match self
            .store
            .campaigns
            .release_with_digests(team, &replaced, digests, self.clock.now())
            .await
        {
            Ok(digests) => {
                info!(
                    team,
                    held = replaced.len(),
                    digests,
                    "permissions updated: held notifications released"
                );
                self.delivery_wake.notify_one();
            }
            Err(error) => warn!(%error, team, "could not release the held notifications"),
        }
    }

    /// The hold in the store follows the saved state, also after a crash between saving
    /// a state and executing its hold or release.
    async fn reconcile_hold(&self, installation: &Installation, state: &CampaignState) {
        let team = installation.team_id.as_str();
        match self.store.campaigns.is_held(team) {
            Ok(true) if !state.held_notifications => self.release(team, true).await,
            Ok(false) if state.held_notifications => {
                if let Err(error) = self.store.campaigns.hold(team).await {
                    warn!(%error, team, "could not hold the channel notifications");
                }
            }
            Ok(_) => {}
            Err(error) => warn!(%error, team, "cannot read whether notifications are held"),
        }
    }
}

/// The longest a campaign call waits out Slack's `Retry-After` before its one retry.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// Runs `call`, and once more after Slack's `Retry-After` when it was rate limited (a 429
/// means nothing was posted, so the retry cannot double a message). Other failures are
/// not retried: after a timeout the message may have been posted.
async fn once_more_if_rate_limited<T, F, Fut>(call: F) -> Result<T, SlackError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, SlackError>>,
{
    match call().await {
        Err(SlackError::RateLimited { retry_after, .. }) => {
            let wait = retry_after
                .unwrap_or(Duration::from_secs(1))
                .min(MAX_RATE_LIMIT_WAIT);
            debug!(
                ?wait,
                "Slack rate-limited a campaign message; trying once more"
            );
            tokio::time::sleep(wait).await;
            call().await
        }
        other => other,
    }
}

fn mode_of(installation: &Installation) -> InstallMode {
    match installation.source {
        InstallSource::OAuth => InstallMode::OAuth,
        InstallSource::ConfiguredToken => InstallMode::ConfiguredToken,
    }
}

/// The permission level's missing scopes, as strings, for **Check again**.
pub fn missing_scopes(installation: &Installation) -> Vec<String> {
    upgrade::permission_level(&installation.scopes)
        .missing()
        .iter()
        .map(|scope| scope.to_string())
        .collect()
}

/// One installation's campaign, for `bitbucket-slack upgrade-status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpgradeRow {
    pub team_id: String,
    pub team_name: String,
    /// The campaign phase (before the driver saw the installation: by its scopes and the
    /// dates).
    pub phase: String,
    pub missing_scopes: Vec<String>,
    pub admins: Vec<String>,
    pub last_reminder_at: Option<Timestamp>,
    pub next_reminder_at: Option<Timestamp>,
    pub notifications_held: bool,
}

/// Every installation's campaign, from the store (the daemon's and the stopped CLI's).
/// An installation the driver has not seen yet shows the phase its scopes and the dates
/// give at `now`.
pub fn upgrade_rows(
    store: &Store,
    schedule: &campaign::CampaignSchedule,
    now: Timestamp,
) -> Result<Vec<UpgradeRow>, crate::store::StoreError> {
    let mut rows = Vec::new();
    for installation in store.installations.list()? {
        let state = match store.campaigns.get(&installation.team_id)? {
            Some(state) => state,
            None => campaign::unrecorded(
                mode_of(&installation),
                Vec::new(),
                &installation.scopes,
                schedule,
                now,
            ),
        };
        rows.push(UpgradeRow {
            team_id: installation.team_id.clone(),
            team_name: installation.team_name.clone(),
            phase: state.phase.name().into(),
            missing_scopes: state.missing_scopes.clone(),
            admins: state.admins.clone(),
            last_reminder_at: campaign::last_reminder_at(&state),
            next_reminder_at: campaign::next_reminder_at(&state, schedule),
            notifications_held: store.campaigns.is_held(&installation.team_id)?,
        });
    }
    Ok(rows)
}
