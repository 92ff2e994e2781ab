//! The permission-upgrade campaign of one installation, as a pure state machine:
//! [`step`]`(state, event, schedule, now) -> (next state, effects)`.
//!
//! Owns the phases (NotNeeded → Announced → Available → Overdue → Upgraded), which admin
//! got which message and when, whether notifications are held and when to wake up next.
//! Gating (who may log in, which commands answer) is not here: [`super::gate`] decides it
//! from the scopes and the schedule. It never does I/O, never reads the clock (`now` is
//! an argument) and never decides how a message looks in Slack: `app::upgrade_driver`
//! executes the [`Effect`]s and [`super::messages`] holds the words.
//!
//! Nothing is sent twice because the state records a message the moment the effect that
//! sends it is returned. The driver must therefore persist the returned state *before*
//! executing the effects (at most once: a crash in between loses that one DM, and the
//! next reminder follows at the interval), then feed [`CampaignEvent::MessageSent`] back
//! so the message can be edited once the upgrade is done.
//!
//! Decisions where the issue is silent:
//! - With no `available_at` the update is available at once; an announcement is only
//!   made when `available_at` is set, at `announce_at` or else 14 days before.
//! - Phases only move forward while the installation is outdated: moving a date later
//!   does not take a workspace back, and events replayed with older times change nothing.
//! - Reminders are spaced from the last campaign DM to that admin (of any kind), and only
//!   from Available on; the phase messages (announcement, availability, deadline) are
//!   sent once per admin per campaign, to admins who join later too.
//! - Upgraded is final except for two things: a message whose `MessageSent` arrives late
//!   is still edited, and a click on an old button is answered. A later scope check that
//!   is outdated again (a newer version needs more) starts a new campaign, placed by the
//!   schedule as it is then.
//! - A "reinstall" is not an event of its own: through OAuth it is `OAuthCompleted`; with
//!   a configured token it is seen by the `ScopesChecked` that follows auth.test.
//! - Scope checks and admin lists are observations: one older than the last applied (an
//!   event delivered again after a restart) is ignored, so a replay cannot reopen a
//!   finished campaign or DM a former admin.
//! - A refused login nudges the admins (a DM naming the user, with the button), but only
//!   those whose next reminder is due: the nudge takes that reminder's place, so campaign
//!   DMs are never closer than the interval, however many people try.
//! - New logins are refused from Available on, not while merely Announced: admins cannot
//!   act yet then. Clicks are answered in every phase; admins see the flow whenever
//!   scopes are missing, which is what `/bitbucket upgrade` shows.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::upgrade::{messages, permission_level};

/// When nothing else says, the announcement comes this long before availability.
pub const ANNOUNCE_LEAD: SignedDuration = SignedDuration::from_hours(14 * 24);
/// The default `upgrade.reminder_interval`.
pub const DEFAULT_REMINDER_INTERVAL: SignedDuration = SignedDuration::from_hours(24);
/// Reminders are never closer than this, whatever the configuration says, so that a zero
/// or negative interval cannot make the driver spin.
pub const MIN_REMINDER_INTERVAL: SignedDuration = SignedDuration::from_secs(60);

/// The campaign's dates, from config `[upgrade]`. The target is always the scope table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSchedule {
    pub announce_at: Option<Timestamp>,
    pub available_at: Option<Timestamp>,
    pub deadline: Option<Timestamp>,
    pub reminder_interval: SignedDuration,
}

impl Default for CampaignSchedule {
    /// No dates: an outdated installation is in Available at once, with no deadline.
    fn default() -> Self {
        CampaignSchedule {
            announce_at: None,
            available_at: None,
            deadline: None,
            reminder_interval: DEFAULT_REMINDER_INTERVAL,
        }
    }
}

impl CampaignSchedule {
    /// When the announcement is due: only when availability is dated, at `announce_at`
    /// (never after availability) or else [`ANNOUNCE_LEAD`] before it.
    pub fn announce_at(&self) -> Option<Timestamp> {
        let available_at = self.available_at?;
        let announce_at = match self.announce_at {
            Some(at) => at,
            None => available_at.checked_sub(ANNOUNCE_LEAD).ok()?,
        };
        Some(announce_at.min(available_at))
    }

