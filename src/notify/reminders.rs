//! Review reminders and the personal morning digest, as pure rules: the words of
//! `/bitbucket remind` ([`parse_remind`]), a [`Schedule`] and its slots in its time zone
//! (daylight-saving changes included, through jiff), which slot is due at `now` given the
//! last one handled and the grace window ([`due`]), and what a reminder or a digest says
//! ([`reminder_message`], [`digest_message`]).
//!
//! Pure: no I/O, no clock (`now` is passed in), no Slack types; time zones come from
//! jiff's database (bundled into the binary, so a bare machine has it). Never reads pull
//! requests or the store, never decides who may receive a message (`app::reminders` does).

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::bitbucket::Actor;
use crate::bitbucket::open_pulls::OpenPullRequest;
use crate::message::{Message, escape, escape_inline_code};

/// The usage line of `/bitbucket remind`.
pub const REMIND_USAGE: &str =
    "/bitbucket remind [at HH:MM] [weekdays|daily] [time zone] | remind list | remind off";

/// The longest list a reminder or digest shows; the rest is "and N more".
pub const MAX_LISTED: usize = 20;

/// The default time of a reminder, and the digest's time.
pub const DEFAULT_HOUR: i8 = 9;
pub const DEFAULT_MINUTE: i8 = 0;

/// Which days have a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Days {
    /// Monday to Friday.
    Weekdays,
    /// Every day.
    Daily,
}

impl Days {
    pub fn includes(self, weekday: Weekday) -> bool {
        match self {
            Days::Daily => true,
            Days::Weekdays => !matches!(weekday, Weekday::Saturday | Weekday::Sunday),
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Days::Weekdays => "weekdays",
            Days::Daily => "daily",
        }
    }
}

/// When a reminder goes out: a time of day on some days, in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub hour: i8,
    pub minute: i8,
    pub days: Days,
    /// An IANA name (`Europe/Paris`, `UTC`), checked when the schedule was made.
    pub zone: String,
}

impl Schedule {
    /// The digest's schedule: 09:00 on weekdays in `zone`.
    pub fn morning(zone: &str) -> Schedule {
        Schedule {
            hour: DEFAULT_HOUR,
            minute: DEFAULT_MINUTE,
            days: Days::Weekdays,
            zone: zone.to_string(),
        }
    }

    /// The schedule's zone; UTC if the name no longer resolves (a zone removed from the
    /// database after it was stored).
    pub fn time_zone(&self) -> TimeZone {
        TimeZone::get(&self.zone).unwrap_or(TimeZone::UTC)
    }

    fn time(&self) -> Time {
        Time::new(self.hour, self.minute, 0, 0).unwrap_or(Time::midnight())
    }

    /// The slot on `date`, if `date` has one. A time skipped by a daylight-saving change
    /// moves forward by the change (02:30 on the spring-forward day is 03:30); a time
    /// that happens twice is the first.
    fn slot_on(&self, date: Date, zone: &TimeZone) -> Option<Timestamp> {
        if !self.days.includes(date.weekday()) {
            return None;
        }
        date.to_datetime(self.time())
            .to_zoned(zone.clone())
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    /// The latest slot at or before `now`.
    pub fn latest_slot(&self, now: Timestamp) -> Option<Timestamp> {
        let zone = self.time_zone();
        let today = now.to_zoned(zone.clone()).date();
        (0..=8)
            .filter_map(|back| today.checked_sub(back.days()).ok())
            .filter_map(|date| self.slot_on(date, &zone))
            .find(|slot| *slot <= now)
    }

    /// The first slot after `after`.
    pub fn next_slot(&self, after: Timestamp) -> Option<Timestamp> {
        let zone = self.time_zone();
        let today = after.to_zoned(zone.clone()).date();
        (-1..=8)
            .filter_map(|ahead| today.checked_add(ahead.days()).ok())
            .filter_map(|date| self.slot_on(date, &zone))
            .find(|slot| *slot > after)
    }

    /// "09:00 on weekdays (Europe/Paris)".
    pub fn describe(&self) -> String {
        format!(
            "{:02}:{:02} {} ({})",
            self.hour,
            self.minute,
            match self.days {
                Days::Weekdays => "on weekdays",
                Days::Daily => "every day",
            },
            self.zone
        )
    }

    /// A slot as people in the schedule's zone read it: "Mon 12 Jan 09:00".
    pub fn local(&self, slot: Timestamp) -> String {
        slot.to_zoned(self.time_zone())
            .strftime("%a %-d %b %H:%M")
            .to_string()
    }
}

/// What is due at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing: the latest slot was handled already (or there is none yet).
    Nothing,
    /// The slot is at most the grace window old: send it.
    Send(Timestamp),
    /// The slot is older than the grace window (the daemon was down through it): record
    /// it as handled without sending.
    Skip(Timestamp),
}

