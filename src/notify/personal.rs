//! Personal notifications: who an activity concerns and why ([`concerned`]), each
//! person's settings (kinds on or off, a mute that ends: [`PersonalSettings`]), the words
//! of `/bitbucket notify` ([`parse_notify`]) and what a DM says ([`personal_notification`]).
//!
//! Pure: no I/O, no clock (`now` is passed in), no Slack types. Never picks channels
//! (that is [`super::route`]) and never looks up links: it names Bitbucket accounts and
//! mentions, and the router resolves them to Slack users of the workspace.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::render::Notification;
use crate::bitbucket::{Activity, ActivityKind, Actor};
use crate::message::{Message, escape_inline_code};

/// Someone an activity may concern, as Bitbucket names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Person {
    /// A Bitbucket account by its `{uuid}`.
    Account(String),
    /// A mention as written in a comment: `{...}` (an account id or a uuid) or a nickname.
    Mentioned(String),
}

/// Why an activity concerns a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// You were asked to review.
    ReviewRequested,
    /// A pull request you review got new commits.
    ReviewedUpdated,
    /// Your pull request was approved.
    Approved,
    /// Changes were requested on your pull request.
    ChangesRequested,
    /// Someone commented on your pull request.
    Commented,
    /// Someone replied to your comment.
    Replied,
    /// Someone mentioned you in a comment.
    Mentioned,
    /// Your pull request was merged.
    Merged,
    /// Your pull request was declined.
    Declined,
    /// A pipeline or build (commit status) of your pull request failed.
    BuildFailed,
    /// A pipeline or build of your pull request passed after a failure.
    BuildFixed,
}

impl Reason {
    /// The setting that lets this reason through.
    pub fn kind(self) -> NotifyKind {
        match self {
            Reason::ReviewRequested | Reason::ReviewedUpdated => NotifyKind::Reviews,
            Reason::Approved | Reason::ChangesRequested => NotifyKind::MyReviews,
            Reason::Commented => NotifyKind::Comments,
            Reason::Replied => NotifyKind::Replies,
            Reason::Mentioned => NotifyKind::Mentions,
            Reason::Merged | Reason::Declined => NotifyKind::Merges,
            Reason::BuildFailed => NotifyKind::Builds,
            Reason::BuildFixed => NotifyKind::Fixes,
        }
    }

    /// The DM's first line.
    pub fn heading(self) -> &'static str {
        match self {
            Reason::ReviewRequested => "You were asked to review a pull request",
            Reason::ReviewedUpdated => "A pull request you review has new commits",
            Reason::Approved => "Your pull request was approved",
            Reason::ChangesRequested => "Changes were requested on your pull request",
            Reason::Commented => "New comment on your pull request",
            Reason::Replied => "Someone replied to your comment",
            Reason::Mentioned => "You were mentioned",
            Reason::Merged => "Your pull request was merged",
            Reason::Declined => "Your pull request was declined",
            Reason::BuildFailed => "A build failed on your pull request",
            Reason::BuildFixed => "A build passed again on your pull request",
        }
    }

    /// Whether the actor's own activity can still concern them: a pipeline's result is
    /// not something its starter did.
    pub fn tells_the_actor(self) -> bool {
        matches!(self, Reason::BuildFailed | Reason::BuildFixed)
    }
}

/// What a person can turn on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyKind {
    Reviews,
    MyReviews,
    Comments,
    Replies,
    Mentions,
    Merges,
    Builds,
    Fixes,
    /// The morning digest of pull requests waiting for your review (`notify::reminders`).
    Digest,
}

/// A kind's word, what it covers and whether it is on by default.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    pub kind: NotifyKind,
    pub word: &'static str,
    pub summary: &'static str,
    pub default_on: bool,
}

