//! The `/bitbucket` slash command: text in, a closed [`Command`] out, and the help text.
//!
//! Pure: no I/O, no clock, no Slack types. The parser and the help are generated from
//! one table, [`COMMANDS`], so a command cannot exist without help or help without a
//! command. The table also says which [`Feature`] a command needs, so gating reads it
//! rather than a list of names elsewhere. Replies are plain data ([`Message`]); `slack/`
//! turns them into Block Kit.

pub mod status;

use crate::bitbucket::Target;
use crate::bitbucket::name::parse_target;
use crate::message::{Message, escape_inline_code};
use crate::notify::actions::{EXPECTED_REFERENCE, PullRequestKey, parse_pull_request};
use crate::notify::personal::{NOTIFY_USAGE, NotifyCommand, parse_notify};
use crate::notify::reminders::{REMIND_USAGE, RemindCommand, parse_remind};
use crate::notify::subscription::{SubscribeWord, parse_word};
use crate::upgrade::Feature;

/// One subcommand of `/bitbucket`: what it is called, how it is used, what it does.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    /// The feature the command needs besides the command itself. Without it the command
    /// is left out of the help and refused. Only what adds something new is gated:
    /// subscribing a channel needs every channel-notification scope, while listing,
    /// unsubscribing and settings manage what already works and keep working.
    pub feature: Option<Feature>,
    /// Builds the command, or says what is wrong with the arguments.
    parse: fn(&[&str]) -> Result<Command, String>,
}

/// Everything `/bitbucket` can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Login,
    Logout,
    Whoami,
    Subscribe {
        target: Target,
        words: Vec<SubscribeWord>,
    },
    Unsubscribe {
        target: Target,
        words: Vec<SubscribeWord>,
    },
    Subscriptions,
    SubscriptionFeatures,
    Threading {
        on: bool,
    },
    /// Admins: show how to update the app's Slack permissions.
    Upgrade,
    /// Your personal notifications: list or change them.
    Notify(NotifyCommand),
    /// Approve a pull request with one's own Bitbucket account.
    Approve(PullRequestKey),
    /// Merge a pull request (after a confirmation step).
    Merge(PullRequestKey),
    /// Decline a pull request.
    Decline(PullRequestKey),
    /// This channel's review reminder: set, list or turn off.
    Remind(RemindCommand),
}

impl Command {
    /// The name of the subcommand, as in [`COMMANDS`].
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "help",
            Command::Status => "status",
            Command::Login => "login",
            Command::Logout => "logout",
            Command::Whoami => "whoami",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Subscriptions | Command::SubscriptionFeatures => "subscriptions",
            Command::Threading { .. } => "settings",
            Command::Upgrade => "upgrade",
            Command::Notify(_) => "notify",
            Command::Approve(_) => "approve",
            Command::Merge(_) => "merge",
            Command::Decline(_) => "decline",
            Command::Remind(_) => "remind",
        }
    }

    /// The command's row in [`COMMANDS`].
    pub fn spec(&self) -> &'static CommandSpec {
        let name = self.name();
        COMMANDS
            .iter()
            .find(|spec| spec.name == name)
            .expect("every command has a row in COMMANDS")
    }

    /// The feature the command needs, from its row in [`COMMANDS`].
    pub fn feature(&self) -> Option<Feature> {
        self.spec().feature
    }
}

fn no_arguments(args: &[&str], command: Command) -> Result<Command, String> {
    match args.first() {
        None => Ok(command),
        Some(extra) => Err(format!(
            "it takes no arguments, but got `{}`",
            escape_inline_code(extra, 40)
        )),
    }
}