/// The slot due at `now`: only the latest slot at or before `now` is ever considered, so
/// a missed period gives one decision, never two messages. `last_handled` is the last
/// slot handled (or when the schedule was made: slots before it are never due).
pub fn due(
    schedule: &Schedule,
    last_handled: Option<Timestamp>,
    now: Timestamp,
    grace: SignedDuration,
) -> Due {
    let Some(slot) = schedule.latest_slot(now) else {
        return Due::Nothing;
    };
    if last_handled.is_some_and(|last| last >= slot) {
        return Due::Nothing;
    }
    if now.duration_since(slot) <= grace {
        Due::Send(slot)
    } else {
        Due::Skip(slot)
    }
}

/// `/bitbucket remind ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemindCommand {
    /// Set (or replace) this channel's reminder; what is not given takes its default
    /// (09:00, weekdays, the time zone of the person who sets it, else UTC).
    Set {
        at: Option<(i8, i8)>,
        days: Option<Days>,
        zone: Option<String>,
    },
    List,
    Off,
}

fn expected() -> String {
    format!("Expected `{REMIND_USAGE}`, like `/bitbucket remind at 09:30 weekdays Europe/Paris`")
}

/// `HH:MM` (or `H:MM`) with hours 00 to 23 and minutes 00 to 59.
pub fn parse_time_of_day(text: &str) -> Result<(i8, i8), String> {
    let bad = || {
        format!(
            "`{}` is not a time of day: say HH:MM with hours 00 to 23 and minutes 00 to 59, like `09:30`",
            escape_inline_code(text, 20)
        )
    };
    let (hour, minute) = text.split_once(':').ok_or_else(bad)?;
    let digits = |part: &str, max: i8, lengths: &[usize]| {
        if !lengths.contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse::<i8>().ok().filter(|n| (0..=max).contains(n))
    };
    match (digits(hour, 23, &[1, 2]), digits(minute, 59, &[2])) {
        (Some(hour), Some(minute)) => Ok((hour, minute)),
        _ => Err(bad()),
    }
}

/// An IANA time zone name as jiff knows it, in its canonical spelling.
pub fn parse_zone(text: &str) -> Result<String, String> {
    TimeZone::get(text)
        .ok()
        .and_then(|zone| zone.iana_name().map(str::to_string))
        .ok_or_else(|| {
            format!(
                "`{}` is not a time zone: say an IANA name like `Europe/Paris`, `America/New_York` or `UTC`",
                escape_inline_code(text, 40)
            )
        })
}

