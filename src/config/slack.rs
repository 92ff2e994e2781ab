//! The `[slack]` section: its validated shape ([`SlackConfig`]), how its keys are read,
//! and the checks that span its keys (the ping must come before the idle timeout).
//!
//! Owns every message about a `slack.*` key. Must never print a secret (tokens and the
//! client secret stay in [`Secret`]; problems name the key) and never read another
//! section's keys.

use std::time::Duration;

use url::Url;

use super::raw::Reader;
use super::{ConfigProblem, Secret};

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub app_token: Secret<String>,
    pub bot_token: Option<Secret<String>>,
    /// Base of every Web API call, such as `https://slack.com/api/`.
    pub api_url: Url,
    pub socket_connections: usize,
    pub reply_budget: Duration,
    pub ping_interval: Duration,
    pub socket_idle_timeout: Duration,
    /// The OAuth v2 app credentials; `None` when only `bot_token` installs are used.
    pub oauth: Option<SlackOAuthConfig>,
    pub oauth_authorize_url: Url,
    /// How often a configured `bot_token`'s scopes are re-read with auth.test.
    pub scope_recheck_interval: Duration,
    /// Slack team or enterprise ids that may install the app through `/slack/install`;
    /// empty means any.
    pub allowed_teams: Vec<String>,
    /// The bound on every Slack Web API call (response_url and apps.connections.open too).
    pub request_timeout: Duration,
    /// How many actions from Slack (approve, merge, ...) one person may take per minute.
    pub actions_per_minute: u32,
}

/// The Slack app's OAuth credentials (Basic Information page).
#[derive(Debug, Clone)]
pub struct SlackOAuthConfig {
    pub client_id: String,
    pub client_secret: Secret<String>,
}

/// Reads the `slack.*` keys, in a fixed order so problems are listed in a stable order.
pub(super) fn read(reader: &mut Reader) -> SlackConfig {
    SlackConfig {
        app_token: reader.required_secret("slack.app_token", Some("xapp-")),
        bot_token: reader.optional_secret("slack.bot_token", Some("xoxb-")),
        api_url: reader.url("slack.api_url"),
        socket_connections: reader.integer("slack.socket_connections", 1, 10) as usize,
        reply_budget: Duration::from_millis(reader.integer("slack.reply_budget_ms", 100, 2500)),
        ping_interval: Duration::from_secs(reader.integer("slack.ping_interval_secs", 1, 300)),
        socket_idle_timeout: Duration::from_secs(reader.integer(
            "slack.socket_idle_timeout_secs",
            2,
            600,
        )),
        oauth: slack_oauth(reader),
        oauth_authorize_url: reader.url("slack.oauth_authorize_url"),
        allowed_teams: team_ids(reader, "slack.allowed_teams"),
        request_timeout: Duration::from_secs(reader.integer("slack.request_timeout_secs", 1, 300)),
        actions_per_minute: reader.integer("slack.actions_per_minute", 1, 600) as u32,
        scope_recheck_interval: Duration::from_secs(reader.integer(
            "slack.scope_recheck_interval_secs",
            60,
            7 * 24 * 3600,
        )),
    }
}

/// The checks that need two `slack.*` values at once.
pub(super) fn check(slack: &SlackConfig) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if slack.ping_interval >= slack.socket_idle_timeout {
        problems.push(ConfigProblem::new(
            "slack.ping_interval_secs",
            "must be shorter than slack.socket_idle_timeout_secs, or every socket looks silent",
        ));
    }
    problems
}

/// `slack.client_id` and `slack.client_secret` come together or not at all.
fn slack_oauth(reader: &mut Reader) -> Option<SlackOAuthConfig> {
    let client_id = reader
        .take("slack.client_id")
        .map(|raw| raw.text.trim().to_string());
    let client_secret = reader.optional_secret("slack.client_secret", None);
    match (client_id, client_secret) {
        (Some(client_id), Some(client_secret)) if !client_id.is_empty() => Some(SlackOAuthConfig {
            client_id,
            client_secret,
        }),
        (None, None) => None,
        (Some(_), None) => {
            reader.problem(
                "slack.client_secret",
                "is required when slack.client_id is set (or set slack.client_secret_file)",
            );
            None
        }
        (_, Some(_)) => {
            reader.problem(
                "slack.client_id",
                "is required when slack.client_secret is set",
            );
            None
        }
    }
}

/// Comma-separated Slack team or Enterprise Grid ids (`T0123ABCD,E0456EFGH`).
fn team_ids(reader: &mut Reader, key: &str) -> Vec<String> {
    let Some((items, origin)) = reader.list(key) else {
        return Vec::new();
    };
    if let Some(bad) = items.iter().find(|id| {
        !(id.starts_with('T') || id.starts_with('E'))
            || id.len() < 2
            || !id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    }) {
        reader.problem(
            key,
            format!(
                "`{}` is not a Slack team id (T…) or enterprise id (E…) (from {origin})",
                bad.escape_debug()
            ),
        );
        return Vec::new();
    }
    items
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{APP, env, problems};

    #[test]
    fn missing_app_token_names_the_key() {
        assert_eq!(
            problems(Config::load(None, &env(&[]))),
            vec!["slack.app_token: is required (or set slack.app_token_file to a file holding it)"]
        );
    }

    #[test]
    fn oauth_credentials_come_in_pairs_and_keep_their_digits() {
        let config = Config::load(
            None,
            &env(&[
                APP,
                (
                    "BITBUCKET_SLACK__SLACK__CLIENT_ID",
                    "4242424242.5151515151515",
                ),
                ("BITBUCKET_SLACK__SLACK__CLIENT_SECRET", "shh"),
            ]),
        )
        .expect("valid");
        let oauth = config.slack.oauth.expect("configured");
        assert_eq!(oauth.client_id, "4242424242.5151515151515");
        assert_eq!(oauth.client_secret.expose(), "shh");
        let lines = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__SLACK__CLIENT_ID", "1.2")]),
        ));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("slack.client_secret: is required"),
            "{}",
            lines[0]
        );
    }
}