/// `<target> [word ...]`, shared by subscribe and unsubscribe.
fn target_and_words(args: &[&str]) -> Result<(Target, Vec<SubscribeWord>), String> {
    let Some(first) = args.first() else {
        return Err("name a repository (`workspace/repository`) or a workspace".into());
    };
    let target = parse_target(first).map_err(|error| {
        format!(
            "`{}` is not a repository or workspace: {}. Expected {}",
            escape_inline_code(first, 80),
            error.reason,
            crate::bitbucket::name::EXPECTED_FORM
        )
    })?;
    let words = args[1..]
        .iter()
        .map(|word| parse_word(word).map_err(|error| crate::message::escape(&error.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((target, words))
}

/// One pull-request reference: `workspace/repo#N` or its URL.
fn pull_request_argument(args: &[&str]) -> Result<PullRequestKey, String> {
    match args {
        [reference] => parse_pull_request(reference).map_err(|reason| {
            format!(
                "`{}` is not a pull request: {}. Expected {EXPECTED_REFERENCE}",
                escape_inline_code(reference, 80),
                crate::message::escape(&reason)
            )
        }),
        [] => Err(format!("name the pull request: {EXPECTED_REFERENCE}")),
        _ => Err(format!("name one pull request: {EXPECTED_REFERENCE}")),
    }
}

/// Every subcommand, in the order help lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "/bitbucket help",
        summary: "Show this list of commands.",
        feature: None,
        parse: |args| no_arguments(args, Command::Help),
    },
    CommandSpec {
        name: "status",
        usage: "/bitbucket status",
        summary: "Show this workspace's installation: permissions, what is missing, connection health.",
        feature: None,
        parse: |args| no_arguments(args, Command::Status),
    },
    CommandSpec {
        name: "login",
        usage: "/bitbucket login",
        summary: "Connect your Bitbucket account, so notifications mention you.",
        feature: None,
        parse: |args| no_arguments(args, Command::Login),
    },
    CommandSpec {
        name: "logout",
        usage: "/bitbucket logout",
        summary: "Disconnect your Bitbucket account and delete its tokens.",
        feature: None,
        parse: |args| no_arguments(args, Command::Logout),
    },
    CommandSpec {
        name: "whoami",
        usage: "/bitbucket whoami",
        summary: "Show which Bitbucket account you are connected as.",
        feature: None,
        parse: |args| no_arguments(args, Command::Whoami),
    },
    CommandSpec {
        name: "subscribe",
        usage: "/bitbucket subscribe <workspace>/<repository> [feature ...]",
        summary: "Post Bitbucket activity into this channel. A workspace alone covers all its repositories. See `/bitbucket subscriptions features`.",
        feature: Some(Feature::ChannelNotifications),
        parse: |args| {
            let (target, words) = target_and_words(args)?;
            Ok(Command::Subscribe { target, words })
        },
    },
    CommandSpec {
        name: "unsubscribe",
        usage: "/bitbucket unsubscribe <workspace>/<repository> [feature ...]",
        summary: "Turn features off, or with none named, remove the subscription.",
        feature: None,
        parse: |args| {
            let (target, words) = target_and_words(args)?;
            Ok(Command::Unsubscribe { target, words })
        },
    },
    CommandSpec {
        name: "subscriptions",
        usage: "/bitbucket subscriptions [features]",
        summary: "List this channel's subscriptions, or explain the features.",
        feature: None,
        parse: |args| match args {
            [] => Ok(Command::Subscriptions),
            ["features"] => Ok(Command::SubscriptionFeatures),
            _ => Err("the only option is `features`".into()),
        },
    },
    CommandSpec {
        name: "notify",
        usage: NOTIFY_USAGE,
        summary: "Your personal notifications by direct message (reviews asked of you, your pull requests' reviews, merges, failed builds): list them, turn a kind on or off, or mute them for a while.",
        feature: Some(Feature::DirectMessages),
        parse: |args| parse_notify(args).map(Command::Notify),
    },
    CommandSpec {
        name: "remind",
        usage: REMIND_USAGE,
        summary: "Post the pull requests waiting for review into this channel at a time of day (09:00 on weekdays in your time zone unless you say otherwise); `list` shows it, `off` stops it. Turn on your own morning digest with `/bitbucket notify on digest`.",
        feature: Some(Feature::ReviewReminders),
        parse: |args| parse_remind(args).map(Command::Remind),
    },
    CommandSpec {
        name: "upgrade",
        usage: "/bitbucket upgrade",
        summary: "Admins: update the app's Slack permissions when this version needs new ones.",
        feature: None,
        parse: |args| no_arguments(args, Command::Upgrade),
    },
    CommandSpec {
        name: "settings",
        usage: "/bitbucket settings threading on|off",
        summary: "Thread a pull request's activity under its first message in this channel (on by default).",
        feature: None,
        parse: |args| match args {
            ["threading", "on"] => Ok(Command::Threading { on: true }),
            ["threading", "off"] => Ok(Command::Threading { on: false }),
            _ => Err("say `threading on` or `threading off`".into()),
        },
    },
    CommandSpec {
        name: "approve",
        usage: "/bitbucket approve <workspace>/<repository>#<N>",
        summary: "Approve a pull request as your connected Bitbucket account (its URL works too).",
        feature: Some(Feature::PullRequestActions),
        parse: |args| pull_request_argument(args).map(Command::Approve),
    },
    CommandSpec {
        name: "merge",
        usage: "/bitbucket merge <workspace>/<repository>#<N>",
        summary: "Merge a pull request as your connected Bitbucket account, after you confirm the strategy.",
        feature: Some(Feature::PullRequestActions),
        parse: |args| pull_request_argument(args).map(Command::Merge),
    },
    CommandSpec {
        name: "decline",
        usage: "/bitbucket decline <workspace>/<repository>#<N>",
        summary: "Decline a pull request as your connected Bitbucket account.",
        feature: Some(Feature::PullRequestActions),
        parse: |args| pull_request_argument(args).map(Command::Decline),
    },
];

/// The longest text we parse; Slack allows more, nobody types more.
pub const MAX_TEXT_CHARS: usize = 1000;

/// Why a text is not a command. Each variant knows what to tell the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Unknown {
        word: String,
    },
    BadArguments {
        name: &'static str,
        usage: &'static str,
        reason: String,
    },
    TooLong {
        chars: usize,
    },
}