    /// The phase an outdated installation is in at `now`, by the dates alone.
    pub fn phase_at(&self, now: Timestamp) -> Phase {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            Phase::Overdue
        } else if self.available_at.is_none_or(|at| now >= at) {
            Phase::Available
        } else if self.announce_at().is_some_and(|at| now >= at) {
            Phase::Announced
        } else {
            Phase::NotNeeded
        }
    }

    /// The configured interval, but never below [`MIN_REMINDER_INTERVAL`].
    pub fn effective_reminder_interval(&self) -> SignedDuration {
        self.reminder_interval.max(MIN_REMINDER_INTERVAL)
    }

    /// The dates at which an outdated installation changes phase, earliest first.
    fn boundaries(&self) -> Vec<(Timestamp, Phase)> {
        let mut dates: Vec<(Timestamp, Phase)> = [
            self.announce_at().map(|at| (at, Phase::Announced)),
            self.available_at.map(|at| (at, Phase::Available)),
            self.deadline.map(|at| (at, Phase::Overdue)),
        ]
        .into_iter()
        .flatten()
        .collect();
        dates.sort();
        dates
    }
}

/// Where an installation is in the campaign. The order is the order of the story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing to do, or outdated but too early to say so.
    NotNeeded,
    /// Admins were told an update is coming.
    Announced,
    /// Admins can update now; new users cannot log in until they do.
    Available,
    /// The deadline passed: commands are refused and notifications held.
    Overdue,
    /// The installation has every scope again; the campaign is over.
    Upgraded,
}

impl Phase {
    /// The name used by `/bitbucket status` and `upgrade-status --json`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::NotNeeded => "not_needed",
            Phase::Announced => "announced",
            Phase::Available => "available",
            Phase::Overdue => "overdue",
            Phase::Upgraded => "upgraded",
        }
    }

    /// The message every admin gets once on entering this phase.
    fn entry_message(self) -> Option<MessageKind> {
        match self {
            Phase::Announced => Some(MessageKind::Announcement),
            Phase::Available => Some(MessageKind::UpdateAvailable),
            Phase::Overdue => Some(MessageKind::DeadlinePassed),
            Phase::NotNeeded | Phase::Upgraded => None,
        }
    }

    fn has_reminders(self) -> bool {
        matches!(self, Phase::Available | Phase::Overdue)
    }

    /// Whether a campaign is under way (announced, available or overdue).
    pub fn is_running(self) -> bool {
        matches!(self, Phase::Announced | Phase::Available | Phase::Overdue)
    }
}

/// How the installation got its token, which decides how an admin updates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallMode {
    /// Installed through our OAuth flow: **Allow** leads to Slack's consent screen.
    OAuth,
    /// A single workspace's configured bot token: the app is reinstalled from the
    /// manifest, and **Check again** re-reads the scopes.
    ConfiguredToken,
}

/// Which campaign message a DM was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Announcement,
    UpdateAvailable,
    Reminder,
    DeadlinePassed,
    /// Someone could not log in: sent instead of the next reminder, never closer.
    LoginNudge,
}

/// Where Slack put a message, so it can be edited with chat.update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
}

/// One campaign DM, as recorded when its [`Effect::SendDm`] was returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Unique within the installation; the driver hands it back in `MessageSent`.
    pub id: String,
    pub kind: MessageKind,
    /// The campaign it belongs to (see [`CampaignState::campaign`]).
    pub campaign: u32,
    pub sent_at: Timestamp,
    /// Filled in by `MessageSent`; without it the message cannot be edited.
    pub message_ref: Option<MessageRef>,
    /// Whether it was edited to say the app is up to date.
    pub updated: bool,
}

/// What one admin was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    pub messages: Vec<SentMessage>,
    /// The last campaign DM to this admin: reminders are spaced from it. Kept across
    /// campaigns.
    pub last_sent_at: Option<Timestamp>,
}

/// One installation's campaign, persisted as JSON by the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignState {
    pub phase: Phase,
    pub mode: InstallMode,
    /// How many campaigns have started; 0 before the first. Part of every message id.
    pub campaign: u32,
    /// Required scopes the installation lacks, as of the last scope check.
    pub missing_scopes: Vec<String>,
    /// When that check was made: an older one, delivered again after a restart, is stale.
    pub scopes_checked_at: Option<Timestamp>,
    /// The admins as last resolved by the driver, in the order given.
    pub admins: Vec<String>,
    /// When they were resolved: an older list, delivered again after a restart, is stale.
    pub admins_known_at: Option<Timestamp>,
    /// Per admin (Slack user id), including former admins whose messages may need an edit.
    pub sent: BTreeMap<String, AdminRecord>,
    pub held_notifications: bool,
    pub next_wake: Option<Timestamp>,
    pub upgraded_at: Option<Timestamp>,
}

