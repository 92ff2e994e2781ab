//! Installing the app into a workspace, either way in: a configured bot token
//! (auth.test) or the OAuth v2 flow (oauth.v2.access, then auth.test), and re-reading
//! a configured token's scopes.
//!
//! Combines the Slack Web API and the store; the HTTP routes and the startup code call
//! it. Every failure leaves the stored installation as it was.

use std::sync::Arc;

use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::{Secret, SlackOAuthConfig};
use crate::slack::web::{SlackError, SlackWeb};
use crate::store::{InstallSource, Installation, InstallationState, Store, StoreError};
use crate::upgrade;

/// Why an install did not happen. [`InstallError::user_message`] is what a person reads.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Slack(#[from] SlackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the approval was for workspace {got}, but this link was for {expected}")]
    WrongWorkspace { expected: String, got: String },
    #[error("Slack's answer names no workspace")]
    NoWorkspace,
    #[error("workspace {team} is not in slack.allowed_teams")]
    TeamNotAllowed { team: String, name: String },
}

impl InstallError {
    pub fn user_message(&self) -> String {
        match self {
            InstallError::Slack(SlackError::Api { code, .. }) if code == "invalid_code" => {
                "Slack did not accept the approval code (it may have been used already). Start the install again.".into()
            }
            InstallError::Slack(SlackError::Api { code, .. }) => {
                format!("Slack refused the installation (error `{code}`). Nothing was changed.")
            }
            InstallError::Slack(_) => {
                "Slack could not be reached to finish the installation. Nothing was changed; try again in a minute.".into()
            }
            InstallError::Store(_) => {
                "The installation could not be saved. Nothing was changed; the error was logged.".into()
            }
            InstallError::WrongWorkspace { expected, .. } => format!(
                "You approved the app for a different workspace than the one this link was for ({expected}). Nothing was changed."
            ),
            InstallError::NoWorkspace => {
                "Slack's answer named no workspace. Nothing was changed.".into()
            }
            InstallError::TeamNotAllowed { team, name } => format!(
                "This bitbucket-slack is not open to the workspace {name} ({team}): its operator allows only some workspaces (slack.allowed_teams). Nothing was stored. Ask the person who runs it to add {team} if it should be allowed."
            ),
        }
    }
}

/// Installs and re-checks installations.
#[derive(Clone)]
pub struct Installer {
    pub web: SlackWeb,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Rung whenever an installation changes (installed, reinstalled, removed), so the
    /// poller's watch list follows at once.
    pub changed: Arc<tokio::sync::Notify>,
    /// Told which workspace's scopes were just read, so its permission-upgrade campaign
    /// follows at once (an upgrade through OAuth, a reinstall seen by auth.test).
    pub upgrades: super::upgrade_driver::UpgradeSignal,
    /// `slack.allowed_teams`: the team or Grid ids that may install through OAuth (empty:
    /// any).
    pub allowed_teams: Vec<String>,
}

impl Installer {
    /// Whether `slack.allowed_teams` lets in a workspace known by these ids (its team id
    /// and, in a Grid, its organisation's): any of them listed, or the list empty.
    pub fn allows<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> bool {
        self.allowed_teams.is_empty()
            || ids
                .into_iter()
                .any(|id| self.allowed_teams.iter().any(|allowed| allowed == id))
    }
}

impl std::fmt::Debug for Installer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Installer")
    }
}