/// Parses the text after `/bitbucket`. Empty text asks for help.
pub fn parse(text: &str) -> Result<Command, ParseError> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ParseError::TooLong { chars });
    }
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(Command::Help);
    };
    let args: Vec<&str> = words.collect();
    let name = first.to_lowercase();
    let spec = COMMANDS
        .iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| ParseError::Unknown {
            word: first.to_string(),
        })?;
    (spec.parse)(&args).map_err(|reason| ParseError::BadArguments {
        name: spec.name,
        usage: spec.usage,
        reason,
    })
}

/// The help: one line per command, from [`COMMANDS`].
pub fn help() -> Message {
    help_without(&[])
}

/// The commands whose [`CommandSpec::feature`] is not among `available` (the features
/// the workspace's permissions allow), in table order.
pub fn unavailable_commands(available: &[Feature]) -> Vec<&'static str> {
    COMMANDS
        .iter()
        .filter(|spec| {
            spec.feature
                .is_some_and(|feature| !available.contains(&feature))
        })
        .map(|spec| spec.name)
        .collect()
}

/// The help without the commands named in `hidden` (those whose features the
/// workspace's permissions do not allow yet).
pub fn help_without(hidden: &[&str]) -> Message {
    let lines: Vec<String> = COMMANDS
        .iter()
        .filter(|spec| !hidden.contains(&spec.name))
        .map(|spec| format!("`{}` {}", spec.usage, spec.summary))
        .collect();
    Message {
        text: "bitbucket-slack commands".into(),
        sections: vec![
            "*Bitbucket for Slack*: here is what `/bitbucket` can do.".into(),
            lines.join("\n"),
        ],
        buttons: Vec::new(),
    }
}