/// Every kind, in the order `/bitbucket notify` lists them.
pub const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: NotifyKind::Reviews,
        word: "reviews",
        summary: "you are asked to review; a pull request you review gets new commits",
        default_on: true,
    },
    KindSpec {
        kind: NotifyKind::MyReviews,
        word: "my-reviews",
        summary: "your pull request is approved or gets changes requested",
        default_on: true,
    },
    KindSpec {
        kind: NotifyKind::Comments,
        word: "comments",
        summary: "someone comments on your pull request",
        default_on: false,
    },
    KindSpec {
        kind: NotifyKind::Replies,
        word: "replies",
        summary: "someone replies to your comment",
        default_on: false,
    },
    KindSpec {
        kind: NotifyKind::Mentions,
        word: "mentions",
        summary: "someone mentions you in a comment",
        default_on: false,
    },
    KindSpec {
        kind: NotifyKind::Merges,
        word: "merges",
        summary: "your pull request is merged or declined",
        default_on: true,
    },
    KindSpec {
        kind: NotifyKind::Builds,
        word: "builds",
        summary: "a pipeline or build fails on your pull request",
        default_on: true,
    },
    KindSpec {
        kind: NotifyKind::Fixes,
        word: "fixes",
        summary: "a pipeline or build passes again on your pull request after failing",
        default_on: false,
    },
    KindSpec {
        kind: NotifyKind::Digest,
        word: "digest",
        summary: "at 09:00 on weekdays (your Slack time zone), the pull requests waiting for your review",
        default_on: false,
    },
];

impl NotifyKind {
    pub fn spec(self) -> &'static KindSpec {
        KINDS
            .iter()
            .find(|spec| spec.kind == self)
            .expect("every kind has a row in KINDS")
    }
}

/// The people `activity` concerns, each with a reason, most specific first; a person may
/// appear more than once (mentioned in a comment on their own pull request), and the
/// first reason their settings let through is the one to use. The actor is left out,
/// except of a pipeline's result; a mention may still name the actor by nickname, which
/// only the router can tell, so it leaves out the actor's Slack user too.
pub fn concerned(activity: &Activity) -> Vec<(Person, Reason)> {
    let mut found: Vec<(Person, Reason)> = Vec::new();
    let account = |actor: &Option<Actor>| actor.as_ref().and_then(|a| a.uuid.clone());
    let author = |pull_request: &crate::bitbucket::PullRequestRef| account(&pull_request.author);
    match &activity.kind {
        ActivityKind::PullRequestReviewRequested { reviewer, .. } => {
            found.extend(
                reviewer
                    .uuid
                    .clone()
                    .map(|uuid| (Person::Account(uuid), Reason::ReviewRequested)),
            );
        }
        ActivityKind::PullRequestUpdated { pull_request, .. } => {
            for uuid in &pull_request.reviewers {
                found.push((Person::Account(uuid.clone()), Reason::ReviewedUpdated));
            }
        }
        ActivityKind::PullRequestApproved { pull_request } => {
            found.extend(author(pull_request).map(|a| (Person::Account(a), Reason::Approved)));
        }
        ActivityKind::PullRequestChangesRequested { pull_request } => {
            found.extend(
                author(pull_request).map(|a| (Person::Account(a), Reason::ChangesRequested)),
            );
        }
        ActivityKind::PullRequestCommented {
            pull_request,
            comment,
        } => {
            found.extend(
                account(&comment.parent_author).map(|a| (Person::Account(a), Reason::Replied)),
            );
            for mention in &comment.mentions {
                found.push((Person::Mentioned(mention.clone()), Reason::Mentioned));
            }
            found.extend(author(pull_request).map(|a| (Person::Account(a), Reason::Commented)));
        }
        ActivityKind::IssueCommented { comment, .. } => {
            found.extend(
                account(&comment.parent_author).map(|a| (Person::Account(a), Reason::Replied)),
            );
            for mention in &comment.mentions {
                found.push((Person::Mentioned(mention.clone()), Reason::Mentioned));
            }
        }
        ActivityKind::PullRequestMerged { pull_request } => {
            found.extend(author(pull_request).map(|a| (Person::Account(a), Reason::Merged)));
        }
        ActivityKind::PullRequestDeclined { pull_request, .. } => {
            found.extend(author(pull_request).map(|a| (Person::Account(a), Reason::Declined)));
        }
        ActivityKind::PipelineFailed { pipeline } => {
            found.extend(
                account(&pipeline.pull_request_author)
                    .map(|a| (Person::Account(a), Reason::BuildFailed)),
            );
        }
        ActivityKind::PipelineFixed { pipeline } => {
            found.extend(
                account(&pipeline.pull_request_author)
                    .map(|a| (Person::Account(a), Reason::BuildFixed)),
            );
        }
        ActivityKind::BuildFailed { build } => {
            found.extend(
                build
                    .pull_request
                    .as_ref()
                    .and_then(author)
                    .map(|a| (Person::Account(a), Reason::BuildFailed)),
            );
        }
        ActivityKind::BuildFixed { build } => {
            found.extend(
                build
                    .pull_request
                    .as_ref()
                    .and_then(author)
                    .map(|a| (Person::Account(a), Reason::BuildFixed)),
            );
        }
        _ => {}
    }
    let actor = account(&activity.actor);
    found.retain(|(person, reason)| {
        reason.tells_the_actor()
            || !matches!((person, &actor), (Person::Account(uuid), Some(actor)) if uuid == actor)
    });
    found
}

