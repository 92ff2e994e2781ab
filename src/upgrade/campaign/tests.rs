//! Table-driven tests of each transition, and a whole campaign driven by a manual `now`.

use super::*;
use crate::upgrade::required_scopes;

pub(super) const ADMIN_A: &str = "UADMINA";
pub(super) const ADMIN_B: &str = "UADMINB";

/// Monday 2026-03-02 09:00 UTC, plus whole days and hours.
pub(super) fn at(days: i64, hours: i64) -> Timestamp {
    let start: Timestamp = "2026-03-02T09:00:00Z".parse().expect("valid timestamp");
    start
        .checked_add(SignedDuration::from_hours(days * 24 + hours))
        .expect("in range")
}

pub(super) fn current_scopes() -> Vec<String> {
    required_scopes().into_iter().map(String::from).collect()
}

/// Everything but link previews.
pub(super) fn outdated_scopes() -> Vec<String> {
    current_scopes()
        .into_iter()
        .filter(|scope| !scope.starts_with("links:"))
        .collect()
}

/// Announcement on day 0 (14 days ahead), available on day 14, deadline on day 28.
fn schedule() -> CampaignSchedule {
    CampaignSchedule {
        announce_at: None,
        available_at: Some(at(14, 0)),
        deadline: Some(at(28, 0)),
        reminder_interval: SignedDuration::from_hours(24),
    }
}

fn scopes_checked(granted: Vec<String>) -> CampaignEvent {
    CampaignEvent::ScopesChecked { granted }
}

fn admins_known(admins: &[&str]) -> CampaignEvent {
    CampaignEvent::AdminsKnown {
        admins: admins.iter().map(|admin| admin.to_string()).collect(),
    }
}

fn click(user_id: &str, is_admin: bool) -> CampaignEvent {
    CampaignEvent::ButtonClicked {
        user_id: user_id.into(),
        is_admin,
    }
}

/// Applies the events in order; returns the last state and every effect.
fn run(
    state: CampaignState,
    schedule: &CampaignSchedule,
    events: &[(Timestamp, CampaignEvent)],
) -> (CampaignState, Vec<Effect>) {
    let mut state = state;
    let mut all = Vec::new();
    for (now, event) in events {
        let (next, effects) = step(&state, event, schedule, *now);
        state = next;
        all.extend(effects);
    }
    (state, all)
}

/// An installation with two admins, outdated since `now`, with its DMs confirmed.
fn outdated_at(now: Timestamp, schedule: &CampaignSchedule) -> CampaignState {
    let (state, effects) = run(
        CampaignState::new(InstallMode::OAuth),
        schedule,
        &[
            (now, admins_known(&[ADMIN_A, ADMIN_B])),
            (now, scopes_checked(outdated_scopes())),
        ],
    );
    confirm_all(state, &effects, schedule, now)
}

/// Feeds `MessageSent` for every DM among `effects`, as the driver does after posting.
pub(super) fn confirm_all(
    state: CampaignState,
    effects: &[Effect],
    schedule: &CampaignSchedule,
    now: Timestamp,
) -> CampaignState {
    let confirmations: Vec<(Timestamp, CampaignEvent)> = effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::SendDm {
                admin, message_id, ..
            } => Some((now, message_sent(admin, message_id))),
            _ => None,
        })
        .collect();
    run(state, schedule, &confirmations).0
}

pub(super) fn message_sent(admin: &str, message_id: &str) -> CampaignEvent {
    CampaignEvent::MessageSent {
        admin: admin.into(),
        message_id: message_id.into(),
        channel: format!("D{admin}"),
        ts: format!("ts-{message_id}"),
    }
}

/// One line per effect, for exact comparisons.
pub(super) fn summary(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::SendDm {
                admin,
                message_id,
                message,
            } => format!("dm {admin} {message_id}: {}", message.text),
            Effect::UpdateMessage {
                admin,
                message_id,
                message_ref,
                message,
            } => format!(
                "edit {admin} {message_id} {}/{}: {}",
                message_ref.channel, message_ref.ts, message.text
            ),
            Effect::HoldNotifications => "hold".into(),
            Effect::ReleaseNotifications { digest } => format!("release digest={digest}"),
            Effect::WakeAt(at) => format!("wake {at}"),
            Effect::Ephemeral {
                user_id,
                message,
                needs_install_url,
            } => format!(
                "ephemeral {user_id} url={needs_install_url}: {}",
                message.text
            ),
        })
        .collect()
}