/// The answer to a direct message sent to the app: it reads no messages, so it says
/// where things are (the commands, and the Home tab when `home` is the tab's deep link)
/// and hides the commands in `hidden`.
pub fn direct_message_reply(home: Option<&str>, hidden: &[&str]) -> Message {
    let mut reply = help_without(hidden);
    let first = "Hi! I do not read messages here. Use `/bitbucket` in any channel or here: \
                 `/bitbucket subscribe workspace/repository` sends a repository's news to a \
                 channel, `/bitbucket login` connects your Bitbucket account.";
    let home = match home {
        Some(link) => format!(
            "Your pull requests, the reviews waiting for you and your notification settings are on my <{link}|Home tab>."
        ),
        None => "Your pull requests, the reviews waiting for you and your notification settings are on my Home tab.".to_string(),
    };
    reply.text = first.to_string();
    reply.sections = vec![first.to_string(), home, reply.sections.remove(1)];
    reply
}

/// The deep link to the app's Home tab in workspace `team_id`, for app `app_id`.
pub fn home_tab_link(team_id: &str, app_id: &str) -> Option<String> {
    let plain = |id: &str| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric());
    (plain(team_id) && plain(app_id))
        .then(|| format!("slack://app?team={team_id}&id={app_id}&tab=home"))
}