/// Parses the words after `remind`, or says what is wrong with them and the expected form.
pub fn parse_remind(args: &[&str]) -> Result<RemindCommand, String> {
    match args {
        [first, rest @ ..] if first.eq_ignore_ascii_case("list") => {
            return match rest.first() {
                None => Ok(RemindCommand::List),
                Some(extra) => Err(format!(
                    "`list` takes no more words, but got `{}`",
                    escape_inline_code(extra, 40)
                )),
            };
        }
        [first, rest @ ..] if first.eq_ignore_ascii_case("off") => {
            return match rest.first() {
                None => Ok(RemindCommand::Off),
                Some(extra) => Err(format!(
                    "`off` takes no more words, but got `{}`",
                    escape_inline_code(extra, 40)
                )),
            };
        }
        _ => {}
    }
    let mut at = None;
    let mut days = None;
    let mut zone = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let lower = word.to_lowercase();
        let twice = |what: &str| format!("{what} is given twice. {}", expected());
        match lower.as_str() {
            "at" => {
                let Some(time) = words.next() else {
                    return Err(format!(
                        "`at` needs a time, like `at 09:30`. {}",
                        expected()
                    ));
                };
                if at.is_some() {
                    return Err(twice("the time"));
                }
                at = Some(parse_time_of_day(time)?);
            }
            "weekdays" | "daily" => {
                if days.is_some() {
                    return Err(twice("the days"));
                }
                days = Some(if lower == "daily" {
                    Days::Daily
                } else {
                    Days::Weekdays
                });
            }
            _ if word.contains(':') && word.starts_with(|c: char| c.is_ascii_digit()) => {
                if at.is_some() {
                    return Err(twice("the time"));
                }
                at = Some(parse_time_of_day(word)?);
            }
            _ if zone.is_none() => match parse_zone(word) {
                Ok(name) => zone = Some(name),
                Err(reason) => return Err(format!("{reason}. {}", expected())),
            },
            _ => {
                return Err(format!(
                    "`{}` is one word too many. {}",
                    escape_inline_code(word, 40),
                    expected()
                ));
            }
        }
    }
    Ok(RemindCommand::Set { at, days, zone })
}