impl CampaignState {
    /// A fresh installation. The driver then feeds `ScopesChecked` with its stored scopes
    /// and `AdminsKnown`; until then there is no campaign.
    pub fn new(mode: InstallMode) -> Self {
        CampaignState {
            phase: Phase::NotNeeded,
            mode,
            campaign: 0,
            missing_scopes: Vec::new(),
            scopes_checked_at: None,
            admins: Vec::new(),
            admins_known_at: None,
            sent: BTreeMap::new(),
            held_notifications: false,
            next_wake: None,
            upgraded_at: None,
        }
    }

    fn is_outdated(&self) -> bool {
        !self.missing_scopes.is_empty()
    }

    fn is_admin(&self, user_id: &str) -> bool {
        self.admins.iter().any(|admin| admin == user_id)
    }
}

/// Something that happened to the installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignEvent {
    /// The driver woke up (at `next_wake`, at startup, or on any schedule).
    Tick,
    /// The token's scopes were read (at startup, by auth.test, by **Check again**).
    ScopesChecked { granted: Vec<String> },
    /// An admin went through our OAuth flow (an upgrade or a reinstall).
    OAuthCompleted { granted: Vec<String> },
    /// Someone clicked **Update permissions** (or ran `/bitbucket upgrade`).
    ButtonClicked { user_id: String, is_admin: bool },
    /// `user_id` was refused `/bitbucket login` because the permissions are outdated:
    /// admins are nudged, each at most once per reminder interval.
    LoginRefused { user_id: String },
    /// The admins as resolved now: admins and owners, the installer, `upgrade.admins`.
    AdminsKnown { admins: Vec<String> },
    /// The driver posted the DM of an earlier [`Effect::SendDm`].
    MessageSent {
        admin: String,
        message_id: String,
        channel: String,
        ts: String,
    },
}

/// Something the driver must do. The driver is the only code that executes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open a DM with `admin`, post `message`, then feed back `MessageSent`.
    SendDm {
        admin: String,
        message_id: String,
        message: Message,
    },
    /// chat.update an earlier DM.
    UpdateMessage {
        admin: String,
        message_id: String,
        message_ref: MessageRef,
        message: Message,
    },
    /// Keep this workspace's channel notifications in the store instead of posting them.
    HoldNotifications,
    /// Deliver what was held (as one digest per channel when `digest`) and stop holding.
    ReleaseNotifications { digest: bool },
    /// Feed a `Tick` no later than this.
    WakeAt(Timestamp),
    /// Answer the user who clicked, visible only to them.
    Ephemeral {
        user_id: String,
        message: Message,
        /// The message's **Allow** button needs its url: the driver applies
        /// [`messages::with_install_url`] with `{http.public_url}/slack/install?team=T`.
        needs_install_url: bool,
    },
}

/// The answer to a click on **Update permissions** or to `/bitbucket upgrade`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionsAnswer {
    pub message: Message,
    /// See [`Effect::Ephemeral`].
    pub needs_install_url: bool,
}

/// Applies `event` at `now`. Pure and total: it never panics and never fails.
pub fn step(
    state: &CampaignState,
    event: &CampaignEvent,
    schedule: &CampaignSchedule,
    now: Timestamp,
) -> (CampaignState, Vec<Effect>) {
    let mut next = state.clone();
    let mut effects = Vec::new();
    match event {
        CampaignEvent::Tick => {}
        CampaignEvent::ScopesChecked { granted } => {
            apply_scopes(&mut next, granted, now, &mut effects);
        }
        CampaignEvent::OAuthCompleted { granted } => {
            next.mode = InstallMode::OAuth;
            apply_scopes(&mut next, granted, now, &mut effects);
        }
        CampaignEvent::ButtonClicked { user_id, is_admin } => {
            let answer = permissions_answer(&next, user_id, *is_admin);
            effects.push(Effect::Ephemeral {
                user_id: user_id.clone(),
                message: answer.message,
                needs_install_url: answer.needs_install_url,
            });
        }
        CampaignEvent::AdminsKnown { admins } => apply_admins(&mut next, admins, now),
        CampaignEvent::LoginRefused { .. } => {}
        CampaignEvent::MessageSent {
            admin,
            message_id,
            channel,
            ts,
        } => {
            let message_ref = MessageRef {
                channel: channel.clone(),
                ts: ts.clone(),
            };
            record_message_ref(&mut next, admin, message_id, message_ref, &mut effects);
        }
    }
    if let CampaignEvent::LoginRefused { user_id } = event {
        nudge_admins(&mut next, user_id, schedule, now, &mut effects);
    }
    if next.phase != Phase::Upgraded {
        advance(&mut next, schedule, now, &mut effects);
    }
    (next, effects)
}

