//! The app's Home tab as plain facts ([`HomeFacts`]) and their Block Kit JSON for
//! `views.publish` ([`home_view`]).
//!
//! Pure: facts in, JSON out; no I/O, no clock (ages come as durations, dates as
//! timestamps in the facts). The only place that decides how the Home tab looks; what it
//! shows (whose pull requests, which subscriptions, who is an admin) is decided by
//! `app::home`. Every Bitbucket text is escaped for mrkdwn, every section stays under
//! 3,000 characters, and the whole view under Slack's 100 blocks: long lists end with
//! "and N more" and where to see them all. Never names a scope check or a token.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::bitbucket::open_pulls::BuildState;
use crate::message::{Button, MAX_SECTION_CHARS, escape, truncate};
use crate::notify::personal::{KINDS, PersonalSettings};

/// Every action id of the Home tab's own buttons starts with this.
pub const ACTION_PREFIX: &str = "home_";
/// Turns one personal-notification kind on or off; the value is the kind's word.
pub const TOGGLE_KIND_ACTION_ID: &str = "home_toggle_kind";
/// Ends a mute.
pub const UNMUTE_ACTION_ID: &str = "home_unmute";
/// Removes the person's Bitbucket link (as `/bitbucket logout`).
pub const DISCONNECT_ACTION_ID: &str = "home_disconnect";
/// Removes one subscription (admins only); the value is [`unsubscribe_value`].
pub const UNSUBSCRIBE_ACTION_ID: &str = "home_unsubscribe";

/// Slack's limit of blocks in one view.
pub const MAX_VIEW_BLOCKS: usize = 100;
/// Pull requests shown per list before "and N more".
pub const MAX_PULL_REQUESTS_SHOWN: usize = 10;
/// A header block's text limit.
const MAX_HEADER_CHARS: usize = 150;
/// A context block's text limit.
const MAX_CONTEXT_CHARS: usize = 2000;
/// A pull request's title as shown in a list.
const MAX_TITLE_CHARS: usize = 150;
/// Where a person sees every pull request of theirs on Bitbucket.
const BITBUCKET_DASHBOARD: &str = "https://bitbucket.org/dashboard/pullrequests";

/// Everything the Home tab shows to one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeFacts {
    /// The workspace has not granted the home tab's permissions yet: what is waiting on
    /// an admin, and nothing of the dashboard.
    WaitingOnAdmin(WaitingFacts),
    Dashboard {
        person: PersonFacts,
        /// Shown to the workspace's admins only.
        admin: Option<AdminFacts>,
    },
}

/// Before the permission upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingFacts {
    /// Names of the features the workspace cannot use yet (the home tab among them).
    pub features: Vec<String>,
    /// The scopes they lack.
    pub missing_scopes: Vec<String>,
    /// Slack user ids of the admins who can update the permissions.
    pub admins: Vec<String>,
    /// The viewer is one of them: they get the **Update permissions** button.
    pub viewer_is_admin: bool,
    /// The campaign's phase in words (`upgrade::campaign::phase_summary`).
    pub phase: String,
}

/// The person's own part of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersonFacts {
    /// No Bitbucket account linked; `connect` is the signed login button (`None` when
    /// linking is not configured here).
    Unlinked {
        connect: Option<Button>,
    },
    /// Linked, but Bitbucket no longer accepts the link's tokens.
    Stale {
        display_name: String,
        connect: Option<Button>,
    },
    Linked(Box<LinkedFacts>),
}

/// A linked person's dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedFacts {
    /// Their Bitbucket display name.
    pub display_name: String,
    /// Pull requests waiting for their review, longest waiting first.
    pub reviews: Vec<PullRequestLine>,
    /// Their own open pull requests.
    pub own: Vec<PullRequestLine>,
    /// What the lists were read from.
    pub coverage: Coverage,
    pub settings: PersonalSettings,
    /// For the mute's state.
    pub now: Timestamp,
}

/// How much of the workspace's repositories the lists cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Repositories read.
    pub read: usize,
    /// Repositories this workspace follows that were left out of this refresh (the bound
    /// per refresh).
    pub left_out: usize,
    /// Repositories whose read failed for now (not a refusal: those are dropped quietly).
    pub failed: usize,
    /// Own pull requests whose build state was not read (the bound per refresh).
    pub builds_not_read: usize,
}