/// Whether a mention as written (see [`Person::Mentioned`]) names this Bitbucket account:
/// `{...}` its uuid (braces included) or its account id, a bare word its nickname (any
/// case).
pub fn mention_names(
    mention: &str,
    uuid: &str,
    account_id: Option<&str>,
    nickname: Option<&str>,
) -> bool {
    match mention
        .strip_prefix('{')
        .and_then(|inner| inner.strip_suffix('}'))
    {
        Some(inner) => mention == uuid || account_id == Some(inner),
        None => nickname.is_some_and(|nickname| nickname.eq_ignore_ascii_case(mention)),
    }
}

/// One person's settings in one workspace. Only what they changed is stored, so a kind
/// they never touched follows the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalSettings {
    #[serde(default)]
    pub turned_on: BTreeSet<NotifyKind>,
    #[serde(default)]
    pub turned_off: BTreeSet<NotifyKind>,
    /// Nothing is sent before this.
    #[serde(default)]
    pub muted_until: Option<Timestamp>,
}

impl PersonalSettings {
    pub fn is_on(&self, kind: NotifyKind) -> bool {
        if self.turned_on.contains(&kind) {
            true
        } else if self.turned_off.contains(&kind) {
            false
        } else {
            kind.spec().default_on
        }
    }

    pub fn set(&mut self, kind: NotifyKind, on: bool) {
        self.turned_on.remove(&kind);
        self.turned_off.remove(&kind);
        if on != kind.spec().default_on {
            if on {
                self.turned_on.insert(kind);
            } else {
                self.turned_off.insert(kind);
            }
        }
    }

    pub fn is_muted(&self, now: Timestamp) -> bool {
        self.muted_until.is_some_and(|until| now < until)
    }

    /// Whether a DM for `reason` goes out at `now`.
    pub fn wants(&self, reason: Reason, now: Timestamp) -> bool {
        !self.is_muted(now) && self.is_on(reason.kind())
    }
}

/// `/bitbucket notify ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyCommand {
    /// List the settings.
    Show,
    Set {
        kind: NotifyKind,
        on: bool,
    },
    /// Mute for this long (from when the command is handled).
    Mute(SignedDuration),
    Unmute,
}

/// The longest mute: a mute always ends.
pub const MAX_MUTE: SignedDuration = SignedDuration::from_hours(30 * 24);

/// The usage line of `/bitbucket notify`.
pub const NOTIFY_USAGE: &str = "/bitbucket notify [on|off <kind> | mute <duration> | unmute]";