/// Tells each admin whose reminder is due that `user_id` could not log in, in place of
/// that reminder (so the spacing between campaign DMs holds; [`advance`], which runs
/// next, then finds nothing due). Not when the dates are about to move the phase: the
/// phase's own message goes out instead.
fn nudge_admins(
    state: &mut CampaignState,
    user_id: &str,
    schedule: &CampaignSchedule,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    if !state.is_outdated() || !state.phase.has_reminders() || schedule.phase_at(now) > state.phase
    {
        return;
    }
    for admin in state.admins.clone() {
        if reminder_due_at(state, &admin, schedule).is_some_and(|due| now >= due) {
            let nudge = messages::login_nudge(user_id, schedule.deadline);
            effects.push(record_send(
                state,
                &admin,
                MessageKind::LoginNudge,
                nudge,
                now,
            ));
        }
    }
}

/// The campaign of an installation the driver has not recorded yet, as it would stand at
/// `now` with these admins and scopes. Nothing is sent for it: the driver does that when
/// it records the installation.
pub fn unrecorded(
    mode: InstallMode,
    admins: Vec<String>,
    granted: &[String],
    schedule: &CampaignSchedule,
    now: Timestamp,
) -> CampaignState {
    let (state, _) = step(
        &CampaignState::new(mode),
        &CampaignEvent::AdminsKnown { admins },
        schedule,
        now,
    );
    let scopes = CampaignEvent::ScopesChecked {
        granted: granted.to_vec(),
    };
    step(&state, &scopes, schedule, now).0
}

/// What to answer `user_id` about updating the permissions.
pub fn permissions_answer(
    state: &CampaignState,
    user_id: &str,
    is_admin: bool,
) -> PermissionsAnswer {
    if !state.is_outdated() {
        return PermissionsAnswer {
            message: messages::nothing_to_update(),
            needs_install_url: false,
        };
    }
    if !is_admin && !state.is_admin(user_id) {
        return PermissionsAnswer {
            message: messages::only_admins_can_update(&state.admins),
            needs_install_url: false,
        };
    }
    match state.mode {
        InstallMode::OAuth => PermissionsAnswer {
            message: messages::allow_through_slack(&state.missing_scopes),
            needs_install_url: true,
        },
        InstallMode::ConfiguredToken => PermissionsAnswer {
            message: messages::reinstall_from_manifest(&state.missing_scopes),
            needs_install_url: false,
        },
    }
}

/// The latest reminder (or other campaign DM) to any current admin.
pub fn last_reminder_at(state: &CampaignState) -> Option<Timestamp> {
    state
        .admins
        .iter()
        .filter_map(|admin| state.sent.get(admin)?.last_sent_at)
        .max()
}

/// When the next reminder is due, if reminders are running.
pub fn next_reminder_at(state: &CampaignState, schedule: &CampaignSchedule) -> Option<Timestamp> {
    if !state.phase.has_reminders() {
        return None;
    }
    state
        .admins
        .iter()
        .filter_map(|admin| reminder_due_at(state, admin, schedule))
        .min()
}

/// One paragraph for `/bitbucket status`, after its "Permission update:" label: the phase
/// and its dates (the status lists what is missing, with reasons, above it).
pub fn phase_summary(state: &CampaignState, schedule: &CampaignSchedule, now: Timestamp) -> String {
    match state.phase {
        Phase::NotNeeded if state.is_outdated() => match schedule.announce_at() {
            Some(at) => format!("needed; admins will be told on {}.", dated(at, now)),
            None => "needed.".into(),
        },
        Phase::NotNeeded => "none needed.".into(),
        Phase::Announced => format!(
            "announced; admins can update from {}.{}",
            schedule
                .available_at
                .map_or_else(|| "now".into(), |at| dated(at, now)),
            deadline_sentence(schedule, now)
        ),
        Phase::Available => format!(
            "available; an admin needs to click *Update permissions*. \
             Until then new users cannot log in.{}",
            deadline_sentence(schedule, now)
        ),
        Phase::Overdue => format!(
            "overdue{}; commands are refused and channel notifications are \
             held until an admin updates.",
            schedule
                .deadline
                .map_or_else(String::new, |at| format!(" since {}", dated(at, now)))
        ),
        Phase::Upgraded => match state.upgraded_at {
            Some(at) => format!("done on {}.", dated(at, now)),
            None => "done.".into(),
        },
    }
}

