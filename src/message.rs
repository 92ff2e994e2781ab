//! The program's one message type: what a reply, a notification or a DM says, as plain
//! data ([`Message`], [`Button`]), plus the one escaper for user text in Slack's mrkdwn
//! and the limits Block Kit puts on a message.
//!
//! Pure, and a leaf: it imports nothing from the crate. Every module that speaks to people
//! builds a [`Message`]; only `slack/convert.rs` decides how it looks in Block Kit, and it
//! applies [`Message::within_limits`] first, so no message Slack would refuse leaves us.
//! It must never know about Slack's wire types, Bitbucket, the store or any I/O.

use serde::{Deserialize, Serialize};

/// Slack's limit for one section block's text.
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack's limit of blocks in one message (the buttons take one actions block).
pub const MAX_BLOCKS: usize = 50;
/// Slack's limit of elements in one actions block.
pub const MAX_BUTTONS: usize = 25;
/// Slack's limit for a button's label.
pub const MAX_BUTTON_TEXT_CHARS: usize = 75;
/// Slack's limit for a button's `value`.
pub const MAX_BUTTON_VALUE_CHARS: usize = 2000;
/// Slack's limit for a button's `url`: a longer link is dropped rather than cut.
pub const MAX_BUTTON_URL_CHARS: usize = 3000;
/// What we keep of the plain-text fallback (Slack truncates at 40,000; notifications and
/// screen readers need far less).
pub const MAX_FALLBACK_CHARS: usize = 4000;

/// A message: a reply to the user who typed a command, a notification, a DM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Plain-text fallback (notifications, screen readers).
    pub text: String,
    /// Markdown sections, in order; each stays under Slack's 3,000-character limit.
    pub sections: Vec<String>,
    /// Buttons shown under the sections, in order (at most 25: Slack's limit).
    #[serde(default)]
    pub buttons: Vec<Button>,
}

/// A button: a link (`url`) or an action the daemon handles (`action_id` + `value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl Message {
    /// A message of one section, whose text is also the fallback.
    pub fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        Message {
            sections: vec![text.clone()],
            text,
            buttons: Vec::new(),
        }
    }

    pub fn with_button(mut self, button: Button) -> Self {
        self.buttons.push(button);
        self
    }

    /// The message cut to what Block Kit accepts: sections of at most
    /// [`MAX_SECTION_CHARS`], at most [`MAX_BLOCKS`] blocks (the last section says how
    /// many were left out), at most [`MAX_BUTTONS`] buttons with labels and values cut
    /// and over-long links dropped, and a fallback of at most [`MAX_FALLBACK_CHARS`].
    pub fn within_limits(mut self) -> Self {
        self.text = truncate(&self.text, MAX_FALLBACK_CHARS);
        let section_room = MAX_BLOCKS - usize::from(!self.buttons.is_empty());
        if self.sections.len() > section_room {
            let left_out = self.sections.len() - (section_room - 1);
            self.sections.truncate(section_room - 1);
            self.sections
                .push(format!("_…and {left_out} more sections, left out._"));
        }
        for section in &mut self.sections {
            if section.chars().count() > MAX_SECTION_CHARS {
                *section = truncate(section, MAX_SECTION_CHARS);
            }
        }
        self.buttons.truncate(MAX_BUTTONS);
        for button in &mut self.buttons {
            button.text = truncate(&button.text, MAX_BUTTON_TEXT_CHARS);
            if let Some(value) = &mut button.value {
                *value = truncate(value, MAX_BUTTON_VALUE_CHARS);
            }
            if button
                .url
                .as_ref()
                .is_some_and(|url| url.chars().count() > MAX_BUTTON_URL_CHARS)
            {
                button.url = None;
            }
        }
        self
    }
}

/// Escapes Slack's control characters in user text, so it can neither mention anyone
/// (`<!channel>`, `<@U1>`) nor form a link.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts text to `max` characters, on a character boundary, the last one an ellipsis.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_string(),
    }
}

/// Text shown as inline code: escaped, and no backtick can end the code span early.
pub fn code(text: &str) -> String {
    format!("`{}`", escape(&text.replace('`', "'")))
}

/// User text to put between backticks that the caller writes: escaped, backticks
/// dropped, and cut after `max_chars` characters with an ellipsis.
pub fn escape_inline_code(text: &str, max_chars: usize) -> String {
    let without_backticks: String = text.chars().filter(|ch| *ch != '`').collect();
    let mut kept: String = without_backticks.chars().take(max_chars).collect();
    if without_backticks.chars().count() > max_chars {
        kept.push('…');
    }
    escape(&kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_mentions_and_links() {
        assert_eq!(
            escape("<!channel> & <@U1|x>"),
            "&lt;!channel&gt; &amp; &lt;@U1|x&gt;"
        );
    }

    #[test]
    fn truncate_keeps_max_characters_including_the_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn code_cannot_be_closed_early() {
        assert_eq!(code("a`b<c>"), "`a'b&lt;c&gt;`");
    }

    #[test]
    fn inline_code_drops_backticks_escapes_and_cuts() {
        assert_eq!(escape_inline_code("abcdef", 3), "abc…");
        assert_eq!(escape_inline_code("a`<b>", 10), "a&lt;b&gt;");
        assert_eq!(escape_inline_code("<<<<", 2), "&lt;&lt;…");
    }

    #[test]
    fn within_limits_cuts_everything_block_kit_would_refuse() {
        let mut message = Message::text("x".repeat(10_000));
        message.sections = (0..60)
            .map(|n| format!("{n}{}", "y".repeat(4000)))
            .collect();
        for n in 0..30 {
            message.buttons.push(Button {
                text: "b".repeat(100),
                action_id: format!("a{n}"),
                value: Some("v".repeat(3000)),
                url: Some(format!("https://example.com/{}", "p".repeat(3000))),
                primary: false,
            });
        }
        let fitted = message.within_limits();
        assert_eq!(fitted.text.chars().count(), MAX_FALLBACK_CHARS);
        assert_eq!(fitted.sections.len(), MAX_BLOCKS - 1);
        assert_eq!(
            fitted.sections.last().map(String::as_str),
            Some("_…and 12 more sections, left out._")
        );
        assert!(
            fitted
                .sections
                .iter()
                .all(|section| section.chars().count() <= MAX_SECTION_CHARS)
        );
        assert_eq!(fitted.buttons.len(), MAX_BUTTONS);
        assert!(fitted.buttons.iter().all(|button| {
            button.text.chars().count() == MAX_BUTTON_TEXT_CHARS
                && button.value.as_ref().map(|v| v.chars().count()) == Some(MAX_BUTTON_VALUE_CHARS)
                && button.url.is_none()
        }));
    }

    #[test]
    fn within_limits_leaves_a_small_message_alone() {
        let message = Message::text("hello").with_button(Button::link("Open", "open", "https://x"));
        assert_eq!(message.clone().within_limits(), message);
    }
}
