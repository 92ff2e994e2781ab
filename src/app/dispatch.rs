//! Routes each envelope to its handler: slash commands to the command parser and its
//! effects, events and interactions to theirs.
//!
//! Runs on the handler tasks that `slack::socket` spawns, never on a socket's reader.
//! A handler's failure becomes a reply to the user and a log line; it never reaches
//! the socket, the poller or the process.

use tracing::{debug, info};

use crate::commands::{self, Command, Reply};
use crate::slack::envelope::{EventCallback, Interaction, SlashCommand};
use crate::slack::socket::EnvelopeHandler;

/// The daemon's envelope handler.
#[derive(Debug, Default)]
pub struct Dispatcher;

impl Dispatcher {
    pub fn new() -> Self {
        Self
    }
}

impl EnvelopeHandler for Dispatcher {
    async fn slash_command(&self, command: SlashCommand) -> Reply {
        match commands::parse(&command.text) {
            Ok(Command::Help) => commands::help(),
            Err(error) => {
                info!(channel = %command.channel_id, user = %command.user_id, ?error, "slash command did not parse");
                commands::error_reply(&error)
            }
        }
    }

    async fn event(&self, event: EventCallback) {
        debug!(event_type = %event.event_type, "event received; nothing handles it yet");
    }

    async fn interaction(&self, interaction: Interaction) {
        debug!(interaction_type = %interaction.interaction_type, "interaction received; nothing handles it yet");
    }
}