fn deadline_sentence(schedule: &CampaignSchedule, now: Timestamp) -> String {
    schedule.deadline.map_or_else(
        || " No deadline.".into(),
        |at| format!(" Deadline: {}.", dated(at, now)),
    )
}

/// A UTC date with how far it is from `now` in whole days, for status lines.
fn dated(at: Timestamp, now: Timestamp) -> String {
    let days = at.duration_since(now).as_hours() / 24;
    let relative = match days {
        0 => "today".to_string(),
        1 => "in 1 day".to_string(),
        -1 => "1 day ago".to_string(),
        days if days > 0 => format!("in {days} days"),
        days => format!("{} days ago", -days),
    };
    format!("{} ({relative})", messages::utc_date(at))
}

/// Replaces the admins, in order, without duplicates, unless the list is older than the
/// one already applied.
fn apply_admins(state: &mut CampaignState, admins: &[String], now: Timestamp) {
    if state.admins_known_at.is_some_and(|last| now < last) {
        return;
    }
    state.admins_known_at = Some(now);
    state.admins.clear();
    for admin in admins {
        if !admin.is_empty() && !state.admins.contains(admin) {
            state.admins.push(admin.clone());
        }
    }
}

/// Records the granted scopes; completes the upgrade, or starts over after one. A check
/// older than the last one applied is ignored, so replayed events cannot undo an upgrade.
fn apply_scopes(
    state: &mut CampaignState,
    granted: &[String],
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    if state.scopes_checked_at.is_some_and(|last| now < last) {
        return;
    }
    state.scopes_checked_at = Some(now);
    state.missing_scopes = permission_level(granted)
        .missing()
        .iter()
        .map(|scope| scope.to_string())
        .collect();
    if state.is_outdated() {
        if state.phase == Phase::Upgraded {
            reopen(state);
        }
    } else if state.phase.is_running() {
        complete_upgrade(state, now, effects);
    }
}

/// After an upgrade, the installation is outdated again: back to NotNeeded, from where
/// [`advance`] starts the next campaign. Messages still waiting for their edit are kept.
fn reopen(state: &mut CampaignState) {
    state.phase = Phase::NotNeeded;
    state.upgraded_at = None;
    for record in state.sent.values_mut() {
        record.messages.retain(|message| !message.updated);
    }
}

fn complete_upgrade(state: &mut CampaignState, now: Timestamp, effects: &mut Vec<Effect>) {
    state.phase = Phase::Upgraded;
    state.upgraded_at = Some(now);
    state.next_wake = None;
    if state.held_notifications {
        state.held_notifications = false;
        effects.push(Effect::ReleaseNotifications { digest: true });
    }
    for (admin, record) in &mut state.sent {
        for message in &mut record.messages {
            if let Some(effect) = edit_to_up_to_date(admin, message) {
                effects.push(effect);
            }
        }
    }
}

/// The edit of a posted, not yet edited message; marks it edited.
fn edit_to_up_to_date(admin: &str, message: &mut SentMessage) -> Option<Effect> {
    if message.updated {
        return None;
    }
    let message_ref = message.message_ref.clone()?;
    message.updated = true;
    Some(Effect::UpdateMessage {
        admin: admin.to_string(),
        message_id: message.id.clone(),
        message_ref,
        message: messages::up_to_date(),
    })
}

/// Stores where a DM landed. A message of a campaign that already ended in an upgrade
/// (its `MessageSent` came late) is edited at once.
fn record_message_ref(
    state: &mut CampaignState,
    admin: &str,
    message_id: &str,
    message_ref: MessageRef,
    effects: &mut Vec<Effect>,
) {
    let current_campaign_done = state.phase == Phase::Upgraded;
    let current_campaign = state.campaign;
    let Some(message) = state.sent.get_mut(admin).and_then(|record| {
        record
            .messages
            .iter_mut()
            .find(|message| message.id == message_id)
    }) else {
        return;
    };
    if message.message_ref.is_some() {
        return;
    }
    message.message_ref = Some(message_ref);
    if message.campaign < current_campaign || current_campaign_done {
        effects.extend(edit_to_up_to_date(admin, message));
    }
}