impl Installer {
    /// Single-workspace mode: reads the configured token's workspace and scopes with
    /// auth.test and records the installation. A workspace installed through OAuth keeps
    /// its OAuth token: the configured one is then ignored, with a warning.
    pub async fn install_configured_token(
        &self,
        bot_token: &Secret<String>,
    ) -> Result<Installation, InstallError> {
        let identity = self.web.auth_test(bot_token).await?;
        if let Some(existing) = self.store.installations.get(&identity.team_id)? {
            if existing.source == InstallSource::OAuth && existing.is_active() {
                warn!(team = %identity.team_id, "the workspace was installed through OAuth; ignoring slack.bot_token for it");
                return Ok(existing);
            }
        }
        let now = self.clock.now();
        let scopes = identity.scopes.unwrap_or_default();
        let installation = Installation {
            team_id: identity.team_id,
            team_name: identity.team_name,
            enterprise_id: identity.enterprise_id,
            bot_user_id: identity.bot_user_id,
            bot_id: identity.bot_id,
            app_id: None,
            bot_token: Some(bot_token.clone()),
            scopes,
            installer_user_id: None,
            installed_at: now,
            updated_at: now,
            state: InstallationState::Active,
            source: InstallSource::ConfiguredToken,
        };
        let stored = self.store.installations.upsert(installation).await?;
        self.changed.notify_one();
        self.upgrades.scopes_changed(&stored.team_id);
        info!(
            team = %stored.team_id,
            permissions = upgrade::permission_level(&stored.scopes).name(),
            scopes = %stored.scopes.join(","),
            "workspace installed from slack.bot_token"
        );
        Ok(stored)
    }

    /// Finishes the OAuth flow: exchanges `code`, reads the bot's identity, stores the
    /// installation (a reinstall updates it in place). `bound_team` is the workspace the
    /// flow was started for, if any.
    pub async fn complete_oauth(
        &self,
        oauth: &SlackOAuthConfig,
        code: &str,
        redirect_uri: &str,
        bound_team: Option<&str>,
    ) -> Result<Installation, InstallError> {
        let grant = self
            .web
            .oauth_v2_access(&oauth.client_id, &oauth.client_secret, code, redirect_uri)
            .await?;
        let team_id = grant
            .team_id
            .clone()
            .or_else(|| grant.enterprise_id.clone())
            .ok_or(InstallError::NoWorkspace)?;
        let ids = [grant.team_id.as_deref(), grant.enterprise_id.as_deref()];
        if !self.allows(ids.into_iter().flatten()) {
            warn!(team = %team_id, enterprise = grant.enterprise_id.as_deref().unwrap_or("-"), "install refused: not in slack.allowed_teams");
            // Nothing is stored, and the token Slack just issued is given back.
            if let Err(error) = self.web.auth_revoke(&grant.bot_token).await {
                warn!(%error, "could not revoke the refused install's token");
            }
            return Err(InstallError::TeamNotAllowed {
                name: grant
                    .team_name
                    .clone()
                    .or(grant.enterprise_name.clone())
                    .unwrap_or_else(|| team_id.clone()),
                team: team_id,
            });
        }
        if let Some(expected) = bound_team {
            if expected != team_id {
                return Err(InstallError::WrongWorkspace {
                    expected: expected.to_string(),
                    got: team_id,
                });
            }
        }
        let identity = self.web.auth_test(&grant.bot_token).await?;
        let now = self.clock.now();
        let installation = Installation {
            team_id,
            team_name: grant
                .team_name
                .or(grant.enterprise_name)
                .unwrap_or(identity.team_name),
            enterprise_id: grant.enterprise_id,
            bot_user_id: if grant.bot_user_id.is_empty() {
                identity.bot_user_id
            } else {
                grant.bot_user_id
            },
            bot_id: identity.bot_id,
            app_id: grant.app_id,
            bot_token: Some(grant.bot_token),
            scopes: identity.scopes.unwrap_or(grant.scopes),
            installer_user_id: grant.installer_user_id,
            installed_at: now,
            updated_at: now,
            state: InstallationState::Active,
            source: InstallSource::OAuth,
        };
        let stored = self.store.installations.upsert(installation).await?;
        self.changed.notify_one();
        self.upgrades.scopes_changed(&stored.team_id);
        info!(
            team = %stored.team_id,
            installer = stored.installer_user_id.as_deref().unwrap_or("-"),
            permissions = upgrade::permission_level(&stored.scopes).name(),
            "workspace installed through OAuth"
        );
        Ok(stored)
    }
}
