//! The `/bitbucket` slash command: text in, a closed [`Command`] out, and the help text.
//!
//! Pure: no I/O, no clock, no Slack types. The parser and the help are generated from
//! one table, [`COMMANDS`], so a command cannot exist without help or help without a
//! command. Replies are plain data ([`Reply`]); `slack/` turns them into Block Kit.

pub mod status;

/// One subcommand of `/bitbucket`: what it is called, how it is used, what it does.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub usage: &'static str,
    pub summary: &'static str,
    /// Builds the command; `None` when the arguments are wrong (then usage is shown).
    parse: fn(&[&str]) -> Option<Command>,
}

/// Everything `/bitbucket` can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Status,
    Login,
    Logout,
    Whoami,
}

/// Every subcommand, in the order help lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        usage: "/bitbucket help",
        summary: "Show this list of commands.",
        parse: |args| args.is_empty().then_some(Command::Help),
    },
    CommandSpec {
        name: "status",
        usage: "/bitbucket status",
        summary: "Show this workspace's installation: permissions, what is missing, connection health.",
        parse: |args| args.is_empty().then_some(Command::Status),
    },
    CommandSpec {
        name: "login",
        usage: "/bitbucket login",
        summary: "Connect your Bitbucket account, so notifications mention you.",
        parse: |args| args.is_empty().then_some(Command::Login),
    },
    CommandSpec {
        name: "logout",
        usage: "/bitbucket logout",
        summary: "Disconnect your Bitbucket account and delete its tokens.",
        parse: |args| args.is_empty().then_some(Command::Logout),
    },
    CommandSpec {
        name: "whoami",
        usage: "/bitbucket whoami",
        summary: "Show which Bitbucket account you are connected as.",
        parse: |args| args.is_empty().then_some(Command::Whoami),
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
    (spec.parse)(&args).ok_or(ParseError::BadArguments {
        name: spec.name,
        usage: spec.usage,
    })
}

/// A reply to the user who typed the command: only they see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Plain-text fallback (notifications, screen readers).
    pub text: String,
    /// Markdown sections, in order; each stays under Slack's 3,000-character limit.
    pub sections: Vec<String>,
    /// Buttons shown under the sections, in order (at most 25: Slack's limit).
    pub buttons: Vec<Button>,
}

/// A button: a link (`url`) or an action the daemon handles (`action_id` + `value`).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let lines: Vec<String> = COMMANDS
        .iter()
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
        ParseError::BadArguments { name, usage } => Reply::text(format!(
            "That is not how `/bitbucket {name}` is used. Usage: `{usage}`"
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
