//! How the daemon authenticates to Bitbucket Cloud as itself (the poller's credential),
//! as configured under `bitbucket.*`.
//!
//! Plain data: `config/` builds it, the client uses it. Must never print a secret (every
//! secret is a [`Secret`]) or import the configuration.

use crate::secret::Secret;

/// How the poller authenticates to Bitbucket Cloud.
#[derive(Debug, Clone)]
pub enum BitbucketCredential {
    /// A repository, project or workspace access token, sent as a Bearer token.
    AccessToken(Secret<String>),
    /// An Atlassian API token of a (bot) user, sent with Basic auth and the account email.
    ApiToken {
        email: String,
        token: Secret<String>,
    },
    /// An OAuth consumer (`bitbucket.oauth.*`) using the client-credentials grant.
    OAuthConsumer(OAuthConsumerConfig),
}

/// A Bitbucket OAuth consumer's key and secret.
#[derive(Debug, Clone)]
pub struct OAuthConsumerConfig {
    pub key: String,
    pub secret: Secret<String>,
}