fn kind_words() -> String {
    KINDS
        .iter()
        .map(|spec| format!("`{}`", spec.word))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses the words after `notify`, or says what is wrong with them.
pub fn parse_notify(args: &[&str]) -> Result<NotifyCommand, String> {
    let lower: Vec<String> = args.iter().map(|word| word.to_lowercase()).collect();
    let words: Vec<&str> = lower.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] => Ok(NotifyCommand::Show),
        [switch @ ("on" | "off")] => {
            Err(format!("say which kind to turn {switch}: {}", kind_words()))
        }
        [switch @ ("on" | "off"), kind] => {
            let spec = KINDS
                .iter()
                .find(|spec| spec.word == *kind)
                .ok_or_else(|| {
                    format!(
                        "`{}` is not a kind of notification; the kinds are {}",
                        escape_inline_code(kind, 40),
                        kind_words()
                    )
                })?;
            Ok(NotifyCommand::Set {
                kind: spec.kind,
                on: *switch == "on",
            })
        }
        ["mute"] => Err("say for how long, like `mute 2h`: a mute always ends".into()),
        ["mute", duration] => parse_mute(duration).map(NotifyCommand::Mute),
        ["unmute"] => Ok(NotifyCommand::Unmute),
        [first, ..] if matches!(*first, "on" | "off" | "mute" | "unmute") => Err(format!(
            "`{first}` takes {}",
            if *first == "unmute" {
                "no more words"
            } else {
                "one word"
            }
        )),
        [first, ..] => Err(format!(
            "`{}` is not a setting; say `on <kind>`, `off <kind>`, `mute <duration>` or `unmute`",
            escape_inline_code(first, 40)
        )),
    }
}

/// `30m`, `2h`, `1h30m`, `3d`, `1w`: at least a minute, at most [`MAX_MUTE`].
pub fn parse_mute(text: &str) -> Result<SignedDuration, String> {
    let bad = || {
        format!(
            "`{}` is not a duration; say a number and a unit, like `30m`, `2h`, `3d` or `1w`",
            escape_inline_code(text, 40)
        )
    };
    let mut total = SignedDuration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return Err(bad());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .map(char::len_utf8)
            .sum::<usize>();
        let unit_secs = match &rest[..unit_len] {
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(SignedDuration::from_secs(number.saturating_mul(unit_secs)))
            .ok_or_else(bad)?;
    }
    if total < SignedDuration::from_mins(1) {
        return Err("a mute lasts at least a minute".into());
    }
    if total > MAX_MUTE {
        return Err(format!(
            "`{}` is longer than the longest mute, 30 days",
            escape_inline_code(text, 40)
        ));
    }
    Ok(total)
}

/// `/bitbucket notify`: each kind on or off, and the mute.
pub fn settings_reply(settings: &PersonalSettings, now: Timestamp) -> Message {
    let lines: Vec<String> = KINDS
        .iter()
        .map(|spec| {
            let state = if settings.is_on(spec.kind) {
                "on"
            } else {
                "off"
            };
            format!("`{}` *{state}*: {}", spec.word, spec.summary)
        })
        .collect();
    let mute = match settings.muted_until {
        Some(until) if now < until => format!(
            "Muted until {}: nothing is sent before then. `/bitbucket notify unmute` ends it.",
            until.strftime("%Y-%m-%d %H:%M UTC")
        ),
        _ => "Not muted.".to_string(),
    };
    Message {
        text: "Your personal notifications".into(),
        sections: vec![
            "*Your personal notifications* come by direct message, from repositories a channel of this workspace subscribes to.".into(),
            lines.join("\n"),
            format!(
                "{mute}\nChange them with `/bitbucket notify on <kind>`, `/bitbucket notify off <kind>` or `/bitbucket notify mute 2h`."
            ),
        ],
        buttons: Vec::new(),
    }
}

