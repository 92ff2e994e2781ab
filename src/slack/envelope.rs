//! Socket Mode frames, parsed into one closed enum: [`Inbound`], down to typed payloads.
//!
//! Pure: text in, typed value out; no JSON leaves this module. Knows the shape of
//! Slack's frames (hello, disconnect, envelopes) and of the payloads the app reads:
//! slash commands, the events of [`events`] and the interactions of [`interactions`].
//! Never panics on input: anything that does not fit is a [`FrameError`] (no envelope
//! id, so nothing to ack) or an [`EnvelopeKind::Unparsed`] whose reason names the
//! field (acked, logged, not handled). Decides nothing about what a payload means.

pub mod events;
mod fields;
pub mod interactions;

use serde::Deserialize;
use serde_json::Value;

pub use events::{Event, EventCallback, HomeTab, LinkShared, LinkSource, MessageIm, SharedLink};
pub use fields::{FieldError, FieldProblem, PayloadError};
pub use interactions::{
    BlockAction, BlockActions, InputValue, Interaction, InteractionKind, View, ViewInput, ViewType,
};

/// One text frame from Slack.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Hello {
        num_connections: Option<u64>,
        approximate_connection_time: Option<u64>,
    },
    Disconnect {
        reason: DisconnectReason,
    },
    /// Boxed: an envelope is far larger than the other frames.
    Envelope(Box<Envelope>),
}

/// Why Slack asks us to drop a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The socket closes in about ten seconds.
    Warning,
    /// Routine recycling.
    RefreshRequested,
    /// We have more sockets open than Slack allows.
    TooManyWebsockets,
    /// Socket Mode was turned off in the app's settings.
    LinkDisabled,
    Other(String),
}

impl DisconnectReason {
    fn from_wire(reason: &str) -> Self {
        match reason {
            "warning" => DisconnectReason::Warning,
            "refresh_requested" => DisconnectReason::RefreshRequested,
            "too_many_websockets" => DisconnectReason::TooManyWebsockets,
            "link_disabled" | "socket_mode_disabled" => DisconnectReason::LinkDisabled,
            other => DisconnectReason::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DisconnectReason::Warning => "warning",
            DisconnectReason::RefreshRequested => "refresh_requested",
            DisconnectReason::TooManyWebsockets => "too_many_websockets",
            DisconnectReason::LinkDisabled => "link_disabled",
            DisconnectReason::Other(other) => other,
        }
    }
}

/// Something Slack wants acked.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub envelope_id: String,
    pub accepts_response_payload: bool,
    pub retry_attempt: u32,
    pub kind: EnvelopeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EnvelopeKind {
    SlashCommand(SlashCommand),
    Event(EventCallback),
    Interaction(Interaction),
    /// An envelope we cannot use: an unknown type or a payload that does not fit.
    /// It is still acked, so Slack does not redeliver it forever.
    Unparsed {
        type_name: String,
        reason: String,
    },
}

impl EnvelopeKind {
    pub fn type_name(&self) -> &str {
        match self {
            EnvelopeKind::SlashCommand(_) => "slash_commands",
            EnvelopeKind::Event(_) => "events_api",
            EnvelopeKind::Interaction(_) => "interactive",
            EnvelopeKind::Unparsed { type_name, .. } => type_name,
        }
    }

    /// The workspace it came from, when the payload says.
    pub fn team_id(&self) -> Option<&str> {
        match self {
            EnvelopeKind::SlashCommand(command) => Some(&command.team_id),
            EnvelopeKind::Event(event) => event.team_id.as_deref(),
            EnvelopeKind::Interaction(interaction) => interaction.team_id.as_deref(),
            EnvelopeKind::Unparsed { .. } => None,
        }
    }
}

/// A `/bitbucket ...` invocation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SlashCommand {
    pub team_id: String,
    #[serde(default)]
    pub enterprise_id: Option<String>,
    pub channel_id: String,
    pub user_id: String,
    pub command: String,
    #[serde(default)]
    pub text: String,
    pub response_url: String,
    #[serde(default)]
    pub trigger_id: Option<String>,
}

/// A frame that cannot be acked or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    #[error("frame of type `{0}` has no envelope_id")]
    NoEnvelopeId(String),
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    frame_type: String,
    envelope_id: Option<String>,
    #[serde(default)]
    accepts_response_payload: bool,
    #[serde(default)]
    retry_attempt: u32,
    #[serde(default)]
    payload: Value,
    reason: Option<String>,
    num_connections: Option<u64>,
    #[serde(default)]
    debug_info: Value,
}

/// Parses one text frame.
pub fn parse_frame(text: &str) -> Result<Inbound, FrameError> {
    let raw: RawFrame =
        serde_json::from_str(text).map_err(|error| FrameError::NotJson(error.to_string()))?;
    match raw.frame_type.as_str() {
        "hello" => Ok(Inbound::Hello {
            num_connections: raw.num_connections,
            approximate_connection_time: raw.debug_info["approximate_connection_time"].as_u64(),
        }),
        "disconnect" => Ok(Inbound::Disconnect {
            reason: DisconnectReason::from_wire(raw.reason.as_deref().unwrap_or("")),
        }),
        _ => {
            let envelope_id = raw
                .envelope_id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| FrameError::NoEnvelopeId(raw.frame_type.clone()))?;
            Ok(Inbound::Envelope(Box::new(Envelope {
                envelope_id,
                accepts_response_payload: raw.accepts_response_payload,
                retry_attempt: raw.retry_attempt,
                kind: parse_kind(&raw.frame_type, raw.payload),
            })))
        }
    }
}