/// What to tell the user whose text did not parse.
pub fn error_reply(error: &ParseError) -> Message {
    match error {
        ParseError::Unknown { word } => {
            let mut reply = help();
            let first = format!("Unknown command `{}`.", escape_inline_code(word, 40));
            reply.text = first.clone();
            reply.sections.insert(0, first);
            reply
        }
        ParseError::BadArguments {
            name,
            usage,
            reason,
        } => Message::text(format!(
            "That is not how `/bitbucket {name}` is used: {reason}. Usage: `{usage}`"
        )),
        ParseError::TooLong { chars } => Message::text(format!(
            "That command is {chars} characters long; the limit is {MAX_TEXT_CHARS}. \
             Try `/bitbucket help`."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Command, ParseError>) {
        assert_eq!(parse(text), expected, "parsing {text:?}");
    }

    #[test]
    fn a_direct_message_is_answered_with_help_and_the_home_link() {
        let link = home_tab_link("T0001", "A0BITBUCKET");
        assert_eq!(
            link.as_deref(),
            Some("slack://app?team=T0001&id=A0BITBUCKET&tab=home")
        );
        assert_eq!(
            home_tab_link("T0001", "A0&x=1"),
            None,
            "no odd ids in a link"
        );
        let reply = direct_message_reply(link.as_deref(), &["approve"]);
        assert!(reply.sections[0].contains("do not read messages"));
        assert!(
            reply.sections[1].contains("<slack://app?team=T0001&id=A0BITBUCKET&tab=home|Home tab>")
        );
        assert!(reply.sections[2].contains("/bitbucket subscribe"));
        assert!(!reply.sections[2].contains("/bitbucket approve"), "hidden");
        let without = direct_message_reply(None, &[]);
        assert!(without.sections[1].ends_with("on my Home tab."));
    }

    #[test]
    fn parses_the_table() {
        check("", Ok(Command::Help));
        check("   ", Ok(Command::Help));
        check("help", Ok(Command::Help));
        check("  HELP ", Ok(Command::Help));
        check("foo bar", Err(ParseError::Unknown { word: "foo".into() }));
        check(
            "help me",
            Err(ParseError::BadArguments {
                name: "help",
                usage: "/bitbucket help",
                reason: "it takes no arguments, but got `me`".into(),
            }),
        );
        check(
            &"x".repeat(MAX_TEXT_CHARS + 1),
            Err(ParseError::TooLong {
                chars: MAX_TEXT_CHARS + 1,
            }),
        );
    }

    #[test]
    fn help_lists_every_command_of_the_table() {
        let help = help().sections.join("\n");
        for spec in COMMANDS {
            assert!(help.contains(spec.usage), "help misses {}", spec.name);
            assert!(help.contains(spec.summary), "help misses {}", spec.name);
        }
    }

    #[test]
    fn unknown_command_names_it_then_shows_help() {
        let reply = error_reply(&ParseError::Unknown { word: "foo".into() });
        assert_eq!(reply.sections[0], "Unknown command `foo`.");
        assert_eq!(reply.text, "Unknown command `foo`.");
        assert_eq!(&reply.sections[1..], &help().sections[..]);
    }

    #[test]
    fn user_text_cannot_ping_or_link() {
        let reply = error_reply(&ParseError::Unknown {
            word: "<!channel>&`x`".into(),
        });
        assert_eq!(
            reply.sections[0],
            "Unknown command `&lt;!channel&gt;&amp;x`."
        );
        assert_eq!(escape_inline_code("abcdef", 3), "abc…");
    }

    #[test]
    fn only_subscribe_notify_actions_and_remind_need_a_feature_and_every_command_has_a_row() {
        let gated: Vec<_> = COMMANDS
            .iter()
            .filter_map(|spec| Some((spec.name, spec.feature?)))
            .collect();
        assert_eq!(
            gated,
            vec![
                ("subscribe", Feature::ChannelNotifications),
                ("notify", Feature::DirectMessages),
                ("remind", Feature::ReviewReminders),
                ("approve", Feature::PullRequestActions),
                ("merge", Feature::PullRequestActions),
                ("decline", Feature::PullRequestActions)
            ]
        );
        for text in [
            "help",
            "status",
            "login",
            "logout",
            "whoami",
            "subscriptions",
            "subscriptions features",
            "upgrade",
            "settings threading on",
            "subscribe acme/repo",
            "unsubscribe acme",
            "notify",
            "notify off reviews",
            "notify mute 2h",
            "approve acme/repo#7",
            "merge https://bitbucket.org/acme/repo/pull-requests/7",
            "decline acme/repo#7",
            "remind",
            "remind at 10:15 daily Europe/Paris",
            "remind list",
            "remind off",
        ] {
            let command = parse(text).expect("parses");
            assert_eq!(command.spec().name, command.name(), "{text}");
        }
        assert_eq!(
            parse("subscribe acme/repo").map(|c| c.feature()),
            Ok(Some(Feature::ChannelNotifications))
        );
        assert_eq!(
            parse("unsubscribe acme/repo").map(|c| c.feature()),
            Ok(None)
        );
    }

    #[test]
    fn commands_whose_feature_is_not_available_are_unavailable() {
        let all: Vec<Feature> = crate::upgrade::FEATURES
            .iter()
            .map(|spec| spec.feature)
            .collect();
        assert!(unavailable_commands(&all).is_empty());
        let without_channels: Vec<Feature> = all
            .iter()
            .copied()
            .filter(|feature| *feature != Feature::ChannelNotifications)
            .collect();
        assert_eq!(unavailable_commands(&without_channels), vec!["subscribe"]);
        assert_eq!(
            unavailable_commands(&[]),
            vec![
                "subscribe",
                "notify",
                "remind",
                "approve",
                "merge",
                "decline"
            ]
        );
        let without_dms: Vec<Feature> = all
            .iter()
            .copied()
            .filter(|feature| *feature != Feature::DirectMessages)
            .collect();
        assert_eq!(unavailable_commands(&without_dms), vec!["notify"]);
        let help = help_without(&unavailable_commands(&without_channels))
            .sections
            .join("\n");
        assert!(!help.contains("/bitbucket subscribe "));
        assert!(help.contains("/bitbucket unsubscribe "));
    }

    #[test]
    fn remind_refuses_bad_words_naming_them_and_the_expected_form() {
        let Err(ParseError::BadArguments { name, reason, .. }) = parse("remind at 25:00") else {
            panic!("refused");
        };
        assert_eq!(name, "remind");
        assert!(reason.contains("`25:00` is not a time of day"), "{reason}");
        let reply = error_reply(&parse("remind Mars/Olympus").expect_err("refused"));
        assert!(
            reply.text.contains("`Mars/Olympus` is not a time zone"),
            "{}",
            reply.text
        );
        assert!(
            reply.text.contains("Usage: `/bitbucket remind"),
            "{}",
            reply.text
        );
        assert!(parse("remind daily weekdays").is_err());
    }

    #[test]
    fn every_section_fits_in_a_block() {
        for spec in COMMANDS {
            assert!(spec.usage.starts_with("/bitbucket "));
        }
        for section in help().sections {
            assert!(section.chars().count() <= 3000);
        }
    }
}
