//! `/bitbucket notify`: a linked person lists or changes their personal-notification
//! settings. An unlinked person gets the login button instead; nothing is stored for them.
//!
//! Reads and writes the person's settings in the store and lets `notify::personal` decide
//! what they mean and say. Never queues or sends a notification (the router does), and
//! never looks at another person's or workspace's settings.

use jiff::Timestamp;
use tracing::error;

use super::accounts::Accounts;
use crate::message::Message;
use crate::notify::personal::{self, NotifyCommand};
use crate::store::Store;

/// The answer to `/bitbucket notify ...` from `user_id` of `team_id` at `now`.
pub async fn answer(
    store: &Store,
    accounts: &Accounts,
    now: Timestamp,
    team_id: &str,
    user_id: &str,
    command: &NotifyCommand,
) -> Message {
    match store.user_links.get(team_id, user_id) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return match accounts.login_button(team_id, user_id) {
                Some(button) => Message::text(
                    "Personal notifications are for your own Bitbucket account: connect it first, then `/bitbucket notify` shows your settings. The link works once, for 10 minutes.",
                )
                .with_button(button),
                None => accounts.login_reply(team_id, user_id),
            };
        }
        Err(cause) => {
            error!(team = team_id, user = user_id, error = %cause, "could not read the user link");
            return sorry();
        }
    }
    let settings = match store.personal_settings.get(team_id, user_id) {
        Ok(settings) => settings,
        Err(cause) => {
            error!(team = team_id, user = user_id, error = %cause, "could not read personal settings");
            return sorry();
        }
    };
    if *command == NotifyCommand::Show {
        return personal::settings_reply(&settings, now);
    }
    let changed = personal::apply(settings, command, now);
    if let Err(cause) = store
        .personal_settings
        .put(team_id, user_id, &changed)
        .await
    {
        error!(team = team_id, user = user_id, error = %cause, "could not store personal settings");
        return sorry();
    }
    personal::changed_reply(command, &changed)
}

fn sorry() -> Message {
    Message::text(
        "Sorry, something went wrong with your notification settings. The error was logged.",
    )
}