fn parse_kind(frame_type: &str, payload: Value) -> EnvelopeKind {
    let unparsed = |reason: String| EnvelopeKind::Unparsed {
        type_name: frame_type.to_string(),
        reason,
    };
    match frame_type {
        "slash_commands" => match SlashCommand::deserialize(&payload) {
            Ok(command) => EnvelopeKind::SlashCommand(command),
            Err(error) => unparsed(format!("slash command payload: {error}")),
        },
        "events_api" => match events::parse_event_callback(&payload) {
            Ok(Some(event)) => EnvelopeKind::Event(event),
            Ok(None) => unparsed("events_api payload has no event.type".into()),
            Err(error) => unparsed(error.to_string()),
        },
        "interactive" => match interactions::parse_interaction(&payload) {
            Ok(Some(interaction)) => EnvelopeKind::Interaction(interaction),
            Ok(None) => unparsed("interactive payload has no type".into()),
            Err(error) => unparsed(error.to_string()),
        },
        other => unparsed(format!("unknown envelope type `{other}`")),
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_disconnect() {
        let hello = parse_frame(
            r#"{"type":"hello","num_connections":2,"debug_info":{"host":"h","approximate_connection_time":18060},"connection_info":{"app_id":"A1"}}"#,
        );
        assert_eq!(
            hello,
            Ok(Inbound::Hello {
                num_connections: Some(2),
                approximate_connection_time: Some(18060)
            })
        );
        for (wire, reason) in [
            ("warning", DisconnectReason::Warning),
            ("refresh_requested", DisconnectReason::RefreshRequested),
            ("too_many_websockets", DisconnectReason::TooManyWebsockets),
            ("link_disabled", DisconnectReason::LinkDisabled),
            ("brand_new", DisconnectReason::Other("brand_new".into())),
        ] {
            let frame = format!(r#"{{"type":"disconnect","reason":"{wire}"}}"#);
            assert_eq!(parse_frame(&frame), Ok(Inbound::Disconnect { reason }));
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert!(matches!(
            parse_frame("not json"),
            Err(FrameError::NotJson(_))
        ));
        assert!(matches!(parse_frame("[1,2]"), Err(FrameError::NotJson(_))));
        assert_eq!(
            parse_frame(r#"{"type":"slash_commands","payload":{}}"#),
            Err(FrameError::NoEnvelopeId("slash_commands".into()))
        );
    }

    #[test]
    fn a_payload_that_does_not_fit_is_unparsed_but_ackable() {
        let Ok(Inbound::Envelope(envelope)) =
            parse_frame(r#"{"type":"slash_commands","envelope_id":"e1","payload":{"text":"x"}}"#)
        else {
            panic!("expected an envelope");
        };
        assert_eq!(envelope.envelope_id, "e1");
        assert!(matches!(envelope.kind, EnvelopeKind::Unparsed { .. }));
        let Ok(Inbound::Envelope(envelope)) =
            parse_frame(r#"{"type":"something_new","envelope_id":"e2"}"#)
        else {
            panic!("expected an envelope");
        };
        assert_eq!(envelope.kind.type_name(), "something_new");
    }

    #[test]
    fn slash_command_fields() {
        let Ok(Inbound::Envelope(envelope)) = parse_frame(
            r#"{"type":"slash_commands","envelope_id":"e1","accepts_response_payload":true,
                "payload":{"team_id":"T1","channel_id":"C1","user_id":"U1","command":"/bitbucket",
                "text":"help","response_url":"https://hooks/x","trigger_id":"t"}}"#,
        ) else {
            panic!("expected an envelope");
        };
        assert!(envelope.accepts_response_payload);
        let EnvelopeKind::SlashCommand(command) = envelope.kind else {
            panic!("expected a slash command");
        };
        assert_eq!(command.text, "help");
        assert_eq!(command.team_id, "T1");
    }

    #[test]
    fn a_click_from_an_enterprise_install_carries_the_org() {
        let frame = r#"{"type":"interactive","envelope_id":"e1","payload":{"type":"block_actions",
            "team":{"id":"T1","domain":"acme","enterprise_id":"E1"},"enterprise":{"id":"E1","name":"Acme Org"},
            "user":{"id":"U1","team_id":"T1"},"trigger_id":"t1","actions":[]}}"#;
        let Ok(Inbound::Envelope(envelope)) = parse_frame(frame) else {
            panic!("an envelope");
        };
        let EnvelopeKind::Interaction(interaction) = envelope.kind else {
            panic!("an interaction");
        };
        assert_eq!(interaction.team_id.as_deref(), Some("T1"));
        assert_eq!(interaction.enterprise_id.as_deref(), Some("E1"));
    }
}
