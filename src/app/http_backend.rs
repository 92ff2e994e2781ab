//! The daemon's side of the HTTP pages: [`HttpBackend`] implements [`http::Backend`] with
//! the installer, the accounts and the supervisor's component states.
//!
//! Owns the translation from the services' errors to what a page says: the cause is
//! logged here, the person sees the service's user message. Must never put a token or a
//! cause into an outcome; the pages show outcomes verbatim.

use serde_json::Value;
use tracing::warn;
use url::Url;

use super::accounts::{Accounts, LoginError};
use super::installations::{InstallError, Installer};
use super::supervisor::Components;
use crate::config::SlackOAuthConfig;
use crate::http::{self, BackendFuture, InstallOutcome, LoginOutcome};
use crate::oauth_state::StateClaims;

/// What `http/` may ask of the daemon.
#[derive(Debug, Clone)]
pub struct HttpBackend {
    pub installer: Installer,
    pub accounts: Accounts,
    pub components: Components,
}

impl http::Backend for HttpBackend {
    fn slack_team_allowed(&self, team: &str) -> bool {
        self.installer.allows([team])
    }

    fn complete_slack_install<'a>(
        &'a self,
        oauth: &'a SlackOAuthConfig,
        code: &'a str,
        redirect_uri: &'a str,
        bound_team: Option<&'a str>,
    ) -> BackendFuture<'a, InstallOutcome> {
        Box::pin(async move {
            match self
                .installer
                .complete_oauth(oauth, code, redirect_uri, bound_team)
                .await
            {
                Ok(installation) => InstallOutcome::Installed {
                    team_name: installation.team_name,
                    scopes: installation.scopes,
                },
                Err(error @ InstallError::TeamNotAllowed { .. }) => InstallOutcome::NotAllowed {
                    message: error.user_message(),
                },
                Err(error) => {
                    warn!(%error, "install failed");
                    InstallOutcome::Failed {
                        message: error.user_message(),
                    }
                }
            }
        })
    }

    fn bitbucket_authorize_url(&self, signed_state: &str) -> Result<Url, String> {
        self.accounts
            .authorize_url(signed_state)
            .map_err(|error| error.user_message())
    }

    fn login_page_names<'a>(
        &'a self,
        team_id: &'a str,
        user_id: &'a str,
    ) -> BackendFuture<'a, (String, String)> {
        Box::pin(self.accounts.names_for_page(team_id, user_id))
    }

    fn complete_bitbucket_login<'a>(
        &'a self,
        claims: &'a StateClaims,
        code: &'a str,
    ) -> BackendFuture<'a, LoginOutcome> {
        Box::pin(async move {
            match self.accounts.complete_login(claims, code).await {
                Ok(link) => LoginOutcome::Linked {
                    display_name: link.display_name,
                },
                Err(error @ LoginError::AlreadyLinked { .. }) => LoginOutcome::AlreadyLinked {
                    message: error.user_message(),
                },
                Err(error) => {
                    warn!(%error, "Bitbucket login failed");
                    LoginOutcome::Failed {
                        message: error.user_message(),
                    }
                }
            }
        })
    }

    fn served_over_https(&self) -> bool {
        self.accounts.public_url.scheme() == "https"
    }

    fn unhealthy_components(&self) -> Vec<String> {
        self.components.unhealthy()
    }

    fn components_snapshot(&self) -> Value {
        serde_json::to_value(self.components.snapshot()).unwrap_or(Value::Null)
    }
}
