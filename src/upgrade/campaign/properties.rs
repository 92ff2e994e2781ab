//! Property tests: random schedules and random event sequences at random times, generated
//! from fixed seeds (a failure names its seed), checked against the story's promises.
//!
//! The generator acts like the driver: it confirms DMs that were sent (sometimes twice,
//! sometimes late), changes the admins, grants and loses scopes, clicks buttons and lets
//! time pass. At the end it confirms every DM still pending, so "edited exactly once" is
//! checkable.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::{at, current_scopes, message_sent, outdated_scopes};
use super::*;

const SEQUENCES: u64 = 250;
const ADMINS: [&str; 3] = ["UA", "UB", "UC"];

/// One applied event, with the states around it.
struct Step {
    now: Timestamp,
    event: CampaignEvent,
    before: CampaignState,
    after: CampaignState,
    effects: Vec<Effect>,
}

struct Run {
    seed: u64,
    schedule: CampaignSchedule,
    initial: CampaignState,
    steps: Vec<Step>,
}

fn random_date(rng: &mut StdRng, days: i64) -> Option<Timestamp> {
    rng.random_bool(0.7)
        .then(|| at(rng.random_range(0..days), rng.random_range(0..24)))
}

fn random_schedule(rng: &mut StdRng) -> CampaignSchedule {
    let hours = [-1, 0, 1, 6, 24, 24, 72][rng.random_range(0..7)];
    CampaignSchedule {
        announce_at: random_date(rng, 20),
        available_at: random_date(rng, 25),
        deadline: random_date(rng, 40),
        reminder_interval: SignedDuration::from_hours(hours),
    }
}

fn random_scopes(rng: &mut StdRng) -> Vec<String> {
    match rng.random_range(0..10) {
        0..=5 => outdated_scopes(),
        6..=8 => current_scopes(),
        _ => vec!["bot".into(), "commands".into()],
    }
}

fn random_event(
    rng: &mut StdRng,
    pending: &[(String, String)],
    confirmed: &[(String, String)],
) -> CampaignEvent {
    let pick = |rng: &mut StdRng, list: &[(String, String)]| {
        list.get(rng.random_range(0..list.len().max(1)))
            .map(|(admin, id)| message_sent(admin, id))
    };
    let roll = rng.random_range(0..100);
    let event = match roll {
        30..35 => Some(CampaignEvent::LoginRefused {
            user_id: "UMEMBER".into(),
        }),
        35..55 => pick(rng, pending),
        55..60 => pick(rng, confirmed),
        60..70 => Some(CampaignEvent::ScopesChecked {
            granted: random_scopes(rng),
        }),
        70..75 => Some(CampaignEvent::OAuthCompleted {
            granted: random_scopes(rng),
        }),
        75..82 => Some(CampaignEvent::ButtonClicked {
            user_id: ["UA", "UMEMBER"][rng.random_range(0..2)].into(),
            is_admin: rng.random_bool(0.5),
        }),
        82..100 => Some(CampaignEvent::AdminsKnown {
            admins: ADMINS
                .iter()
                .filter(|_| rng.random_bool(0.7))
                .map(|admin| admin.to_string())
                .collect(),
        }),
        _ => None,
    };
    event.unwrap_or(CampaignEvent::Tick)
}

/// Generates and applies one random sequence, then confirms every pending DM.
fn generate(seed: u64) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let schedule = random_schedule(&mut rng);
    let mode = if rng.random_bool(0.5) {
        InstallMode::OAuth
    } else {
        InstallMode::ConfiguredToken
    };
    let initial = CampaignState::new(mode);
    let mut run = Run {
        seed,
        schedule,
        initial: initial.clone(),
        steps: Vec::new(),
    };
    let mut state = initial;
    let mut now = at(rng.random_range(-20..0), 0);
    let mut pending: Vec<(String, String)> = Vec::new();
    let mut confirmed: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.random_range(1..90) {
        // Times strictly increase, as the driver's clock does.
        now = minutes_after(now, rng.random_range(1..=36 * 60));
        let event = random_event(&mut rng, &pending, &confirmed);
        state = apply(&mut run, state, now, event, &mut pending, &mut confirmed);
    }
    // At the same `now`: confirming a DM must not make another one due.
    for _ in 0..1000 {
        let Some((admin, id)) = pending.first().cloned() else {
            return run;
        };
        let event = message_sent(&admin, &id);
        state = apply(&mut run, state, now, event, &mut pending, &mut confirmed);
    }
    panic!("seed {seed}: confirming DMs keeps sending new ones");
}

fn minutes_after(now: Timestamp, minutes: i64) -> Timestamp {
    now.checked_add(SignedDuration::from_mins(minutes))
        .expect("in range")
}

