//! Events API callbacks (`events_api` envelopes), parsed into the closed [`Event`] enum.
//!
//! Pure: JSON in, typed value out, never a panic. Knows the events the app subscribes
//! to (`app_uninstalled`, `tokens_revoked`, `app_home_opened`, `link_shared`,
//! `message.im`); any other event is [`Event::Unknown`]. A known event missing a field
//! it needs is a [`FieldError`] naming that field. Decides nothing about what to do with
//! an event: that is `app::dispatch`'s.

use serde_json::Value;

use super::fields::{FieldError, Fields, PayloadError};

/// An Events API callback (`event_callback`) and the workspace it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCallback {
    /// Slack's id of the event, the same across redeliveries (what dedup keys on).
    pub event_id: Option<String>,
    /// The workspace the event is about: the wrapper's `team_id`.
    pub team_id: Option<String>,
    /// The app the event was sent to (`api_app_id`), for links into the app's pages.
    pub api_app_id: Option<String>,
    pub event: Event,
}

/// Every event the app subscribes to, and the rest as [`Event::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The app was removed from the workspace (the wrapper's `team_id` says which).
    AppUninstalled,
    /// Tokens were revoked. Both lists hold user ids, not tokens: `oauth` the users whose
    /// user tokens went, `bot` the bot users whose bot tokens went.
    TokensRevoked {
        oauth: Vec<String>,
        bot: Vec<String>,
    },
    /// Someone opened the app's Home or Messages tab.
    AppHomeOpened {
        user: String,
        /// The direct-message channel between the user and the app.
        channel: String,
        tab: HomeTab,
    },
    /// Someone shared (or is composing) a message with links on a domain the app unfurls.
    LinkShared(LinkShared),
    /// A plain message in a direct message with the app. Edits, deletions and the other
    /// message subtypes, and messages outside direct messages, are [`Event::Unknown`].
    MessageIm(MessageIm),
    /// An event nothing here reads: its `type` as Slack sent it.
    Unknown { type_name: String },
}

impl Event {
    /// The event's `type` as Slack sends it.
    pub fn type_name(&self) -> &str {
        match self {
            Event::AppUninstalled => "app_uninstalled",
            Event::TokensRevoked { .. } => "tokens_revoked",
            Event::AppHomeOpened { .. } => "app_home_opened",
            Event::LinkShared(_) => "link_shared",
            Event::MessageIm(_) => "message",
            Event::Unknown { type_name } => type_name,
        }
    }
}

/// Which tab of the app's page was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeTab {
    Home,
    Messages,
    Other(String),
}

impl HomeTab {
    fn from_wire(tab: String) -> Self {
        match tab.as_str() {
            "home" => HomeTab::Home,
            "messages" => HomeTab::Messages,
            _ => HomeTab::Other(tab),
        }
    }
}

/// A `link_shared` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkShared {
    /// The channel of the message, or `COMPOSER` while the message is being written.
    pub channel: String,
    pub user: String,
    /// The message's ts, or an id of the draft while it is being written.
    pub message_ts: String,
    /// What `chat.unfurl` takes instead of channel and ts (always sent for drafts).
    pub unfurl_id: Option<String>,
    pub source: Option<LinkSource>,
    pub links: Vec<SharedLink>,
}

/// Where the shared links were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSource {
    /// In a message being written, before it is sent.
    Composer,
    /// In a message that was posted.
    ConversationsHistory,
    Other(String),
}

impl LinkSource {
    fn from_wire(source: String) -> Self {
        match source.as_str() {
            "composer" => LinkSource::Composer,
            "conversations_history" => LinkSource::ConversationsHistory,
            _ => LinkSource::Other(source),
        }
    }
}

/// One link of a [`LinkShared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLink {
    pub domain: String,
    pub url: String,
}

/// A `message` in a direct message with the app (`channel_type` `im`, no subtype).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageIm {
    pub channel: String,
    /// Who wrote it; for a message a bot posted, the bot's user.
    pub user: String,
    /// Empty when the message is only blocks or files.
    pub text: String,
    pub ts: String,
    /// The thread's parent, for a reply in a thread.
    pub thread_ts: Option<String>,
    /// Set when a bot (ours included) posted it.
    pub bot_id: Option<String>,
}

/// The event of an `events_api` payload. `Ok(None)` when there is no `event.type` to
/// go by.
pub(super) fn parse_event_callback(payload: &Value) -> Result<Option<EventCallback>, PayloadError> {
    let root = Fields::root(payload);
    let type_name = match root.optional_text("event.type") {
        Ok(Some(type_name)) => type_name,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(PayloadError {
                type_name: "events_api".into(),
                error,
            });
        }
    };
    let callback = || {
        Ok(EventCallback {
            event_id: root.optional_text("event_id")?,
            team_id: root.optional_text("team_id")?,
            api_app_id: root.optional_text("api_app_id")?,
            event: parse_event(&root, type_name.clone())?,
        })
    };
    callback().map(Some).map_err(|error| PayloadError {
        type_name: type_name.clone(),
        error,
    })
}

fn parse_event(root: &Fields<'_>, type_name: String) -> Result<Event, FieldError> {
    let event = root.object("event")?;
    let event = match type_name.as_str() {
        "app_uninstalled" => Event::AppUninstalled,
        "tokens_revoked" => {
            let tokens = event.object("tokens")?;
            Event::TokensRevoked {
                oauth: tokens.texts("oauth")?,
                bot: tokens.texts("bot")?,
            }
        }
        "app_home_opened" => Event::AppHomeOpened {
            user: event.text("user")?,
            channel: event.text("channel")?,
            tab: HomeTab::from_wire(event.text("tab")?),
        },
        "link_shared" => Event::LinkShared(LinkShared {
            channel: event.text("channel")?,
            user: event.text("user")?,
            message_ts: event.text("message_ts")?,
            unfurl_id: event.optional_text("unfurl_id")?,
            source: event.optional_text("source")?.map(LinkSource::from_wire),
            links: event
                .objects("links")?
                .iter()
                .map(|link| {
                    Ok(SharedLink {
                        domain: link.text("domain")?,
                        url: link.text("url")?,
                    })
                })
                .collect::<Result<_, FieldError>>()?,
        }),
        "message"
            if event.optional_text("channel_type")?.as_deref() == Some("im")
                && event.optional_text("subtype")?.is_none() =>
        {
            Event::MessageIm(MessageIm {
                channel: event.text("channel")?,
                user: event.text("user")?,
                text: event.optional_text("text")?.unwrap_or_default(),
                ts: event.text("ts")?,
                thread_ts: event.optional_text("thread_ts")?,
                bot_id: event.optional_text("bot_id")?,
            })
        }
        _ => Event::Unknown { type_name },
    };
    Ok(event)
}