/// One pull request in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestLine {
    /// `workspace/repo`.
    pub repository: String,
    pub id: u64,
    pub title: String,
    pub link: Option<String>,
    /// The author's display name.
    pub author: Option<String>,
    pub age: SignedDuration,
    /// Approvals so far.
    pub approvals: usize,
    /// Reviewers asked.
    pub reviewers: usize,
    pub draft: bool,
    /// The head commit's build state, when it was read and anything reported.
    pub build: Option<BuildState>,
}

/// The admin's part: the workspace's permissions and its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminFacts {
    /// `current`, `outdated` or `classic`.
    pub permission_level: String,
    pub missing_scopes: Vec<String>,
    /// The campaign's phase in words.
    pub phase: String,
    /// Every subscription of the workspace, in the store's order.
    pub subscriptions: Vec<SubscriptionLine>,
}

/// One subscription, as an admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionLine {
    pub channel_id: String,
    /// `workspace/repo` or `workspace`.
    pub target: String,
    /// `notify::Subscription::describe`: target, features, filters, paused and why
    /// (already mrkdwn, already escaped).
    pub description: String,
}

/// The value of an Unsubscribe button: the channel and the target.
pub fn unsubscribe_value(channel_id: &str, target: &str) -> String {
    format!("{channel_id} {target}")
}

/// The channel and target of an Unsubscribe button's value.
pub fn parse_unsubscribe_value(value: &str) -> Option<(&str, &str)> {
    let (channel, target) = value.split_once(' ')?;
    (!channel.is_empty() && !target.is_empty() && !target.contains(' '))
        .then_some((channel, target))
}

/// The `view` of `views.publish`.
pub fn home_view(facts: &HomeFacts) -> Value {
    let mut blocks = Blocks::default();
    blocks.push(header("Bitbucket"));
    match facts {
        HomeFacts::WaitingOnAdmin(waiting) => waiting_blocks(&mut blocks, waiting),
        HomeFacts::Dashboard { person, admin } => {
            person_blocks(&mut blocks, person);
            if let Some(admin) = admin {
                admin_blocks(&mut blocks, admin);
            }
        }
    }
    json!({"type": "home", "blocks": blocks.finish()})
}

/// The view's blocks, kept within [`MAX_VIEW_BLOCKS`].
#[derive(Default)]
struct Blocks(Vec<Value>);

impl Blocks {
    fn push(&mut self, block: Value) {
        self.0.push(block);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Never more than Slack takes; the builders budget their lists so this cut is a
    /// last resort that says so.
    fn finish(mut self) -> Vec<Value> {
        if self.0.len() > MAX_VIEW_BLOCKS {
            self.0.truncate(MAX_VIEW_BLOCKS - 1);
            self.0.push(context("The rest of this page did not fit."));
        }
        self.0
    }
}

fn header(text: &str) -> Value {
    json!({"type": "header", "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_CHARS)}})
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_CHARS)}})
}

fn section_with(text: &str, accessory: Value) -> Value {
    let mut block = section(text);
    block["accessory"] = accessory;
    block
}

fn context(text: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, MAX_CONTEXT_CHARS)}]})
}

fn divider() -> Value {
    json!({"type": "divider"})
}

fn plain(text: &str) -> Value {
    json!({"type": "plain_text", "text": truncate(text, crate::message::MAX_BUTTON_TEXT_CHARS)})
}

/// A button element; `style` is `primary` or `danger`.
fn button(text: &str, action_id: &str, value: Option<&str>, style: Option<&str>) -> Value {
    let mut element = json!({"type": "button", "text": plain(text), "action_id": action_id});
    if let Some(value) = value {
        element["value"] = json!(truncate(value, crate::message::MAX_BUTTON_VALUE_CHARS));
    }
    if let Some(style) = style {
        element["style"] = json!(style);
    }
    element
}

/// A confirmation dialog for a button.
fn confirmed(mut element: Value, title: &str, text: &str, confirm: &str) -> Value {
    element["confirm"] = json!({
        "title": {"type": "plain_text", "text": truncate(title, 100)},
        "text": {"type": "mrkdwn", "text": truncate(text, 300)},
        "confirm": {"type": "plain_text", "text": truncate(confirm, 30)},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger"
    });
    element
}

/// A message button (a URL button, like the signed login link) as a view element.
fn link_button(button: &Button) -> Value {
    let mut element =
        json!({"type": "button", "text": plain(&button.text), "action_id": button.action_id});
    if let Some(url) = &button.url {
        element["url"] = json!(truncate(url, crate::message::MAX_BUTTON_URL_CHARS));
    }
    if let Some(value) = &button.value {
        element["value"] = json!(value);
    }
    if button.primary {
        element["style"] = json!("primary");
    }
    element
}