fn apply(
    run: &mut Run,
    state: CampaignState,
    now: Timestamp,
    event: CampaignEvent,
    pending: &mut Vec<(String, String)>,
    confirmed: &mut Vec<(String, String)>,
) -> CampaignState {
    let (after, effects) = step(&state, &event, &run.schedule, now);
    for effect in &effects {
        if let Effect::SendDm {
            admin, message_id, ..
        } = effect
        {
            pending.push((admin.clone(), message_id.clone()));
        }
    }
    if let CampaignEvent::MessageSent {
        admin, message_id, ..
    } = &event
    {
        let key = (admin.clone(), message_id.clone());
        if let Some(index) = pending.iter().position(|entry| *entry == key) {
            confirmed.push(pending.remove(index));
        }
    }
    run.steps.push(Step {
        now,
        event,
        before: state,
        after: after.clone(),
        effects,
    });
    after
}

fn for_every_run(check: impl Fn(&Run)) {
    for seed in 0..SEQUENCES {
        check(&generate(seed));
    }
}

fn sent_kind(step: &Step, admin: &str, message_id: &str) -> MessageKind {
    step.after.sent[admin]
        .messages
        .iter()
        .find(|message| message.id == message_id)
        .map(|message| message.kind)
        .expect("a sent DM is recorded")
}

fn is_scope_event(event: &CampaignEvent) -> bool {
    matches!(
        event,
        CampaignEvent::ScopesChecked { .. } | CampaignEvent::OAuthCompleted { .. }
    )
}

#[test]
fn nothing_after_upgraded_but_late_edits_and_click_answers() {
    for_every_run(|run| {
        for step in &run.steps {
            if step.before.phase != Phase::Upgraded {
                continue;
            }
            if step.after.phase != Phase::Upgraded {
                assert!(is_scope_event(&step.event), "seed {}", run.seed);
                continue;
            }
            for effect in &step.effects {
                let allowed = match (effect, &step.event) {
                    (Effect::Ephemeral { .. }, CampaignEvent::ButtonClicked { .. }) => true,
                    (
                        Effect::UpdateMessage { message_id, .. },
                        CampaignEvent::MessageSent {
                            message_id: confirmed,
                            ..
                        },
                    ) => message_id == confirmed,
                    _ => false,
                };
                assert!(allowed, "seed {}: {effect:?} after Upgraded", run.seed);
            }
        }
    });
}

#[test]
fn never_two_reminders_to_one_admin_inside_the_interval() {
    for_every_run(|run| {
        let interval = run.schedule.effective_reminder_interval();
        let mut last_dm: BTreeMap<String, Timestamp> = BTreeMap::new();
        for step in &run.steps {
            let mut told_now = BTreeSet::new();
            for effect in &step.effects {
                let Effect::SendDm {
                    admin, message_id, ..
                } = effect
                else {
                    continue;
                };
                assert!(told_now.insert(admin), "seed {}: two DMs at once", run.seed);
                if matches!(
                    sent_kind(step, admin, message_id),
                    MessageKind::Reminder | MessageKind::LoginNudge
                ) {
                    assert!(step.after.phase.has_reminders(), "seed {}", run.seed);
                    let previous = last_dm.get(admin).copied();
                    assert!(
                        previous.is_some_and(|at| step.now.duration_since(at) >= interval),
                        "seed {}: reminder to {admin} at {} after {previous:?}",
                        run.seed,
                        step.now
                    );
                }
                last_dm.insert(admin.clone(), step.now);
            }
        }
    });
}

#[test]
fn every_dm_is_sent_once_and_each_phase_message_once_per_campaign() {
    for_every_run(|run| {
        let mut ids = BTreeSet::new();
        let mut phase_messages = BTreeSet::new();
        for step in &run.steps {
            for effect in &step.effects {
                let Effect::SendDm {
                    admin, message_id, ..
                } = effect
                else {
                    continue;
                };
                assert!(ids.insert(message_id.clone()), "seed {}", run.seed);
                let kind = sent_kind(step, admin, message_id);
                if !matches!(kind, MessageKind::Reminder | MessageKind::LoginNudge) {
                    let key = (step.after.campaign, admin.clone(), format!("{kind:?}"));
                    assert!(phase_messages.insert(key), "seed {}", run.seed);
                }
            }
        }
    });
}