struct Case {
    name: &'static str,
    state: CampaignState,
    now: Timestamp,
    event: CampaignEvent,
    phase: Phase,
    effects: &'static [&'static str],
}

fn check(case: Case) {
    let (next, effects) = step(&case.state, &case.event, &schedule(), case.now);
    assert_eq!(next.phase, case.phase, "{}: phase", case.name);
    assert_eq!(summary(&effects), case.effects, "{}: effects", case.name);
}

const ANNOUNCE: &str = "Bitbucket for Slack will need updated permissions soon";
const AVAILABLE: &str = "Bitbucket for Slack: please update the app's permissions";

fn fresh_with_admins() -> CampaignState {
    run(
        CampaignState::new(InstallMode::OAuth),
        &schedule(),
        &[(at(-30, 0), admins_known(&[ADMIN_A, ADMIN_B]))],
    )
    .0
}

#[test]
fn an_outdated_scope_check_enters_the_phase_of_its_date() {
    let cases = [
        Case {
            name: "current scopes: nothing to do",
            state: fresh_with_admins(),
            now: at(0, 0),
            event: scopes_checked(current_scopes()),
            phase: Phase::NotNeeded,
            effects: &[],
        },
        Case {
            name: "outdated, before the announcement: wait for it",
            state: fresh_with_admins(),
            now: at(-1, 0),
            event: scopes_checked(outdated_scopes()),
            phase: Phase::NotNeeded,
            effects: &["wake 2026-03-02T09:00:00Z"],
        },
        Case {
            name: "outdated, 14 days before availability: announce",
            state: fresh_with_admins(),
            now: at(0, 0),
            event: scopes_checked(outdated_scopes()),
            phase: Phase::Announced,
            effects: &[
                "dm UADMINA c1-UADMINA-0: Bitbucket for Slack will need updated permissions soon",
                "dm UADMINB c1-UADMINB-0: Bitbucket for Slack will need updated permissions soon",
                "wake 2026-03-16T09:00:00Z",
            ],
        },
        Case {
            name: "outdated on the availability day: the button, no announcement",
            state: fresh_with_admins(),
            now: at(14, 0),
            event: scopes_checked(outdated_scopes()),
            phase: Phase::Available,
            effects: &[
                "dm UADMINA c1-UADMINA-0: Bitbucket for Slack: please update the app's permissions",
                "dm UADMINB c1-UADMINB-0: Bitbucket for Slack: please update the app's permissions",
                "wake 2026-03-17T09:00:00Z",
            ],
        },
        Case {
            name: "outdated after the deadline: hold, then the deadline message",
            state: fresh_with_admins(),
            now: at(28, 0),
            event: scopes_checked(outdated_scopes()),
            phase: Phase::Overdue,
            effects: &[
                "hold",
                "dm UADMINA c1-UADMINA-0: Bitbucket for Slack is paused until its permissions are updated",
                "dm UADMINB c1-UADMINB-0: Bitbucket for Slack is paused until its permissions are updated",
                "wake 2026-03-31T09:00:00Z",
            ],
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn ticks_move_through_the_phases_and_remind_at_the_interval() {
    let announced = outdated_at(at(0, 0), &schedule());
    let available = confirm_all(
        announced.clone(),
        &step(&announced, &CampaignEvent::Tick, &schedule(), at(14, 0)).1,
        &schedule(),
        at(14, 0),
    );
    let available = step(&available, &CampaignEvent::Tick, &schedule(), at(14, 0)).0;
    let cases = [
        Case {
            name: "announced: no reminders",
            state: announced.clone(),
            now: at(7, 0),
            event: CampaignEvent::Tick,
            phase: Phase::Announced,
            effects: &["wake 2026-03-16T09:00:00Z"],
        },
        Case {
            name: "available: the button",
            state: announced,
            now: at(14, 0),
            event: CampaignEvent::Tick,
            phase: Phase::Available,
            effects: &[
                "dm UADMINA c1-UADMINA-1: Bitbucket for Slack: please update the app's permissions",
                "dm UADMINB c1-UADMINB-1: Bitbucket for Slack: please update the app's permissions",
                "wake 2026-03-17T09:00:00Z",
            ],
        },
        Case {
            name: "available, inside the interval: nothing",
            state: available.clone(),
            now: at(14, 23),
            event: CampaignEvent::Tick,
            phase: Phase::Available,
            effects: &["wake 2026-03-17T09:00:00Z"],
        },
        Case {
            name: "available, one interval later: a reminder each",
            state: available.clone(),
            now: at(15, 0),
            event: CampaignEvent::Tick,
            phase: Phase::Available,
            effects: &[
                "dm UADMINA c1-UADMINA-2: Reminder: Bitbucket for Slack needs updated permissions",
                "dm UADMINB c1-UADMINB-2: Reminder: Bitbucket for Slack needs updated permissions",
                "wake 2026-03-18T09:00:00Z",
            ],
        },
        Case {
            name: "deadline: hold once and say so",
            state: available,
            now: at(28, 0),
            event: CampaignEvent::Tick,
            phase: Phase::Overdue,
            effects: &[
                "hold",
                "dm UADMINA c1-UADMINA-2: Bitbucket for Slack is paused until its permissions are updated",
                "dm UADMINB c1-UADMINB-2: Bitbucket for Slack is paused until its permissions are updated",
                "wake 2026-03-31T09:00:00Z",
            ],
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn overdue_reminders_continue_and_hold_only_once() {
    let overdue = outdated_at(at(28, 0), &schedule());
    assert!(overdue.held_notifications);
    let (_, effects) = step(&overdue, &CampaignEvent::Tick, &schedule(), at(29, 0));
    assert_eq!(
        summary(&effects),
        [
            "dm UADMINA c1-UADMINA-1: Reminder: Bitbucket for Slack is paused until its permissions are updated",
            "dm UADMINB c1-UADMINB-1: Reminder: Bitbucket for Slack is paused until its permissions are updated",
            "wake 2026-04-01T09:00:00Z",
        ]
    );
}

#[test]
fn upgrading_in_any_phase_releases_and_edits_every_earlier_message() {
    let oauth = CampaignEvent::OAuthCompleted {
        granted: current_scopes(),
    };
    let cases = [
        Case {
            name: "announced",
            state: outdated_at(at(0, 0), &schedule()),
            now: at(1, 0),
            event: oauth.clone(),
            phase: Phase::Upgraded,
            effects: &[
                "edit UADMINA c1-UADMINA-0 DUADMINA/ts-c1-UADMINA-0: Bitbucket for Slack is up to date",
                "edit UADMINB c1-UADMINB-0 DUADMINB/ts-c1-UADMINB-0: Bitbucket for Slack is up to date",
            ],
        },
        Case {
            name: "available",
            state: outdated_at(at(14, 0), &schedule()),
            now: at(14, 1),
            event: scopes_checked(current_scopes()),
            phase: Phase::Upgraded,
            effects: &[
                "edit UADMINA c1-UADMINA-0 DUADMINA/ts-c1-UADMINA-0: Bitbucket for Slack is up to date",
                "edit UADMINB c1-UADMINB-0 DUADMINB/ts-c1-UADMINB-0: Bitbucket for Slack is up to date",
            ],
        },
        Case {
            name: "overdue: release first, as one digest",
            state: outdated_at(at(28, 0), &schedule()),
            now: at(30, 0),
            event: oauth,
            phase: Phase::Upgraded,
            effects: &[
                "release digest=true",
                "edit UADMINA c1-UADMINA-0 DUADMINA/ts-c1-UADMINA-0: Bitbucket for Slack is up to date",
                "edit UADMINB c1-UADMINB-0 DUADMINB/ts-c1-UADMINB-0: Bitbucket for Slack is up to date",
            ],
        },
        Case {
            name: "a partial grant is not an upgrade",
            state: outdated_at(at(14, 0), &schedule()),
            now: at(14, 1),
            event: scopes_checked(
                outdated_scopes()
                    .into_iter()
                    .chain(["links:read".to_string()])
                    .collect(),
            ),
            phase: Phase::Available,
            effects: &["wake 2026-03-17T09:00:00Z"],
        },
    ];
    for case in cases {
        check(case);
    }
}

fn upgraded() -> CampaignState {
    let overdue = outdated_at(at(28, 0), &schedule());
    step(
        &overdue,
        &scopes_checked(current_scopes()),
        &schedule(),
        at(30, 0),
    )
    .0
}

#[test]
fn nothing_follows_an_upgrade() {
    let cases = [
        Case {
            name: "tick",
            state: upgraded(),
            now: at(60, 0),
            event: CampaignEvent::Tick,
            phase: Phase::Upgraded,
            effects: &[],
        },
        Case {
            name: "admins change",
            state: upgraded(),
            now: at(60, 0),
            event: admins_known(&["UNEWADMIN"]),
            phase: Phase::Upgraded,
            effects: &[],
        },
        Case {
            name: "the same scopes again",
            state: upgraded(),
            now: at(60, 0),
            event: scopes_checked(current_scopes()),
            phase: Phase::Upgraded,
            effects: &[],
        },
        Case {
            name: "a confirmation already applied",
            state: upgraded(),
            now: at(60, 0),
            event: message_sent(ADMIN_A, "c1-UADMINA-0"),
            phase: Phase::Upgraded,
            effects: &[],
        },
        Case {
            name: "an old button: answered, nothing else",
            state: upgraded(),
            now: at(60, 0),
            event: click(ADMIN_A, true),
            phase: Phase::Upgraded,
            effects: &[
                "ephemeral UADMINA url=false: Bitbucket for Slack is up to date: there are no permissions to update.",
            ],
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn a_stale_scope_check_delivered_again_cannot_undo_the_upgrade() {
    let (state, effects) = step(
        &upgraded(),
        &scopes_checked(outdated_scopes()),
        &schedule(),
        at(29, 0),
    );
    assert_eq!(state.phase, Phase::Upgraded);
    assert!(effects.is_empty());
}

#[test]
fn outdated_again_after_an_upgrade_starts_a_new_campaign() {
    let later = CampaignSchedule {
        announce_at: None,
        available_at: Some(at(100, 0)),
        deadline: None,
        reminder_interval: SignedDuration::from_hours(24),
    };
    let (state, effects) = step(
        &upgraded(),
        &scopes_checked(outdated_scopes()),
        &later,
        at(86, 0),
    );
    assert_eq!(state.phase, Phase::Announced);
    assert_eq!(state.campaign, 2);
    assert!(!state.held_notifications);
    assert_eq!(
        summary(&effects),
        [
            format!("dm UADMINA c2-UADMINA-0: {ANNOUNCE}"),
            format!("dm UADMINB c2-UADMINB-0: {ANNOUNCE}"),
            "wake 2026-06-10T09:00:00Z".into(),
        ]
    );
}

#[test]
fn a_late_confirmation_after_the_upgrade_is_still_edited_once() {
    let (available, effects) = run(
        fresh_with_admins(),
        &schedule(),
        &[(at(14, 0), scopes_checked(outdated_scopes()))],
    );
    assert_eq!(available.phase, Phase::Available);
    let (done, edits) = step(
        &available,
        &scopes_checked(current_scopes()),
        &schedule(),
        at(14, 1),
    );
    assert!(edits.is_empty(), "nothing was confirmed yet: {edits:?}");
    let (done, late) = step(
        &done,
        &message_sent(ADMIN_A, "c1-UADMINA-0"),
        &schedule(),
        at(14, 2),
    );
    assert_eq!(
        summary(&late),
        ["edit UADMINA c1-UADMINA-0 DUADMINA/ts-c1-UADMINA-0: Bitbucket for Slack is up to date"]
    );
    let (_, again) = step(
        &done,
        &message_sent(ADMIN_A, "c1-UADMINA-0"),
        &schedule(),
        at(14, 3),
    );
    assert!(again.is_empty());
    assert_eq!(effects.len(), 3, "two DMs and a wake-up");
}

#[test]
fn clicks_are_answered_by_who_clicked_and_how_the_app_is_installed() {
    let oauth = outdated_at(at(14, 0), &schedule());
    let mut token = oauth.clone();
    token.mode = InstallMode::ConfiguredToken;
    const WAKE: &str = "wake 2026-03-17T09:00:00Z";
    let cases = [
        Case {
            name: "a non-admin is told to ask an admin",
            state: oauth.clone(),
            now: at(14, 1),
            event: click("UMEMBER", false),
            phase: Phase::Available,
            effects: &[
                "ephemeral UMEMBER url=false: Only admins can update the app's permissions",
                WAKE,
            ],
        },
        Case {
            name: "a known admin gets Allow, whatever Slack said",
            state: oauth.clone(),
            now: at(14, 1),
            event: click(ADMIN_B, false),
            phase: Phase::Available,
            effects: &[
                "ephemeral UADMINB url=true: Update Bitbucket for Slack's permissions",
                WAKE,
            ],
        },
        Case {
            name: "an admin in token mode gets reinstall instructions",
            state: token,
            now: at(14, 1),
            event: click("UOWNER", true),
            phase: Phase::Available,
            effects: &[
                "ephemeral UOWNER url=false: Update Bitbucket for Slack's permissions",
                WAKE,
            ],
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn the_click_answers_carry_the_right_buttons() {
    let oauth = outdated_at(at(14, 0), &schedule());
    let answer = permissions_answer(&oauth, "UMEMBER", false);
    assert_eq!(
        answer.message.sections,
        [
            "Only workspace admins can update Bitbucket for Slack's permissions. Please ask <@UADMINA> to do it."
        ]
    );
    let answer = permissions_answer(&oauth, ADMIN_A, true);
    assert_eq!(
        answer.message.buttons[0].action_id,
        messages::ALLOW_ACTION_ID
    );
    assert!(answer.message.sections[0].contains("`links:write`: Show previews"));
    let mut token = oauth;
    token.mode = InstallMode::ConfiguredToken;
    let answer = permissions_answer(&token, ADMIN_A, true);
    assert_eq!(
        answer.message.buttons[0].action_id,
        messages::CHECK_AGAIN_ACTION_ID
    );
}

#[test]
fn an_oauth_install_switches_the_mode() {
    let mut token = CampaignState::new(InstallMode::ConfiguredToken);
    token = step(
        &token,
        &CampaignEvent::OAuthCompleted {
            granted: outdated_scopes(),
        },
        &schedule(),
        at(0, 0),
    )
    .0;
    assert_eq!(token.mode, InstallMode::OAuth);
}

#[test]
fn an_admin_who_joins_later_gets_the_phase_message_not_a_reminder() {
    let available = outdated_at(at(14, 0), &schedule());
    let (_, effects) = step(
        &available,
        &admins_known(&[ADMIN_A, ADMIN_B, "UNEWADMIN"]),
        &schedule(),
        at(14, 5),
    );
    assert_eq!(
        summary(&effects),
        [
            format!("dm UNEWADMIN c1-UNEWADMIN-0: {AVAILABLE}"),
            "wake 2026-03-17T09:00:00Z".into(),
        ]
    );
}

#[test]
fn unknown_confirmations_are_ignored() {
    let available = outdated_at(at(14, 0), &schedule());
    let (next, effects) = step(
        &available,
        &message_sent(ADMIN_A, "c9-UADMINA-0"),
        &schedule(),
        at(14, 1),
    );
    assert_eq!(summary(&effects), ["wake 2026-03-17T09:00:00Z"]);
    assert_eq!(next.sent, available.sent);
}

#[test]
fn schedules_without_dates_and_with_odd_ones() {
    let no_dates = CampaignSchedule::default();
    assert_eq!(no_dates.phase_at(at(0, 0)), Phase::Available);
    assert_eq!(no_dates.announce_at(), None);
    let announce_only = CampaignSchedule {
        announce_at: Some(at(5, 0)),
        ..CampaignSchedule::default()
    };
    assert_eq!(announce_only.phase_at(at(0, 0)), Phase::Available);
    let explicit = CampaignSchedule {
        announce_at: Some(at(10, 0)),
        ..schedule()
    };
    assert_eq!(explicit.phase_at(at(9, 23)), Phase::NotNeeded);
    assert_eq!(explicit.phase_at(at(10, 0)), Phase::Announced);
    let announce_after_availability = CampaignSchedule {
        announce_at: Some(at(20, 0)),
        ..schedule()
    };
    assert_eq!(announce_after_availability.announce_at(), Some(at(14, 0)));
    let zero_interval = CampaignSchedule {
        reminder_interval: SignedDuration::ZERO,
        ..schedule()
    };
    assert_eq!(
        zero_interval.effective_reminder_interval(),
        MIN_REMINDER_INTERVAL
    );
}

#[test]
fn with_no_dates_an_outdated_install_is_available_with_no_deadline() {
    let (state, effects) = run(
        fresh_with_admins(),
        &CampaignSchedule::default(),
        &[(at(0, 0), scopes_checked(outdated_scopes()))],
    );
    assert_eq!(state.phase, Phase::Available);
    assert_eq!(
        summary(&effects),
        [
            format!("dm UADMINA c1-UADMINA-0: {AVAILABLE}"),
            format!("dm UADMINB c1-UADMINB-0: {AVAILABLE}"),
            "wake 2026-03-03T09:00:00Z".into(),
        ]
    );
    let Effect::SendDm { message, .. } = &effects[0] else {
        panic!("expected a DM");
    };
    assert!(!message.sections.concat().contains("Please update by"));
}

#[test]
fn phase_summaries() {
    let fresh = CampaignState::new(InstallMode::OAuth);
    let early = run(
        fresh_with_admins(),
        &schedule(),
        &[(at(-3, 0), scopes_checked(outdated_scopes()))],
    )
    .0;
    let cases = [
        (fresh, at(0, 0), "none needed."),
        (
            early,
            at(-3, 0),
            "needed; admins will be told on 2026-03-02 09:00 UTC (in 3 days).",
        ),
        (
            outdated_at(at(0, 0), &schedule()),
            at(0, 0),
            "announced; admins can update from 2026-03-16 09:00 UTC (in 14 \
             days). Deadline: 2026-03-30 09:00 UTC (in 28 days).",
        ),
        (
            outdated_at(at(14, 0), &schedule()),
            at(20, 0),
            "available; an admin needs to click *Update permissions*. \
             Until then new users cannot log in. Deadline: 2026-03-30 09:00 UTC (in 8 days).",
        ),
        (
            outdated_at(at(28, 0), &schedule()),
            at(29, 0),
            "overdue since 2026-03-30 09:00 UTC (1 day ago); commands are \
             refused and channel notifications are held until an admin updates.",
        ),
        (
            upgraded(),
            at(30, 0),
            "done on 2026-04-01 09:00 UTC (today).",
        ),
    ];
    for (state, now, expected) in cases {
        assert_eq!(phase_summary(&state, &schedule(), now), expected);
    }
}

#[test]
fn status_numbers_for_the_cli() {
    let available = outdated_at(at(14, 0), &schedule());
    assert_eq!(last_reminder_at(&available), Some(at(14, 0)));
    assert_eq!(next_reminder_at(&available, &schedule()), Some(at(15, 0)));
    let announced = outdated_at(at(0, 0), &schedule());
    assert_eq!(next_reminder_at(&announced, &schedule()), None);
    assert_eq!(Phase::Overdue.name(), "overdue");
}

#[test]
fn the_state_round_trips_through_json() {
    let state = outdated_at(at(28, 0), &schedule());
    let json = serde_json::to_string(&state).expect("serializes");
    assert!(json.contains("\"phase\":\"overdue\""), "{json}");
    let back: CampaignState = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, state);
}

/// What a driver does: wake at `next_wake`, post each DM and confirm it at once.
pub(super) struct SimulatedDriver {
    pub state: CampaignState,
    pub schedule: CampaignSchedule,
    pub log: Vec<(Timestamp, Effect)>,
}

impl SimulatedDriver {
    pub fn apply(&mut self, now: Timestamp, event: CampaignEvent) {
        let (next, effects) = step(&self.state, &event, &self.schedule, now);
        self.state = next;
        for effect in effects {
            if let Effect::SendDm {
                admin, message_id, ..
            } = &effect
            {
                let (next, more) = step(
                    &self.state,
                    &message_sent(admin, message_id),
                    &self.schedule,
                    now,
                );
                self.state = next;
                self.log
                    .extend(more.into_iter().map(|effect| (now, effect)));
            }
            self.log.push((now, effect));
        }
    }

    /// Sleeps until each wake-up up to `until`, ticking at it.
    pub fn run_until(&mut self, until: Timestamp) {
        while let Some(wake) = self.state.next_wake.filter(|wake| *wake <= until) {
            self.apply(wake, CampaignEvent::Tick);
        }
    }

    /// Persists the state as JSON and loads it back, as a restart does.
    pub fn restart(&mut self) {
        let json = serde_json::to_string(&self.state).expect("serializes");
        self.state = serde_json::from_str(&json).expect("deserializes");
    }

    fn texts_since(&self, index: usize) -> Vec<String> {
        summary(
            &self.log[index..]
                .iter()
                .map(|(_, effect)| effect.clone())
                .filter(|effect| !matches!(effect, Effect::WakeAt(_)))
                .collect::<Vec<_>>(),
        )
    }
}

#[test]
fn a_whole_campaign_with_a_manual_clock() {
    let mut driver = SimulatedDriver {
        state: CampaignState::new(InstallMode::OAuth),
        schedule: schedule(),
        log: Vec::new(),
    };
    driver.apply(at(-20, 0), admins_known(&[ADMIN_A]));
    driver.apply(at(-20, 0), scopes_checked(outdated_scopes()));
    assert_eq!(driver.state.phase, Phase::NotNeeded);
    assert!(
        driver
            .log
            .iter()
            .all(|(_, effect)| matches!(effect, Effect::WakeAt(_)))
    );

    driver.run_until(at(13, 0));
    assert_eq!(driver.state.phase, Phase::Announced);
    assert_eq!(
        driver.texts_since(0),
        [format!("dm UADMINA c1-UADMINA-0: {ANNOUNCE}")]
    );

    let mark = driver.log.len();
    driver.run_until(at(17, 12));
    assert_eq!(driver.state.phase, Phase::Available);
    assert_eq!(
        driver.texts_since(mark),
        [
            format!("dm UADMINA c1-UADMINA-1: {AVAILABLE}"),
            "dm UADMINA c1-UADMINA-2: Reminder: Bitbucket for Slack needs updated permissions"
                .into(),
            "dm UADMINA c1-UADMINA-3: Reminder: Bitbucket for Slack needs updated permissions"
                .into(),
            "dm UADMINA c1-UADMINA-4: Reminder: Bitbucket for Slack needs updated permissions"
                .into(),
        ]
    );

    let mark = driver.log.len();
    driver.restart();
    driver.apply(at(17, 12), CampaignEvent::Tick);
    driver.apply(at(17, 12), admins_known(&[ADMIN_A]));
    driver.apply(at(17, 12), scopes_checked(outdated_scopes()));
    assert!(
        driver.texts_since(mark).is_empty(),
        "a restart resends nothing"
    );

    driver.run_until(at(29, 12));
    assert_eq!(driver.state.phase, Phase::Overdue);
    let overdue_texts = driver.texts_since(mark);
    assert_eq!(overdue_texts.len(), 10 + 1 + 1 + 1, "{overdue_texts:#?}");
    assert_eq!(overdue_texts[10], "hold");
    assert!(overdue_texts[11].ends_with("is paused until its permissions are updated"));

    driver.apply(at(29, 13), click(ADMIN_A, true));
    let mark = driver.log.len();
    driver.apply(
        at(29, 14),
        CampaignEvent::OAuthCompleted {
            granted: current_scopes(),
        },
    );
    let after = driver.texts_since(mark);
    assert_eq!(after[0], "release digest=true");
    assert_eq!(
        after.len(),
        1 + 17,
        "every one of the 17 DMs is edited: {after:#?}"
    );
    assert_eq!(driver.state.phase, Phase::Upgraded);
    assert_eq!(driver.state.next_wake, None);

    let mark = driver.log.len();
    for day in 30..60 {
        driver.apply(at(day, 0), CampaignEvent::Tick);
    }
    driver.restart();
    driver.apply(at(60, 0), scopes_checked(current_scopes()));
    assert!(driver.log[mark..].is_empty(), "nothing after the upgrade");
}

#[test]
fn a_stale_admin_list_delivered_again_sends_nothing() {
    let (state, _) = run(
        CampaignState::new(InstallMode::OAuth),
        &schedule(),
        &[
            (at(1, 0), admins_known(&[ADMIN_A, ADMIN_B])),
            (at(2, 0), admins_known(&[ADMIN_A])),
            (at(3, 0), scopes_checked(outdated_scopes())),
            (at(14, 0), CampaignEvent::Tick),
        ],
    );
    let (state, effects) = step(
        &state,
        &admins_known(&[ADMIN_A, ADMIN_B]),
        &schedule(),
        at(1, 0),
    );
    assert_eq!(state.admins, [ADMIN_A]);
    assert_eq!(summary(&effects), ["wake 2026-03-17T09:00:00Z"]);
}

#[test]
fn a_refused_login_nudges_only_admins_whose_reminder_is_due() {
    let refused = CampaignEvent::LoginRefused {
        user_id: "UNEW".into(),
    };
    const NUDGE: &str = "Someone is waiting for Bitbucket for Slack's updated permissions";
    let available = outdated_at(at(14, 0), &schedule());
    check(Case {
        name: "inside the interval",
        state: available.clone(),
        now: at(14, 5),
        event: refused.clone(),
        phase: Phase::Available,
        effects: &["wake 2026-03-17T09:00:00Z"],
    });
    let (next, effects) = step(&available, &refused, &schedule(), at(15, 1));
    assert_eq!(
        summary(&effects),
        vec![
            format!("dm {ADMIN_A} c1-{ADMIN_A}-1: {NUDGE}"),
            format!("dm {ADMIN_B} c1-{ADMIN_B}-1: {NUDGE}"),
            "wake 2026-03-18T10:00:00Z".to_string(),
        ],
        "in place of the reminder, which moves a whole interval on"
    );
    assert!(matches!(
        &effects[0],
        Effect::SendDm { message, .. } if message.sections[0].contains("<@UNEW> tried to connect")
    ));
    let (_, effects) = step(&next, &refused, &schedule(), at(15, 2));
    assert!(
        summary(&effects)
            .iter()
            .all(|line| line.starts_with("wake"))
    );
    check(Case {
        name: "announced: admins cannot act yet",
        state: outdated_at(at(0, 0), &schedule()),
        now: at(3, 0),
        event: refused.clone(),
        phase: Phase::Announced,
        effects: &["wake 2026-03-16T09:00:00Z"],
    });
    let (overdue, effects) = step(&available, &refused, &schedule(), at(28, 0));
    let kinds = summary(&effects);
    assert!(
        !kinds.iter().any(|line| line.contains(NUDGE)),
        "the deadline's own message, not a nudge: {kinds:#?}"
    );
    assert_eq!(overdue.phase, Phase::Overdue);
    // The deadline DM restarts each admin's interval; after it, a refused login still
    // nudges the admins whose reminder is due.
    let (_, effects) = step(&overdue, &refused, &schedule(), at(28, 5));
    assert!(
        !summary(&effects).iter().any(|line| line.contains(NUDGE)),
        "inside the interval that the deadline DM started"
    );
    let (_, effects) = step(&overdue, &refused, &schedule(), at(29, 1));
    let kinds = summary(&effects);
    assert_eq!(
        kinds.iter().filter(|line| line.contains(NUDGE)).count(),
        2,
        "after the deadline, once the interval passed: {kinds:#?}"
    );
}