/// "3 days", "5 hours", "1 minute".
pub fn format_age(age: SignedDuration) -> String {
    let minutes = age.as_secs().max(0) / 60;
    let (n, unit) = if minutes < 60 {
        (minutes, "minute")
    } else if minutes < 24 * 60 {
        (minutes / 60, "hour")
    } else {
        (minutes / (24 * 60), "day")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn link(url: Option<&str>, text: &str) -> String {
    match url {
        Some(url) if !url.contains(['<', '>', '|', ' ']) => format!("<{url}|{}>", escape(text)),
        _ => escape(text),
    }
}

fn person(actor: &Actor, mention: &dyn Fn(&str) -> Option<String>) -> String {
    actor
        .uuid
        .as_deref()
        .and_then(mention)
        .map(|user| format!("<@{user}>"))
        .unwrap_or_else(|| escape(&actor.display_name))
}

fn people<'a>(
    actors: impl Iterator<Item = &'a Actor>,
    mention: &dyn Fn(&str) -> Option<String>,
) -> String {
    actors
        .map(|actor| person(actor, mention))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One pull request's line: repository, `#id title` linked, author, age, who it waits
/// for and who approved.
fn line(
    pull: &OpenPullRequest,
    now: Timestamp,
    mention: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut line = format!(
        "*{}* {} by {} · open {}",
        escape(&pull.repository),
        link(
            pull.link.as_deref(),
            &format!("#{} {}", pull.id, pull.title)
        ),
        pull.author
            .as_ref()
            .map_or_else(|| "someone".to_string(), |author| person(author, mention)),
        format_age(pull.age(now))
    );
    let waiting = people(pull.pending_reviewers(), mention);
    if !waiting.is_empty() {
        line.push_str(&format!(" · reviewers: {waiting}"));
    }
    let approved = people(pull.approved_by(), mention);
    if !approved.is_empty() {
        line.push_str(&format!(" · approved by {approved}"));
    }
    line
}

/// Oldest first (then repository and id, so the order is stable).
fn oldest_first(mut pulls: Vec<OpenPullRequest>) -> Vec<OpenPullRequest> {
    pulls.sort_by(|a, b| {
        (a.created_on, &a.repository, a.id).cmp(&(b.created_on, &b.repository, b.id))
    });
    pulls
}

fn listing(
    heading: String,
    pulls: Vec<OpenPullRequest>,
    now: Timestamp,
    mention: &dyn Fn(&str) -> Option<String>,
) -> Message {
    let total = pulls.len();
    let mut sections = vec![heading.clone()];
    sections.extend(
        pulls
            .iter()
            .take(MAX_LISTED)
            .map(|pull| line(pull, now, mention)),
    );
    if total > MAX_LISTED {
        sections.push(format!("and {} more", total - MAX_LISTED));
    }
    Message {
        text: heading,
        sections,
        buttons: Vec::new(),
    }
}

/// A channel's reminder: the pull requests that wait for review (drafts never do), oldest
/// first, at most [`MAX_LISTED`] then "and N more". `None` when none wait: nothing is
/// posted.
pub fn reminder_message(
    pulls: Vec<OpenPullRequest>,
    now: Timestamp,
    mention: &dyn Fn(&str) -> Option<String>,
) -> Option<Message> {
    let waiting = oldest_first(
        pulls
            .into_iter()
            .filter(OpenPullRequest::waits_for_review)
            .collect(),
    );
    if waiting.is_empty() {
        return None;
    }
    let heading = match waiting.len() {
        1 => "*1 pull request is waiting for review*".to_string(),
        n => format!("*{n} pull requests are waiting for review*"),
    };
    Some(listing(heading, waiting, now, mention))
}

/// A person's morning digest: the pull requests waiting for their review (Bitbucket
/// `uuid`), oldest first. `None` when none wait: nothing is sent.
pub fn digest_message(
    pulls: Vec<OpenPullRequest>,
    uuid: &str,
    now: Timestamp,
    mention: &dyn Fn(&str) -> Option<String>,
) -> Option<Message> {
    let waiting = oldest_first(
        pulls
            .into_iter()
            .filter(|pull| pull.waits_for(uuid))
            .collect(),
    );
    if waiting.is_empty() {
        return None;
    }
    let heading = match waiting.len() {
        1 => "*Good morning: 1 pull request is waiting for your review*".to_string(),
        n => format!("*Good morning: {n} pull requests are waiting for your review*"),
    };
    Some(listing(heading, waiting, now, mention))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitbucket::open_pulls::{Review, ReviewState};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn schedule(hour: i8, minute: i8, days: Days, zone: &str) -> Schedule {
        Schedule {
            hour,
            minute,
            days,
            zone: zone.into(),
        }
    }

    const TWO_HOURS: SignedDuration = SignedDuration::from_hours(2);

    #[test]
    fn slots_follow_the_zone_across_daylight_saving_changes() {
        let paris = schedule(9, 0, Days::Daily, "Europe/Paris");
        // Winter: UTC+1. Summer (from 29 March 2026): UTC+2.
        assert_eq!(
            paris.latest_slot(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-28T08:00:00Z"))
        );
        assert_eq!(
            paris.latest_slot(at("2026-03-29T12:00:00Z")),
            Some(at("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            paris.next_slot(at("2026-03-28T08:00:00Z")),
            Some(at("2026-03-29T07:00:00Z"))
        );
        // A time skipped by the change moves forward by it; a repeated one is the first.
        let early = schedule(2, 30, Days::Daily, "Europe/Paris");
        assert_eq!(
            early.next_slot(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:30:00Z")),
            "02:30 does not exist that day: 03:30 CEST"
        );
        assert_eq!(
            early.next_slot(at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T00:30:00Z")),
            "02:30 happens twice: the first, in CEST"
        );
        let new_york = schedule(9, 0, Days::Weekdays, "America/New_York");
        assert_eq!(
            new_york.next_slot(at("2026-03-06T15:00:00Z")),
            Some(at("2026-03-09T13:00:00Z")),
            "Friday to Monday, across the US change on Sunday 8 March"
        );
    }

    #[test]
    fn weekdays_skip_the_weekend_and_daily_does_not() {
        // 2026-03-07 is a Saturday.
        let saturday_noon = at("2026-03-07T12:00:00Z");
        let weekdays = schedule(9, 0, Days::Weekdays, "UTC");
        let daily = schedule(9, 0, Days::Daily, "UTC");
        assert_eq!(
            weekdays.latest_slot(saturday_noon),
            Some(at("2026-03-06T09:00:00Z"))
        );
        assert_eq!(
            daily.latest_slot(saturday_noon),
            Some(at("2026-03-07T09:00:00Z"))
        );
        assert_eq!(
            weekdays.next_slot(saturday_noon),
            Some(at("2026-03-09T09:00:00Z"))
        );
        assert_eq!(
            daily.next_slot(saturday_noon),
            Some(at("2026-03-08T09:00:00Z"))
        );
        assert_eq!(
            weekdays.next_slot(at("2026-03-09T09:00:00Z")),
            Some(at("2026-03-10T09:00:00Z")),
            "strictly after"
        );
    }

    #[test]
    fn a_slot_is_sent_within_the_grace_window_and_skipped_beyond_it() {
        let daily = schedule(9, 0, Days::Daily, "UTC");
        let slot = at("2026-03-09T09:00:00Z");
        let before = Some(at("2026-03-08T09:00:00Z"));
        assert_eq!(
            due(&daily, before, at("2026-03-09T08:59:59Z"), TWO_HOURS),
            Due::Nothing
        );
        assert_eq!(due(&daily, before, slot, TWO_HOURS), Due::Send(slot));
        assert_eq!(
            due(&daily, before, at("2026-03-09T11:00:00Z"), TWO_HOURS),
            Due::Send(slot),
            "exactly the grace window old is still sent"
        );
        assert_eq!(
            due(&daily, before, at("2026-03-09T11:00:01Z"), TWO_HOURS),
            Due::Skip(slot)
        );
        assert_eq!(
            due(&daily, Some(slot), at("2026-03-09T09:30:00Z"), TWO_HOURS),
            Due::Nothing,
            "handled once"
        );
        // Down for three days: one decision about the latest slot, never one per day.
        assert_eq!(
            due(&daily, before, at("2026-03-12T10:00:00Z"), TWO_HOURS),
            Due::Send(at("2026-03-12T09:00:00Z"))
        );
        assert_eq!(
            due(&daily, before, at("2026-03-12T08:00:00Z"), TWO_HOURS),
            Due::Skip(at("2026-03-11T09:00:00Z"))
        );
        // A schedule made after today's slot waits for the next one.
        assert_eq!(
            due(
                &daily,
                Some(at("2026-03-09T09:05:00Z")),
                at("2026-03-09T09:06:00Z"),
                TWO_HOURS
            ),
            Due::Nothing
        );
        assert_eq!(
            due(&daily, None, at("2026-03-09T09:06:00Z"), TWO_HOURS),
            Due::Send(slot)
        );
    }

    #[test]
    fn the_command_takes_its_words_in_any_order_with_defaults() {
        assert_eq!(
            parse_remind(&[]),
            Ok(RemindCommand::Set {
                at: None,
                days: None,
                zone: None
            })
        );
        assert_eq!(
            parse_remind(&["at", "9:30", "DAILY", "europe/paris"]),
            Ok(RemindCommand::Set {
                at: Some((9, 30)),
                days: Some(Days::Daily),
                zone: Some("Europe/Paris".into())
            })
        );
        assert_eq!(
            parse_remind(&["UTC", "17:05", "weekdays"]),
            Ok(RemindCommand::Set {
                at: Some((17, 5)),
                days: Some(Days::Weekdays),
                zone: Some("UTC".into())
            })
        );
        assert_eq!(parse_remind(&["list"]), Ok(RemindCommand::List));
        assert_eq!(parse_remind(&["OFF"]), Ok(RemindCommand::Off));
    }

    #[test]
    fn bad_words_say_what_was_wrong_and_the_expected_form() {
        let error = |args: &[&str]| parse_remind(args).expect_err("refused");
        let late = error(&["at", "25:00"]);
        assert!(late.contains("`25:00` is not a time of day"), "{late}");
        assert!(error(&["at", "9:5"]).contains("is not a time of day"));
        assert!(error(&["at", "09:60"]).contains("is not a time of day"));
        assert!(error(&["at"]).contains("`at` needs a time"));
        let zone = error(&["Mars/Olympus"]);
        assert!(zone.contains("`Mars/Olympus` is not a time zone"), "{zone}");
        assert!(zone.contains(REMIND_USAGE), "{zone}");
        let extra = error(&["UTC", "Europe/Paris"]);
        assert!(extra.contains("one word too many"), "{extra}");
        assert!(error(&["daily", "weekdays"]).contains("the days is given twice"));
        assert!(error(&["at", "09:00", "10:00"]).contains("the time is given twice"));
        assert!(error(&["list", "all"]).contains("`list` takes no more words"));
        assert!(error(&["off", "now"]).contains("`off` takes no more words"));
    }

    fn actor(name: &str) -> Actor {
        Actor {
            display_name: name.into(),
            uuid: Some(format!("{{{name}}}")),
        }
    }

    fn pull(id: u64, created: &str, reviews: Vec<Review>) -> OpenPullRequest {
        OpenPullRequest {
            repository: "acme/api".into(),
            id,
            title: format!("Change {id}"),
            link: Some(format!("https://bitbucket.org/acme/api/pull-requests/{id}")),
            author: Some(actor("ada")),
            created_on: at(created),
            updated_on: at(created),
            draft: false,
            source_branch: None,
            destination_branch: None,
            head: None,
            reviews,
        }
    }

    fn review(name: &str, state: ReviewState) -> Review {
        Review {
            who: actor(name),
            requested: true,
            state,
        }
    }

    #[test]
    fn a_reminder_lists_what_waits_oldest_first_and_nothing_when_none_waits() {
        let now = at("2026-03-12T09:00:00Z");
        let no_mentions = |_: &str| None;
        let mut draft = pull(3, "2026-03-01T09:00:00Z", vec![]);
        draft.draft = true;
        let approved = pull(
            4,
            "2026-03-01T09:00:00Z",
            vec![review("bob", ReviewState::Approved)],
        );
        let waiting_newer = pull(
            1,
            "2026-03-11T09:00:00Z",
            vec![
                review("grace", ReviewState::Pending),
                review("bob", ReviewState::Approved),
            ],
        );
        let waiting_older = pull(2, "2026-03-09T08:00:00Z", vec![]);
        assert_eq!(
            reminder_message(vec![draft.clone(), approved.clone()], now, &no_mentions),
            None
        );
        let message = reminder_message(
            vec![draft, approved, waiting_newer, waiting_older],
            now,
            &|uuid: &str| (uuid == "{grace}").then(|| "U_GRACE".to_string()),
        )
        .expect("a reminder");
        assert_eq!(
            message.sections,
            vec![
                "*2 pull requests are waiting for review*".to_string(),
                "*acme/api* <https://bitbucket.org/acme/api/pull-requests/2|#2 Change 2> by ada · open 3 days".into(),
                "*acme/api* <https://bitbucket.org/acme/api/pull-requests/1|#1 Change 1> by ada · open 1 day · reviewers: <@U_GRACE> · approved by bob".into(),
            ]
        );
    }

    #[test]
    fn long_lists_stop_at_the_limit_and_the_digest_lists_only_what_waits_for_you() {
        let now = at("2026-03-12T09:00:00Z");
        let many: Vec<_> = (1..=25)
            .map(|id| {
                pull(
                    id,
                    "2026-03-10T09:00:00Z",
                    vec![review("grace", ReviewState::Pending)],
                )
            })
            .collect();
        let message = reminder_message(many.clone(), now, &|_| None).expect("a reminder");
        assert_eq!(message.sections.len(), 1 + MAX_LISTED + 1);
        assert_eq!(
            message.sections.last().map(String::as_str),
            Some("and 5 more")
        );
        let digest = digest_message(many, "{grace}", now, &|_| None).expect("a digest");
        assert!(
            digest
                .text
                .contains("25 pull requests are waiting for your review")
        );
        assert_eq!(
            digest_message(
                vec![pull(
                    1,
                    "2026-03-10T09:00:00Z",
                    vec![review("grace", ReviewState::Approved)]
                )],
                "{grace}",
                now,
                &|_| None
            ),
            None
        );
    }

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(format_age(SignedDuration::from_secs(59)), "0 minutes");
        assert_eq!(format_age(SignedDuration::from_mins(1)), "1 minute");
        assert_eq!(format_age(SignedDuration::from_hours(5)), "5 hours");
        assert_eq!(format_age(SignedDuration::from_hours(72)), "3 days");
        assert_eq!(format_age(SignedDuration::from_hours(24)), "1 day");
    }

    #[test]
    fn schedules_describe_themselves() {
        let s = schedule(9, 0, Days::Weekdays, "Europe/Paris");
        assert_eq!(s.describe(), "09:00 on weekdays (Europe/Paris)");
        assert_eq!(s.local(at("2026-03-09T08:00:00Z")), "Mon 9 Mar 09:00");
    }
}