#[test]
fn notifications_are_held_once_per_campaign_exactly_while_overdue() {
    for_every_run(|run| {
        let mut holds: BTreeMap<u32, usize> = BTreeMap::new();
        for step in &run.steps {
            for effect in &step.effects {
                match effect {
                    Effect::HoldNotifications => {
                        *holds.entry(step.after.campaign).or_default() += 1;
                    }
                    Effect::ReleaseNotifications { digest } => {
                        assert!(
                            *digest && step.before.held_notifications,
                            "seed {}",
                            run.seed
                        );
                    }
                    _ => {}
                }
            }
            assert_eq!(
                step.after.held_notifications,
                step.after.phase == Phase::Overdue,
                "seed {}",
                run.seed
            );
        }
        assert!(holds.values().all(|count| *count == 1), "seed {}", run.seed);
    });
}

#[test]
fn every_message_sent_before_the_upgrade_is_edited_exactly_once_after_it() {
    for_every_run(|run| {
        let mut upgraded_at_step: BTreeMap<u32, usize> = BTreeMap::new();
        let mut campaign_of: BTreeMap<String, u32> = BTreeMap::new();
        let mut edits: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, step) in run.steps.iter().enumerate() {
            if step.before.phase != Phase::Upgraded && step.after.phase == Phase::Upgraded {
                upgraded_at_step.insert(step.after.campaign, index);
            }
            for effect in &step.effects {
                match effect {
                    Effect::SendDm { message_id, .. } => {
                        campaign_of.insert(message_id.clone(), step.after.campaign);
                    }
                    Effect::UpdateMessage { message_id, .. } => {
                        edits.entry(message_id.clone()).or_default().push(index);
                    }
                    _ => {}
                }
            }
        }
        for (message_id, campaign) in &campaign_of {
            let edited = edits.get(message_id).map_or(&[][..], Vec::as_slice);
            match upgraded_at_step.get(campaign) {
                Some(upgrade) => assert!(
                    edited.len() == 1 && edited[0] >= *upgrade,
                    "seed {}: {message_id} edited at {edited:?}, upgrade at {upgrade}",
                    run.seed
                ),
                None => assert!(edited.is_empty(), "seed {}: {message_id}", run.seed),
            }
        }
    });
}

#[test]
fn wake_ups_are_in_the_future_and_end_with_the_campaign() {
    for_every_run(|run| {
        for step in &run.steps {
            let wakes: Vec<Timestamp> = step
                .effects
                .iter()
                .filter_map(|effect| match effect {
                    Effect::WakeAt(at) => Some(*at),
                    _ => None,
                })
                .collect();
            assert!(wakes.iter().all(|at| *at > step.now), "seed {}", run.seed);
            assert!(wakes.len() <= 1, "seed {}", run.seed);
            assert_eq!(
                wakes.first().copied(),
                step.after.next_wake,
                "seed {}",
                run.seed
            );
            if step.after.phase == Phase::Upgraded {
                assert_eq!(step.after.next_wake, None, "seed {}", run.seed);
            }
        }
    });
}

#[test]
fn every_state_survives_a_json_round_trip() {
    for_every_run(|run| {
        for step in &run.steps {
            let json = serde_json::to_string(&step.after).expect("serializes");
            let back: CampaignState = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, step.after, "seed {}", run.seed);
        }
    });
}

/// A restart after step `k`: the state is loaded from JSON, the driver delivers some
/// events again (with their original times), then carries on.
#[test]
fn replaying_events_after_a_restart_sends_nothing_twice() {
    for seed in 0..SEQUENCES {
        let run = generate(seed);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let restart = rng.random_range(0..=run.steps.len());
        let replay_from = restart.saturating_sub(rng.random_range(0..8));
        let saved = match restart {
            0 => &run.initial,
            k => &run.steps[k - 1].after,
        };
        let json = serde_json::to_string(saved).expect("serializes");
        let mut state: CampaignState = serde_json::from_str(&json).expect("deserializes");
        for original in &run.steps[replay_from..restart] {
            let (next, effects) = step(&state, &original.event, &run.schedule, original.now);
            let resent: Vec<&Effect> = effects
                .iter()
                .filter(|effect| !matches!(effect, Effect::WakeAt(_) | Effect::Ephemeral { .. }))
                .collect();
            assert!(resent.is_empty(), "seed {seed}: replay sent {resent:?}");
            state = next;
        }
        for original in &run.steps[restart..] {
            let (next, effects) = step(&state, &original.event, &run.schedule, original.now);
            assert_eq!(effects, original.effects, "seed {seed}: after the restart");
            state = next;
        }
        let expected = run.steps.last().map_or(&run.initial, |last| &last.after);
        let without_wake = |state: &CampaignState| CampaignState {
            next_wake: None,
            ..state.clone()
        };
        assert_eq!(without_wake(&state), without_wake(expected), "seed {seed}");
    }
}