/// The confirmation of a change.
pub fn changed_reply(command: &NotifyCommand, settings: &PersonalSettings) -> Message {
    let text = match command {
        NotifyCommand::Show => return settings_reply(settings, Timestamp::UNIX_EPOCH),
        NotifyCommand::Set { kind, on } => format!(
            "Personal notifications for `{}` are now *{}*.",
            kind.spec().word,
            if *on { "on" } else { "off" }
        ),
        NotifyCommand::Mute(_) => match settings.muted_until {
            Some(until) => format!(
                "Personal notifications are muted until {}. `/bitbucket notify unmute` ends it sooner.",
                until.strftime("%Y-%m-%d %H:%M UTC")
            ),
            None => "Personal notifications are muted.".to_string(),
        },
        NotifyCommand::Unmute => "Personal notifications are no longer muted.".to_string(),
    };
    Message::text(text)
}

/// The settings after `command` at `now`.
pub fn apply(
    mut settings: PersonalSettings,
    command: &NotifyCommand,
    now: Timestamp,
) -> PersonalSettings {
    match command {
        NotifyCommand::Show => {}
        NotifyCommand::Set { kind, on } => settings.set(*kind, *on),
        NotifyCommand::Mute(duration) => {
            settings.muted_until = now.checked_add(*duration).ok();
        }
        NotifyCommand::Unmute => settings.muted_until = None,
    }
    settings
}

