//! The `/bitbucket` slash command: text in, a closed [`Command`] out, and the help text.
//!
//! Pure: no I/O, no clock, no Slack types. The parser and the help are generated from
//! one table, [`COMMANDS`], so a command cannot exist without help or help without a
//! command. Replies are plain data ([`Reply`]); `slack/` turns them into Block Kit.

pub mod status;

use crate::notify::subscription::{SubscribeWord, Target, parse_target, parse_word};

/// One subcommand of `/bitbucket`: what it is called, how it is used, what it does.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
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
        }
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
        .map(|word| {
            parse_word(word).map_err(|error| crate::notify::render::escape(&error.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((target, words))
}

/// Every subcommand, in the order help lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "/bitbucket help",
        summary: "Show this list of commands.",
        parse: |args| no_arguments(args, Command::Help),
    },
    CommandSpec {
        name: "status",
        usage: "/bitbucket status",
        summary: "Show this workspace's installation: permissions, what is missing, connection health.",
        parse: |args| no_arguments(args, Command::Status),
    },
    CommandSpec {
        name: "login",
        usage: "/bitbucket login",
        summary: "Connect your Bitbucket account, so notifications mention you.",
        parse: |args| no_arguments(args, Command::Login),
    },
    CommandSpec {
        name: "logout",
        usage: "/bitbucket logout",
        summary: "Disconnect your Bitbucket account and delete its tokens.",
        parse: |args| no_arguments(args, Command::Logout),
    },
    CommandSpec {
        name: "whoami",
        usage: "/bitbucket whoami",
        summary: "Show which Bitbucket account you are connected as.",
        parse: |args| no_arguments(args, Command::Whoami),
    },
    CommandSpec {
        name: "subscribe",
        usage: "/bitbucket subscribe <workspace>/<repository> [feature ...]",
        summary: "Post Bitbucket activity into this channel. A workspace alone covers all its repositories. See `/bitbucket subscriptions features`.",
        parse: |args| {
            let (target, words) = target_and_words(args)?;
            Ok(Command::Subscribe { target, words })
        },
    },
    CommandSpec {
        name: "unsubscribe",
        usage: "/bitbucket unsubscribe <workspace>/<repository> [feature ...]",
        summary: "Turn features off, or with none named, remove the subscription.",
        parse: |args| {
            let (target, words) = target_and_words(args)?;
            Ok(Command::Unsubscribe { target, words })
        },
    },
    CommandSpec {
        name: "subscriptions",
        usage: "/bitbucket subscriptions [features]",
        summary: "List this channel's subscriptions, or explain the features.",
        parse: |args| match args {
            [] => Ok(Command::Subscriptions),
            ["features"] => Ok(Command::SubscriptionFeatures),
            _ => Err("the only option is `features`".into()),
        },
    },
    CommandSpec {
        name: "upgrade",
        usage: "/bitbucket upgrade",
        summary: "Admins: update the app's Slack permissions when this version needs new ones.",
        parse: |args| no_arguments(args, Command::Upgrade),
    },
    CommandSpec {
        name: "settings",
        usage: "/bitbucket settings threading on|off",
        summary: "Thread a pull request's activity under its first message in this channel (on by default).",
        parse: |args| match args {
            ["threading", "on"] => Ok(Command::Threading { on: true }),
            ["threading", "off"] => Ok(Command::Threading { on: false }),
            _ => Err("say `threading on` or `threading off`".into()),
        },
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

/// A message: a reply to the user who typed a command, a notification, a DM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// Plain-text fallback (notifications, screen readers).
    pub text: String,
    /// Markdown sections, in order; each stays under Slack's 3,000-character limit.
    pub sections: Vec<String>,
    /// Buttons shown under the sections, in order (at most 25: Slack's limit).
    #[serde(default)]
    pub buttons: Vec<Button>,
}

/// A button: a link (`url`) or an action the daemon handles (`action_id` + `value`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Button {
    pub text: String,
    pub action_id: String,
    pub value: Option<String>,
    pub url: Option<String>,
    pub primary: bool,
}

impl Button {
    /// A button that opens `url` in the browser.
    pub fn link(text: impl Into<String>, action_id: &str, url: impl Into<String>) -> Self {
        Button {
            text: text.into(),
            action_id: action_id.into(),
            value: None,
            url: Some(url.into()),
            primary: true,
        }
    }
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        Reply {
            sections: vec![text.clone()],
            text,
            buttons: Vec::new(),
        }
    }

    pub fn with_button(mut self, button: Button) -> Self {
        self.buttons.push(button);
        self
    }
}

/// The help: one line per command, from [`COMMANDS`].
pub fn help() -> Reply {
    help_without(&[])
}

/// The help without the commands named in `hidden` (those whose features the
/// workspace's permissions do not allow yet).
pub fn help_without(hidden: &[&str]) -> Reply {
    let lines: Vec<String> = COMMANDS
        .iter()
        .filter(|spec| !hidden.contains(&spec.name))
        .map(|spec| format!("`{}` {}", spec.usage, spec.summary))
        .collect();
    Reply {
        text: "bitbucket-slack commands".into(),
        sections: vec![
            "*Bitbucket for Slack*: here is what `/bitbucket` can do.".into(),
            lines.join("\n"),
        ],
        buttons: Vec::new(),
    }
}

/// What to tell the user whose text did not parse.
pub fn error_reply(error: &ParseError) -> Reply {
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
        } => Reply::text(format!(
            "That is not how `/bitbucket {name}` is used: {reason}. Usage: `{usage}`"
        )),
        ParseError::TooLong { chars } => Reply::text(format!(
            "That command is {chars} characters long; the limit is {MAX_TEXT_CHARS}. \
             Try `/bitbucket help`."
        )),
    }
}

/// Escapes Slack's control characters (`&`, `<`, `>`) so user text can neither mention
/// anyone nor form a link, and drops backticks so it cannot break out of inline code.
/// Long text is cut to `max_chars` with an ellipsis.
pub fn escape_inline_code(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (count, ch) in text.chars().filter(|ch| *ch != '`').enumerate() {
        if count == max_chars {
            out.push('…');
            break;
        }
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Command, ParseError>) {
        assert_eq!(parse(text), expected, "parsing {text:?}");
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
    fn every_section_fits_in_a_block() {
        for spec in COMMANDS {
            assert!(spec.usage.starts_with("/bitbucket "));
        }
        for section in help().sections {
            assert!(section.chars().count() <= 3000);
        }
    }
}