/// Moves the phase forward by the dates, holds notifications from the deadline, sends
/// what is due to each admin, and sets the next wake-up.
fn advance(
    state: &mut CampaignState,
    schedule: &CampaignSchedule,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    if state.is_outdated() {
        let target = schedule.phase_at(now);
        if target > state.phase {
            if state.phase == Phase::NotNeeded {
                state.campaign = state.campaign.saturating_add(1);
            }
            state.phase = target;
        }
        if state.phase == Phase::Overdue && !state.held_notifications {
            state.held_notifications = true;
            effects.push(Effect::HoldNotifications);
        }
        for admin in state.admins.clone() {
            if let Some(kind) = due_message(state, &admin, schedule, now) {
                effects.push(send(state, &admin, kind, schedule, now));
            }
        }
    }
    state.next_wake = next_wake(state, schedule, now);
    if let Some(at) = state.next_wake {
        effects.push(Effect::WakeAt(at));
    }
}

/// The DM due to `admin` now: the phase's own message once, then reminders.
fn due_message(
    state: &CampaignState,
    admin: &str,
    schedule: &CampaignSchedule,
    now: Timestamp,
) -> Option<MessageKind> {
    let entry = state.phase.entry_message()?;
    let already_told = state.sent.get(admin).is_some_and(|record| {
        record
            .messages
            .iter()
            .any(|message| message.campaign == state.campaign && message.kind == entry)
    });
    if !already_told {
        return Some(entry);
    }
    let reminder_due = state.phase.has_reminders()
        && reminder_due_at(state, admin, schedule).is_none_or(|due| now >= due);
    reminder_due.then_some(MessageKind::Reminder)
}

/// When `admin` may next get a reminder: one interval after their last DM.
fn reminder_due_at(
    state: &CampaignState,
    admin: &str,
    schedule: &CampaignSchedule,
) -> Option<Timestamp> {
    let last = state.sent.get(admin)?.last_sent_at?;
    Some(
        last.checked_add(schedule.effective_reminder_interval())
            .unwrap_or(Timestamp::MAX),
    )
}

/// Records the DM and returns the effect that sends it.
fn send(
    state: &mut CampaignState,
    admin: &str,
    kind: MessageKind,
    schedule: &CampaignSchedule,
    now: Timestamp,
) -> Effect {
    let message = render(state, kind, schedule);
    record_send(state, admin, kind, message, now)
}

/// Records `message` as sent to `admin` now and returns the effect that sends it.
fn record_send(
    state: &mut CampaignState,
    admin: &str,
    kind: MessageKind,
    message: Message,
    now: Timestamp,
) -> Effect {
    let campaign = state.campaign;
    let record = state.sent.entry(admin.to_string()).or_default();
    let sequence = record
        .messages
        .iter()
        .filter(|message| message.campaign == campaign)
        .count();
    let message_id = format!("c{campaign}-{admin}-{sequence}");
    record.messages.push(SentMessage {
        id: message_id.clone(),
        kind,
        campaign,
        sent_at: now,
        message_ref: None,
        updated: false,
    });
    record.last_sent_at = Some(record.last_sent_at.map_or(now, |last| last.max(now)));
    Effect::SendDm {
        admin: admin.to_string(),
        message_id,
        message,
    }
}

fn render(state: &CampaignState, kind: MessageKind, schedule: &CampaignSchedule) -> Message {
    match kind {
        MessageKind::Announcement => messages::announcement(
            &state.missing_scopes,
            schedule.available_at,
            schedule.deadline,
        ),
        MessageKind::UpdateAvailable => messages::update_available(schedule.deadline),
        MessageKind::DeadlinePassed => messages::deadline_passed(),
        MessageKind::Reminder if state.phase == Phase::Overdue => {
            messages::overdue_reminder(schedule.deadline)
        }
        MessageKind::Reminder | MessageKind::LoginNudge => messages::reminder(schedule.deadline),
    }
}

/// The earliest future moment something may become due: a later phase's date, or an
/// admin's next reminder. `None` when nothing ever will.
fn next_wake(
    state: &CampaignState,
    schedule: &CampaignSchedule,
    now: Timestamp,
) -> Option<Timestamp> {
    if !state.is_outdated() || state.phase == Phase::Upgraded {
        return None;
    }
    let next_phase = schedule
        .boundaries()
        .into_iter()
        .find(|(at, phase)| *phase > state.phase && *at > now)
        .map(|(at, _)| at);
    let next_reminder = next_reminder_at(state, schedule).filter(|at| *at > now);
    [next_phase, next_reminder].into_iter().flatten().min()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