fn update_permissions_button() -> Value {
    button(
        "Update permissions",
        crate::upgrade::messages::UPDATE_PERMISSIONS_ACTION_ID,
        None,
        Some("primary"),
    )
}

fn mentions(users: &[String]) -> String {
    users
        .iter()
        .map(|user| format!("<@{}>", escape(user)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn inline_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| crate::message::code(item))
        .collect::<Vec<_>>()
        .join(", ")
}

fn waiting_blocks(blocks: &mut Blocks, waiting: &WaitingFacts) {
    blocks.push(section(&format!(
        "*Waiting on an admin.* This workspace has not granted the permissions this version of Bitbucket for Slack needs yet, so the Home tab cannot show your pull requests, reviews and settings. Missing: {}.",
        inline_list(&waiting.missing_scopes)
    )));
    if !waiting.features.is_empty() {
        blocks.push(section(&format!(
            "*Waiting for the update:* {}.",
            waiting.features.join(", ")
        )));
    }
    let who = if waiting.admins.is_empty() {
        "A Slack admin of this workspace can update them.".to_string()
    } else {
        format!("Admins who can update them: {}.", mentions(&waiting.admins))
    };
    let text = format!("{who}\nThe update is {}", waiting.phase);
    if waiting.viewer_is_admin {
        blocks.push(section_with(
            &format!("{text}\nYou are an admin: *Update permissions* starts it."),
            update_permissions_button(),
        ));
    } else {
        blocks.push(section(&text));
    }
}

const WHAT_IT_DOES: &str = "*Bitbucket for Slack* posts what happens in your Bitbucket repositories into the channels that subscribe to them, and tells you by direct message when a pull request needs you. Connect your Bitbucket account to see the pull requests waiting for your review and your own here, to be mentioned in notifications, and to approve or merge from Slack.";

fn person_blocks(blocks: &mut Blocks, person: &PersonFacts) {
    match person {
        PersonFacts::Unlinked { connect } => {
            blocks.push(section(WHAT_IT_DOES));
            match connect {
                Some(connect) => blocks.push(section_with(
                    "Connect your account (the link works once, for 10 minutes):",
                    link_button(connect),
                )),
                None => blocks.push(section(
                    "Linking Bitbucket accounts is not set up here: ask the person who runs bitbucket-slack to configure it.",
                )),
            }
        }
        PersonFacts::Stale {
            display_name,
            connect,
        } => {
            let text = format!(
                "You were connected to Bitbucket as *{}*, but Bitbucket no longer accepts that link. Log in again to see your pull requests here.",
                escape(&truncate(display_name, 80))
            );
            match connect {
                Some(connect) => blocks.push(section_with(&text, link_button(connect))),
                None => blocks.push(section(&text)),
            }
        }
        PersonFacts::Linked(linked) => linked_blocks(blocks, linked),
    }
}

fn linked_blocks(blocks: &mut Blocks, linked: &LinkedFacts) {
    let disconnect = confirmed(
        button("Disconnect", DISCONNECT_ACTION_ID, None, Some("danger")),
        "Disconnect Bitbucket?",
        "Your Bitbucket account is unlinked and its tokens are deleted. Notifications stop mentioning you.",
        "Disconnect",
    );
    blocks.push(section_with(
        &format!(
            "Connected to Bitbucket as *{}*.",
            escape(&truncate(&linked.display_name, 80))
        ),
        disconnect,
    ));
    blocks.push(divider());
    pull_request_list(
        blocks,
        &format!("Waiting for your review ({})", linked.reviews.len()),
        &linked.reviews,
        "Nothing is waiting for your review.",
        false,
    );
    blocks.push(divider());
    pull_request_list(
        blocks,
        &format!("Your open pull requests ({})", linked.own.len()),
        &linked.own,
        "You have no open pull requests.",
        true,
    );
    if let Some(note) = coverage_note(&linked.coverage) {
        blocks.push(context(&note));
    }
    blocks.push(divider());
    settings_blocks(blocks, &linked.settings, linked.now);
}

fn coverage_note(coverage: &Coverage) -> Option<String> {
    let mut notes = Vec::new();
    if coverage.left_out > 0 {
        notes.push(format!(
            "Read {} of the {} repositories this workspace follows; {} more were left out of this refresh.",
            coverage.read,
            coverage.read + coverage.left_out + coverage.failed,
            coverage.left_out
        ));
    }
    if coverage.failed > 0 {
        notes.push(format!(
            "{} {} could not be read just now; open this tab again in a minute.",
            coverage.failed,
            if coverage.failed == 1 {
                "repository"
            } else {
                "repositories"
            }
        ));
    }
    if coverage.builds_not_read > 0 {
        notes.push(format!(
            "Build states are shown for your {MAX_BUILDS_READ} most recently updated pull requests."
        ));
    }
    (!notes.is_empty()).then(|| notes.join(" "))
}

/// How many of a person's own pull requests have their build state read per refresh
/// (`app::home` keeps to it; the note says the number).
pub const MAX_BUILDS_READ: usize = 5;

fn pull_request_list(
    blocks: &mut Blocks,
    title: &str,
    lines: &[PullRequestLine],
    empty: &str,
    own: bool,
) {
    blocks.push(section(&format!("*{title}*")));
    if lines.is_empty() {
        blocks.push(context(empty));
        return;
    }
    for line in lines.iter().take(MAX_PULL_REQUESTS_SHOWN) {
        blocks.push(section(&pull_request_text(line, own)));
    }
    if lines.len() > MAX_PULL_REQUESTS_SHOWN {
        blocks.push(context(&format!(
            "and {} more: see them all at <{BITBUCKET_DASHBOARD}|your Bitbucket dashboard>.",
            lines.len() - MAX_PULL_REQUESTS_SHOWN
        )));
    }
}

fn pull_request_text(line: &PullRequestLine, own: bool) -> String {
    let label = format!("#{} {}", line.id, truncate(&line.title, MAX_TITLE_CHARS));
    let title = match &line.link {
        Some(url) if !url.contains(['<', '>', '|', ' ']) => {
            format!("<{url}|{}>", escape(&label))
        }
        _ => escape(&label),
    };
    let mut facts = vec![crate::message::code(&line.repository)];
    if !own {
        if let Some(author) = &line.author {
            facts.push(format!("by *{}*", escape(&truncate(author, 80))));
        }
    }
    facts.push(format!("open {}", age_words(line.age)));
    if own {
        facts.push(if line.reviewers > 0 {
            format!("approvals {} of {}", line.approvals, line.reviewers)
        } else {
            format!("approvals {}", line.approvals)
        });
        if let Some(build) = line.build {
            facts.push(build_words(build).to_string());
        }
        if line.draft {
            facts.push("draft".into());
        }
    } else {
        facts.push(format!(
            "{} {} so far",
            line.approvals,
            if line.approvals == 1 {
                "approval"
            } else {
                "approvals"
            }
        ));
    }
    format!("{title}\n{}", facts.join(" · "))
}

fn build_words(build: BuildState) -> &'static str {
    match build {
        BuildState::Passed => ":white_check_mark: build passed",
        BuildState::Failed => ":x: build failed",
        BuildState::Running => ":hourglass_flowing_sand: build running",
        BuildState::Stopped => ":black_square_for_stop: build stopped",
    }
}

