//! The `[bitbucket]` section: its validated shape ([`BitbucketConfig`]), the poller's
//! credential (access token, API token with email, or OAuth consumer), the login consumer,
//! the private-repository policy and the allowed workspaces.
//!
//! Owns every message about a `bitbucket.*` key. Must never print a secret (tokens and
//! consumer secrets stay in [`Secret`](crate::secret::Secret); problems name the key) and never read another
//! section's keys.

use std::time::Duration;

use url::Url;

use super::raw::Reader;

#[derive(Debug, Clone)]
pub struct BitbucketConfig {
    pub api_url: Url,
    /// Base of Bitbucket's OAuth endpoints (`authorize`, `access_token`).
    pub oauth_url: Url,
    /// The OAuth consumer people log in through (`/bitbucket login`); `None` disables it.
    pub user_oauth: Option<OAuthConsumerConfig>,
    /// The poller's credential; `None` runs the daemon without a poller.
    pub credential: Option<BitbucketCredential>,
    /// The shortest interval at which any repository is polled.
    pub poll_interval: Duration,
    /// Requests an hour the credential may make (learned from `X-RateLimit-Limit` when sent).
    pub rate_limit_per_hour: u32,
    /// The share of `rate_limit_per_hour` the poller spends, in percent.
    pub budget_percent: u32,
    /// The bound on every Bitbucket request, connect to last byte.
    pub request_timeout: Duration,
    /// Who decides whether a channel may follow a private repository.
    pub private_repositories: PrivateRepositories,
    /// The workspaces that may be subscribed and polled (lower case); empty means any the
    /// credential can read.
    pub workspaces: Vec<String>,
}

/// `bitbucket.private_repositories`: who may bring a private repository into a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateRepositories {
    /// The subscriber's own linked Bitbucket account must be able to read it (default).
    Linked,
    /// Private repositories can never be subscribed.
    Deny,
    /// The daemon's credential decides: anything it can read (a one-team install).
    Credential,
}

impl PrivateRepositories {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivateRepositories::Linked => "linked",
            PrivateRepositories::Deny => "deny",
            PrivateRepositories::Credential => "credential",
        }
    }
}

pub use crate::bitbucket::credential::{BitbucketCredential, OAuthConsumerConfig};

impl BitbucketConfig {
    /// The poller's client settings, or `None` when no credential is configured.
    pub fn client_settings(&self) -> Option<crate::bitbucket::ClientSettings> {
        Some(crate::bitbucket::ClientSettings {
            api_url: self.api_url.clone(),
            oauth_url: self.oauth_url.clone(),
            credential: self.credential.clone()?,
            rate_limit_per_hour: self.rate_limit_per_hour,
            budget_percent: self.budget_percent,
            request_timeout: self.request_timeout,
        })
    }

    /// How the poller runs: `poll_interval` as its base interval.
    pub fn poller_settings(&self) -> crate::bitbucket::PollerSettings {
        crate::bitbucket::PollerSettings {
            base_interval: self.poll_interval,
            concurrency: 4,
            sync_interval: self.poll_interval.min(Duration::from_secs(10)),
        }
    }
}

/// Reads the `bitbucket.*` keys, in a fixed order so problems are listed in a stable order.
pub(super) fn read(reader: &mut Reader) -> BitbucketConfig {
    BitbucketConfig {
        api_url: reader.url("bitbucket.api_url"),
        oauth_url: reader.url("bitbucket.oauth_url"),
        user_oauth: oauth_consumer(reader, "bitbucket.user_oauth"),
        credential: bitbucket_credential(reader),
        poll_interval: Duration::from_secs(reader.integer("bitbucket.poll_interval_secs", 1, 3600)),
        rate_limit_per_hour: reader.integer("bitbucket.rate_limit_per_hour", 60, 100_000) as u32,
        budget_percent: reader.integer("bitbucket.budget_percent", 1, 100) as u32,
        request_timeout: Duration::from_secs(reader.integer(
            "bitbucket.request_timeout_secs",
            1,
            300,
        )),
        private_repositories: private_repositories(reader, "bitbucket.private_repositories"),
        workspaces: workspace_ids(reader, "bitbucket.workspaces"),
    }
}

/// `{prefix}.key` and `{prefix}.secret` (or `secret_file`) together, or neither.
fn oauth_consumer(reader: &mut Reader, prefix: &str) -> Option<OAuthConsumerConfig> {
    let key_name = format!("{prefix}.key");
    let secret_name = format!("{prefix}.secret");
    let key = reader
        .take(&key_name)
        .map(|raw| raw.text.trim().to_string());
    let secret = reader.optional_secret(&secret_name, None);
    match (key, secret) {
        (Some(key), Some(secret)) if !key.is_empty() => Some(OAuthConsumerConfig { key, secret }),
        (None, None) => None,
        (Some(_), None) => {
            reader.problem(
                &secret_name,
                format!("is required when {key_name} is set (or set {secret_name}_file)"),
            );
            None
        }
        (_, Some(_)) => {
            reader.problem(&key_name, format!("is required when {secret_name} is set"));
            None
        }
    }
}