/// The DM for one person: the channel's rendering under a heading saying why it is
/// theirs, never threaded and never updating a parent (buttons stay).
pub fn personal_notification(reason: Reason, rendered: &Notification) -> Notification {
    let mut message = rendered.message.clone();
    message.text = format!("{}: {}", reason.heading(), message.text);
    message
        .sections
        .insert(0, format!("*{}*", reason.heading()));
    Notification {
        message: message.within_limits(),
        thread_key: None,
        parent_update: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitbucket::{CommentRef, PipelineRef, PullRequestRef};

    fn who(name: &str) -> Option<Actor> {
        Some(Actor {
            display_name: name.into(),
            uuid: Some(format!("{{{name}}}")),
        })
    }

    fn pull_request() -> PullRequestRef {
        PullRequestRef {
            id: 7,
            title: "Add retries".into(),
            link: None,
            author: who("ada"),
            source_branch: Some("feature".into()),
            destination_branch: Some("main".into()),
            reviewers: vec!["{bob}".into(), "{cy}".into()],
        }
    }

    fn comment(parent: Option<&str>, mentions: &[&str]) -> CommentRef {
        CommentRef {
            id: 3,
            excerpt: "hi".into(),
            link: None,
            inline_path: None,
            inline_line: None,
            parent_author: parent.and_then(who),
            mentions: mentions.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn pipeline() -> PipelineRef {
        PipelineRef {
            uuid: "{p}".into(),
            build_number: 1,
            branch: Some("feature".into()),
            commit: None,
            duration_secs: None,
            pull_request: Some(7),
            result: None,
            pull_request_author: who("ada"),
        }
    }

    fn by(actor: &str, kind: ActivityKind) -> Activity {
        Activity {
            id: "x".into(),
            repository: "acme/api".into(),
            occurred_at: Timestamp::UNIX_EPOCH,
            actor: who(actor),
            link: None,
            kind,
        }
    }

    fn account(name: &str, reason: Reason) -> (Person, Reason) {
        (Person::Account(format!("{{{name}}}")), reason)
    }

    #[test]
    fn who_an_activity_concerns() {
        let pr = pull_request;
        type Row = (&'static str, Activity, Vec<(Person, Reason)>);
        let table: Vec<Row> = vec![
            (
                "the reviewer asked",
                by(
                    "ada",
                    ActivityKind::PullRequestReviewRequested {
                        pull_request: pr(),
                        reviewer: who("bob").expect("actor"),
                    },
                ),
                vec![account("bob", Reason::ReviewRequested)],
            ),
            (
                "adding yourself is your own action",
                by(
                    "bob",
                    ActivityKind::PullRequestReviewRequested {
                        pull_request: pr(),
                        reviewer: who("bob").expect("actor"),
                    },
                ),
                vec![],
            ),
            (
                "new commits: the reviewers",
                by(
                    "ada",
                    ActivityKind::PullRequestUpdated {
                        pull_request: pr(),
                        previous_head: None,
                        head: "h".into(),
                    },
                ),
                vec![
                    account("bob", Reason::ReviewedUpdated),
                    account("cy", Reason::ReviewedUpdated),
                ],
            ),
            (
                "approved: the author",
                by(
                    "bob",
                    ActivityKind::PullRequestApproved { pull_request: pr() },
                ),
                vec![account("ada", Reason::Approved)],
            ),
            (
                "changes requested: the author",
                by(
                    "bob",
                    ActivityKind::PullRequestChangesRequested { pull_request: pr() },
                ),
                vec![account("ada", Reason::ChangesRequested)],
            ),
            (
                "a reply mentioning someone: replied, mentioned, then the author",
                by(
                    "bob",
                    ActivityKind::PullRequestCommented {
                        pull_request: pr(),
                        comment: comment(Some("cy"), &["dee", "{557058:x}"]),
                    },
                ),
                vec![
                    account("cy", Reason::Replied),
                    (Person::Mentioned("dee".into()), Reason::Mentioned),
                    (Person::Mentioned("{557058:x}".into()), Reason::Mentioned),
                    account("ada", Reason::Commented),
                ],
            ),
            (
                "the author commenting on their own pull request",
                by(
                    "ada",
                    ActivityKind::PullRequestCommented {
                        pull_request: pr(),
                        comment: comment(Some("ada"), &[]),
                    },
                ),
                vec![],
            ),
            (
                "merged by someone else",
                by(
                    "bob",
                    ActivityKind::PullRequestMerged { pull_request: pr() },
                ),
                vec![account("ada", Reason::Merged)],
            ),
            (
                "merged by the author",
                by(
                    "ada",
                    ActivityKind::PullRequestMerged { pull_request: pr() },
                ),
                vec![],
            ),
            (
                "declined",
                by(
                    "bob",
                    ActivityKind::PullRequestDeclined {
                        pull_request: pr(),
                        reason: None,
                    },
                ),
                vec![account("ada", Reason::Declined)],
            ),
            (
                "a failed pipeline is news even to whoever started it",
                by(
                    "ada",
                    ActivityKind::PipelineFailed {
                        pipeline: pipeline(),
                    },
                ),
                vec![account("ada", Reason::BuildFailed)],
            ),
            (
                "fixed",
                by(
                    "bob",
                    ActivityKind::PipelineFixed {
                        pipeline: pipeline(),
                    },
                ),
                vec![account("ada", Reason::BuildFixed)],
            ),
            (
                "a commit status failing on a pull request: its author",
                by(
                    "bob",
                    ActivityKind::BuildFailed {
                        build: crate::bitbucket::BuildRef {
                            key: "ci".into(),
                            name: None,
                            commit: "abc".into(),
                            branch: Some("feature".into()),
                            url: None,
                            pull_request: Some(pr()),
                        },
                    },
                ),
                vec![account("ada", Reason::BuildFailed)],
            ),
            (
                "a succeeded pipeline is nobody's news",
                by(
                    "bob",
                    ActivityKind::PipelineSucceeded {
                        pipeline: pipeline(),
                    },
                ),
                vec![],
            ),
            (
                "a new pull request concerns nobody yet (its reviewers come as requests)",
                by(
                    "ada",
                    ActivityKind::PullRequestCreated { pull_request: pr() },
                ),
                vec![],
            ),
        ];
        for (what, activity, expected) in table {
            assert_eq!(concerned(&activity), expected, "{what}");
        }
    }

    #[test]
    fn mentions_name_accounts_by_uuid_account_id_or_nickname() {
        let named = |mention: &str| mention_names(mention, "{u-1}", Some("557058:x"), Some("Ada"));
        assert!(named("{u-1}"));
        assert!(named("{557058:x}"));
        assert!(named("ada"));
        assert!(!named("bob"));
        assert!(!named("{557058:y}"));
        assert!(!mention_names("ada", "{u}", None, None));
    }

    #[test]
    fn defaults_switches_and_mutes() {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        let mut settings = PersonalSettings::default();
        let on: Vec<&str> = KINDS
            .iter()
            .filter(|spec| settings.is_on(spec.kind))
            .map(|spec| spec.word)
            .collect();
        assert_eq!(on, vec!["reviews", "my-reviews", "merges", "builds"]);
        assert!(settings.wants(Reason::ReviewRequested, now));
        assert!(!settings.wants(Reason::Mentioned, now));
        settings.set(NotifyKind::Mentions, true);
        settings.set(NotifyKind::Reviews, false);
        assert!(settings.wants(Reason::Mentioned, now));
        assert!(!settings.wants(Reason::ReviewedUpdated, now));
        settings.set(NotifyKind::Reviews, true);
        assert!(settings.turned_on.len() == 1 && settings.turned_off.is_empty());

        let muted = apply(
            settings.clone(),
            &NotifyCommand::Mute(SignedDuration::from_hours(2)),
            now,
        );
        assert!(!muted.wants(Reason::Approved, now));
        let later = now + SignedDuration::from_hours(2);
        assert!(muted.wants(Reason::Approved, later), "the mute ends");
        let unmuted = apply(muted, &NotifyCommand::Unmute, now);
        assert!(unmuted.wants(Reason::Approved, now));
    }

    #[test]
    fn parses_the_notify_words_and_names_what_is_wrong() {
        assert_eq!(parse_notify(&[]), Ok(NotifyCommand::Show));
        assert_eq!(
            parse_notify(&["OFF", "Reviews"]),
            Ok(NotifyCommand::Set {
                kind: NotifyKind::Reviews,
                on: false
            })
        );
        assert_eq!(
            parse_notify(&["on", "my-reviews"]),
            Ok(NotifyCommand::Set {
                kind: NotifyKind::MyReviews,
                on: true
            })
        );
        assert_eq!(
            parse_notify(&["mute", "1h30m"]),
            Ok(NotifyCommand::Mute(SignedDuration::from_mins(90)))
        );
        assert_eq!(
            parse_notify(&["mute", "1w"]),
            Ok(NotifyCommand::Mute(SignedDuration::from_hours(168)))
        );
        assert_eq!(parse_notify(&["unmute"]), Ok(NotifyCommand::Unmute));
        for (words, expected) in [
            (&["on"][..], "say which kind to turn on"),
            (&["off", "pizza"][..], "`pizza` is not a kind"),
            (&["mute"][..], "a mute always ends"),
            (&["mute", "soon"][..], "`soon` is not a duration"),
            (&["mute", "2x"][..], "`2x` is not a duration"),
            (&["mute", "0m"][..], "at least a minute"),
            (&["mute", "31d"][..], "longest mute, 30 days"),
            (&["unmute", "now"][..], "`unmute` takes no more words"),
            (&["loud"][..], "`loud` is not a setting"),
        ] {
            let error = parse_notify(words).expect_err("refused");
            assert!(error.contains(expected), "{words:?}: {error}");
        }
    }

    #[test]
    fn a_dm_says_why_and_never_threads() {
        let rendered = Notification {
            message: Message::text("*bob* approved #7"),
            thread_key: Some("pr:7".into()),
            parent_update: Some(Message::text("parent")),
        };
        let dm = personal_notification(Reason::Approved, &rendered);
        assert_eq!(dm.message.sections[0], "*Your pull request was approved*");
        assert!(
            dm.message
                .text
                .starts_with("Your pull request was approved: ")
        );
        assert_eq!(dm.thread_key, None);
        assert_eq!(dm.parent_update, None);
    }

    #[test]
    fn the_settings_list_every_kind_and_the_mute() {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        let settings = apply(
            PersonalSettings::default(),
            &NotifyCommand::Mute(SignedDuration::from_hours(1)),
            now,
        );
        let text = settings_reply(&settings, now).sections.join("\n");
        for spec in KINDS {
            assert!(text.contains(&format!("`{}`", spec.word)), "{text}");
        }
        assert!(text.contains("Muted until 2027-01-15"), "{text}");
    }
}