/// "3 days", "5 hours", "12 minutes", "just now".
fn age_words(age: SignedDuration) -> String {
    let minutes = age.as_secs() / 60;
    let (n, unit) = if minutes >= 2 * 24 * 60 {
        (minutes / (24 * 60), "day")
    } else if minutes >= 120 {
        (minutes / 60, "hour")
    } else if minutes >= 1 {
        (minutes, "minute")
    } else {
        return "just now".into();
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn settings_blocks(blocks: &mut Blocks, settings: &PersonalSettings, now: Timestamp) {
    blocks.push(section(
        "*Your notifications by direct message*, from repositories a channel of this workspace subscribes to:",
    ));
    for spec in KINDS {
        let on = settings.is_on(spec.kind);
        let (state, click) = if on {
            ("on", "Turn off")
        } else {
            ("off", "Turn on")
        };
        blocks.push(section_with(
            &format!("`{}` *{state}*: {}", spec.word, spec.summary),
            button(click, TOGGLE_KIND_ACTION_ID, Some(spec.word), None),
        ));
    }
    match settings.muted_until {
        Some(until) if now < until => blocks.push(section_with(
            &format!(
                ":zipper_mouth_face: Muted until {}: nothing is sent before then.",
                until.strftime("%Y-%m-%d %H:%M UTC")
            ),
            button("Unmute", UNMUTE_ACTION_ID, None, None),
        )),
        _ => blocks.push(context(
            "Not muted. `/bitbucket notify mute 2h` pauses them for a while.",
        )),
    }
}

fn admin_blocks(blocks: &mut Blocks, admin: &AdminFacts) {
    blocks.push(divider());
    blocks.push(header("Workspace (admins)"));
    let missing = if admin.missing_scopes.is_empty() {
        String::new()
    } else {
        format!(" Missing: {}.", inline_list(&admin.missing_scopes))
    };
    let permissions = format!(
        "*Permissions:* {}.{missing}\n*Permission update:* {}",
        admin.permission_level, admin.phase
    );
    // The button only while there is something to update.
    if admin.missing_scopes.is_empty() {
        blocks.push(section(&permissions));
    } else {
        blocks.push(section_with(&permissions, update_permissions_button()));
    }
    let total = admin.subscriptions.len();
    blocks.push(section(&format!(
        "*Subscriptions in this workspace ({total})*"
    )));
    if total == 0 {
        blocks.push(context(
            "None yet. `/bitbucket subscribe workspace/repository` in a channel adds one.",
        ));
        return;
    }
    let room = MAX_VIEW_BLOCKS.saturating_sub(blocks.len() + 1);
    // The "and N more" line takes a block only when something is left out.
    let shown = if total <= room + 1 { total } else { room };
    for subscription in admin.subscriptions.iter().take(shown) {
        let unsubscribe = confirmed(
            button(
                "Unsubscribe",
                UNSUBSCRIBE_ACTION_ID,
                Some(&unsubscribe_value(
                    &subscription.channel_id,
                    &subscription.target,
                )),
                None,
            ),
            "Unsubscribe?",
            &format!(
                "<#{}> stops getting notifications from {}.",
                escape(&subscription.channel_id),
                crate::message::code(&subscription.target)
            ),
            "Unsubscribe",
        );
        blocks.push(section_with(
            &format!(
                "<#{}> {}",
                escape(&subscription.channel_id),
                subscription.description
            ),
            unsubscribe,
        ));
    }
    if shown < total {
        blocks.push(context(&format!(
            "and {} more: `/bitbucket subscriptions` in a channel lists its own.",
            total - shown
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn pr(id: u64, title: &str) -> PullRequestLine {
        PullRequestLine {
            repository: "acme/api".into(),
            id,
            title: title.into(),
            link: Some(format!("https://bitbucket.org/acme/api/pull-requests/{id}")),
            author: Some("Ada <Lovelace>".into()),
            age: SignedDuration::from_hours(50),
            approvals: 1,
            reviewers: 2,
            draft: false,
            build: Some(BuildState::Failed),
        }
    }

    fn linked(reviews: usize, own: usize) -> PersonFacts {
        PersonFacts::Linked(Box::new(LinkedFacts {
            display_name: "Grace & <Hopper>".into(),
            reviews: (1..=reviews as u64).map(|id| pr(id, "Fix <b>")).collect(),
            own: (100..100 + own as u64).map(|id| pr(id, "Mine")).collect(),
            coverage: Coverage::default(),
            settings: PersonalSettings::default(),
            now: at("2027-01-15T10:00:00Z"),
        }))
    }

    fn subscriptions(n: usize) -> Vec<SubscriptionLine> {
        (0..n)
            .map(|i| SubscriptionLine {
                channel_id: format!("C{i}"),
                target: format!("acme/repo{i}"),
                description: format!("`acme/repo{i}`: pull-requests"),
            })
            .collect()
    }

    fn blocks(view: &Value) -> &Vec<Value> {
        view["blocks"].as_array().expect("blocks")
    }

    fn all_text(view: &Value) -> String {
        view.to_string()
    }

    #[test]
    fn bitbucket_text_is_escaped() {
        let view = home_view(&HomeFacts::Dashboard {
            person: linked(1, 1),
            admin: None,
        });
        let text = all_text(&view);
        assert!(text.contains("Grace &amp; &lt;Hopper&gt;"), "{text}");
        assert!(text.contains("#1 Fix &lt;b&gt;"), "{text}");
        assert!(text.contains("*Ada &lt;Lovelace&gt;*"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
    }

    #[test]
    fn every_notification_kind_gets_a_toggle() {
        let view = home_view(&HomeFacts::Dashboard {
            person: linked(0, 0),
            admin: None,
        });
        let toggles: Vec<&Value> = blocks(&view)
            .iter()
            .filter(|block| block["accessory"]["action_id"] == TOGGLE_KIND_ACTION_ID)
            .collect();
        assert_eq!(toggles.len(), KINDS.len());
        for (toggle, spec) in toggles.iter().zip(KINDS) {
            assert_eq!(toggle["accessory"]["value"], spec.word);
        }
    }

    #[test]
    fn long_lists_end_with_and_n_more_and_the_view_stays_within_100_blocks() {
        let view = home_view(&HomeFacts::Dashboard {
            person: linked(25, 12),
            admin: Some(AdminFacts {
                permission_level: "current".into(),
                missing_scopes: Vec::new(),
                phase: "none needed.".into(),
                subscriptions: subscriptions(250),
            }),
        });
        let text = all_text(&view);
        assert!(
            blocks(&view).len() <= MAX_VIEW_BLOCKS,
            "{}",
            blocks(&view).len()
        );
        assert!(text.contains("and 15 more"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
        assert!(text.contains("more: `/bitbucket subscriptions`"), "{text}");
        // Every block that fit is whole: the last one is the subscriptions' "more".
        assert_eq!(blocks(&view).last().expect("a block")["type"], "context");
        for block in blocks(&view) {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= MAX_SECTION_CHARS);
            }
        }
    }

    #[test]
    fn a_workspace_that_fits_shows_every_subscription_without_more() {
        let view = home_view(&HomeFacts::Dashboard {
            person: PersonFacts::Unlinked { connect: None },
            admin: Some(AdminFacts {
                permission_level: "current".into(),
                missing_scopes: Vec::new(),
                phase: "none needed.".into(),
                subscriptions: subscriptions(3),
            }),
        });
        let unsubscribes = blocks(&view)
            .iter()
            .filter(|block| block["accessory"]["action_id"] == UNSUBSCRIBE_ACTION_ID)
            .count();
        assert_eq!(unsubscribes, 3);
        assert!(!all_text(&view).contains("more:"));
    }

    #[test]
    fn admins_get_update_permissions_only_while_scopes_are_missing() {
        let admin_view = |missing: Vec<String>| {
            all_text(&home_view(&HomeFacts::Dashboard {
                person: PersonFacts::Unlinked { connect: None },
                admin: Some(AdminFacts {
                    permission_level: if missing.is_empty() {
                        "current"
                    } else {
                        "outdated"
                    }
                    .into(),
                    missing_scopes: missing,
                    phase: "none needed.".into(),
                    subscriptions: subscriptions(1),
                }),
            }))
        };
        let button = crate::upgrade::messages::UPDATE_PERMISSIONS_ACTION_ID;
        assert!(!admin_view(Vec::new()).contains(button));
        let outdated = admin_view(vec!["links:write".into()]);
        assert!(outdated.contains(button), "{outdated}");
        assert!(outdated.contains("`links:write`"), "{outdated}");
    }

    #[test]
    fn unsubscribe_values_round_trip() {
        let value = unsubscribe_value("C1", "acme/api");
        assert_eq!(parse_unsubscribe_value(&value), Some(("C1", "acme/api")));
        assert_eq!(parse_unsubscribe_value("C1"), None);
        assert_eq!(parse_unsubscribe_value("C1 a b"), None);
    }

    #[test]
    fn ages_read_as_words() {
        assert_eq!(age_words(SignedDuration::from_secs(20)), "just now");
        assert_eq!(age_words(SignedDuration::from_mins(1)), "1 minute");
        assert_eq!(age_words(SignedDuration::from_hours(5)), "5 hours");
        assert_eq!(age_words(SignedDuration::from_hours(50)), "2 days");
    }

    #[test]
    fn before_the_upgrade_only_admins_get_the_button() {
        let waiting = |viewer_is_admin| {
            home_view(&HomeFacts::WaitingOnAdmin(WaitingFacts {
                features: vec!["home tab".into()],
                missing_scopes: vec!["im:history".into()],
                admins: vec!["U0ADMIN".into()],
                viewer_is_admin,
                phase: "needed.".into(),
            }))
        };
        let for_admin = all_text(&waiting(true));
        let for_others = all_text(&waiting(false));
        assert!(for_admin.contains(crate::upgrade::messages::UPDATE_PERMISSIONS_ACTION_ID));
        assert!(!for_others.contains(crate::upgrade::messages::UPDATE_PERMISSIONS_ACTION_ID));
        assert!(for_others.contains("<@U0ADMIN>"), "{for_others}");
        assert!(!for_others.contains(TOGGLE_KIND_ACTION_ID));
    }
}