/// `bitbucket.token` (with `bitbucket.email` for an API token) or the
/// `bitbucket.oauth.*` consumer; none at all is fine, both is a mistake.
fn bitbucket_credential(reader: &mut Reader) -> Option<BitbucketCredential> {
    let token = reader.optional_secret("bitbucket.token", None);
    let email = reader
        .take("bitbucket.email")
        .map(|raw| raw.text.trim().to_string());
    let consumer = oauth_consumer(reader, "bitbucket.oauth");
    match (token, email, consumer) {
        (Some(_), _, Some(_)) => {
            reader.problem(
                "bitbucket.token",
                "set either bitbucket.token or bitbucket.oauth.key and bitbucket.oauth.secret, not both",
            );
            None
        }
        (Some(token), None, None) => Some(BitbucketCredential::AccessToken(token)),
        (Some(token), Some(email), None) if !email.is_empty() => {
            Some(BitbucketCredential::ApiToken { email, token })
        }
        (_, Some(_), _) => {
            reader.problem(
                "bitbucket.email",
                "is only used with bitbucket.token (an API token); set the token too",
            );
            None
        }
        (None, None, consumer) => consumer.map(BitbucketCredential::OAuthConsumer),
    }
}

fn private_repositories(reader: &mut Reader, key: &str) -> PrivateRepositories {
    let Some(raw) = reader.take_defaulted(key) else {
        return PrivateRepositories::Linked;
    };
    match raw.text.trim() {
        "linked" => PrivateRepositories::Linked,
        "deny" => PrivateRepositories::Deny,
        "credential" => PrivateRepositories::Credential,
        other => {
            reader.problem(
                key,
                format!(
                    "`{}` must be \"linked\", \"deny\" or \"credential\" (from {})",
                    other.escape_debug(),
                    raw.origin
                ),
            );
            PrivateRepositories::Linked
        }
    }
}

/// Comma-separated Bitbucket workspace ids (`acme,globex`), lower-cased; possibly empty.
fn workspace_ids(reader: &mut Reader, key: &str) -> Vec<String> {
    let Some((items, origin)) = reader.list(key) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for item in items {
        match item.parse::<crate::bitbucket::name::WorkspaceId>() {
            Ok(id) => ids.push(id.as_str().to_string()),
            Err(error) => {
                reader.problem(
                    key,
                    format!(
                        "`{}` is not a Bitbucket workspace id such as `acme`: {} (from {origin})",
                        item.escape_debug(),
                        error.reason
                    ),
                );
                return Vec::new();
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{APP, env, problems};

    #[test]
    fn bitbucket_runs_without_a_credential_by_default() {
        let config = Config::load(None, &env(&[APP])).expect("valid");
        let bitbucket = &config.bitbucket;
        assert!(bitbucket.credential.is_none());
        assert_eq!(bitbucket.poll_interval, Duration::from_secs(60));
        assert_eq!(bitbucket.rate_limit_per_hour, 1000);
        assert_eq!(bitbucket.budget_percent, 80);
    }

    #[test]
    fn bitbucket_credentials_of_each_kind() {
        let access = Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__BITBUCKET__TOKEN", "ATCTT-access")]),
        )
        .expect("valid");
        assert!(matches!(
            access.bitbucket.credential,
            Some(BitbucketCredential::AccessToken(ref t)) if t.expose() == "ATCTT-access"
        ));
        let api = Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__BITBUCKET__TOKEN", "ATATT-api"),
                ("BITBUCKET_SLACK__BITBUCKET__EMAIL", "bot@example.com"),
            ]),
        )
        .expect("valid");
        assert!(matches!(
            api.bitbucket.credential,
            Some(BitbucketCredential::ApiToken { ref email, .. }) if email == "bot@example.com"
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[bitbucket]\npoll_interval_secs = 1\n[bitbucket.oauth]\nkey = \"consumer-key\"\nsecret = \"consumer-secret\"\n",
        )
        .expect("write");
        let oauth = Config::load(Some(&file), &env(&[APP])).expect("valid");
        assert!(matches!(
            oauth.bitbucket.credential,
            Some(BitbucketCredential::OAuthConsumer(ref consumer)) if consumer.key == "consumer-key"
        ));
        assert_eq!(oauth.bitbucket.poll_interval, Duration::from_secs(1));
        assert!(!format!("{oauth:?}").contains("consumer-secret"));
    }

    #[test]
    fn bitbucket_credential_mistakes_name_the_keys() {
        let both = problems(Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__BITBUCKET__TOKEN", "t"),
                ("BITBUCKET_SLACK__BITBUCKET__OAUTH__KEY", "k"),
                ("BITBUCKET_SLACK__BITBUCKET__OAUTH__SECRET", "s"),
            ]),
        ));
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(
            both[0].starts_with("bitbucket.token: set either"),
            "{both:?}"
        );
        let email_only = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__BITBUCKET__EMAIL", "a@b.c")]),
        ));
        assert_eq!(email_only.len(), 1, "{email_only:?}");
        assert!(email_only[0].starts_with("bitbucket.email:"));
        let zero = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__BITBUCKET__POLL_INTERVAL_SECS", "0")]),
        ));
        assert!(
            zero[0].starts_with("bitbucket.poll_interval_secs: 0 is out of range"),
            "{zero:?}"
        );
    }
}
