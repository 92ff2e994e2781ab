//! Linking Slack users to Bitbucket accounts: `/bitbucket login`, `logout`, `whoami`, the
//! OAuth callback's work, token refresh with rotation, and the private-repository check.
//!
//! Combines the store, Bitbucket's OAuth consumer and Slack (the "You're connected" DM).
//! A refreshed refresh token is stored before the new access token is used; a token
//! Bitbucket rejects marks the link stale and the user is told once how to log in again.

use std::sync::Arc;

use jiff::SignedDuration;
use tracing::{info, warn};
use url::Url;

use crate::bitbucket::accounts::{AccountError, UserOAuthClient};
use crate::clock::Clock;
use crate::config::Secret;
use crate::message::{Button, Message};
use crate::oauth_state::{self, BITBUCKET_LOGIN, StateClaims};
use crate::slack::web::SlackWeb;
use crate::store::{Store, StoreError, UserLink};

/// Refresh this long before the access token expires.
const REFRESH_MARGIN: SignedDuration = SignedDuration::from_mins(5);

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("linking Bitbucket accounts is not configured")]
    NotConfigured,
    #[error(transparent)]
    Bitbucket(#[from] AccountError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the link is stale: Bitbucket no longer accepts its tokens")]
    Stale,
    #[error(
        "Bitbucket account {bitbucket} is already linked to another Slack user of the workspace"
    )]
    AlreadyLinked { bitbucket: String },
}

impl LoginError {
    pub fn user_message(&self) -> String {
        match self {
            LoginError::NotConfigured => "Linking Bitbucket accounts is not set up here: ask the person who runs bitbucket-slack to configure bitbucket.user_oauth.".into(),
            LoginError::Bitbucket(AccountError::ConsumerRejected { code }) => format!(
                "Bitbucket refused this bitbucket-slack's OAuth consumer (`{code}`). This is a configuration problem for the person who runs bitbucket-slack, not something you can fix: they should check bitbucket.user_oauth.key and bitbucket.user_oauth.secret (and that the consumer still exists with the callback URL {{http.public_url}}/bitbucket/oauth/callback). Trying again will not help until then."
            ),
            LoginError::AlreadyLinked { bitbucket } => format!(
                "The Bitbucket account {bitbucket} is already connected to another Slack user in this workspace. Nothing was changed. To move it here, that person runs /bitbucket logout first; then try again."
            ),
            LoginError::Bitbucket(AccountError::Rejected { .. }) => {
                "Bitbucket did not accept the approval (it may have expired). Run /bitbucket login again. Nothing was changed.".into()
            }
            LoginError::Bitbucket(_) => {
                "Bitbucket could not be reached to finish linking. Nothing was changed; try /bitbucket login again in a minute.".into()
            }
            LoginError::Store(_) => "The link could not be saved. Nothing was changed; the error was logged.".into(),
            LoginError::Stale => "Your Bitbucket link has expired. Run /bitbucket login to connect again.".into(),
        }
    }
}

/// The account-linking service.
#[derive(Clone)]
pub struct Accounts {
    pub store: Store,
    pub web: SlackWeb,
    pub client: Option<UserOAuthClient>,
    pub clock: Arc<dyn Clock>,
    pub public_url: Url,
    /// Rung when a link is removed or goes stale, so access is checked again at once.
    pub link_changes: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accounts")
    }
}

impl Accounts {
    fn client(&self) -> Result<&UserOAuthClient, LoginError> {
        self.client.as_ref().ok_or(LoginError::NotConfigured)
    }

    /// `/bitbucket login`: a button to the consent page, bound to this user.
    pub fn login_reply(&self, team_id: &str, user_id: &str) -> Message {
        if self.client.is_none() {
            return Message::text(LoginError::NotConfigured.user_message());
        }
        if let Ok(Some(link)) = self.store.user_links.get(team_id, user_id) {
            if !link.stale {
                return Message::text(format!(
                    "You are already connected as *{}*. To switch accounts, run `/bitbucket logout` first.",
                    crate::message::escape_inline_code(&link.display_name, 80)
                ));
            }
        }
        let Some(button) = self.login_button(team_id, user_id) else {
            return Message::text(LoginError::NotConfigured.user_message());
        };
        Message::text(
            "Connect your Bitbucket account so notifications can mention you and private repositories you can read can be followed. The link works once, for 10 minutes.",
        )
        .with_button(button)
    }

    /// The "Connect Bitbucket account" button: a signed, single-use link bound to this
    /// person. `None` when linking is not configured.
    pub fn login_button(&self, team_id: &str, user_id: &str) -> Option<Button> {
        self.client.as_ref()?;
        let signed = oauth_state::issue(
            &self.store.oauth_state_key(),
            BITBUCKET_LOGIN,
            oauth_state::random_nonce(),
            Some(team_id.into()),
            Some(user_id.into()),
            self.clock.now(),
        );
        let base = self.public_url.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/bitbucket/login"))
            .unwrap_or_else(|_| self.public_url.clone());
        url.query_pairs_mut().append_pair("state", &signed);
        Some(Button::link(
            "Connect Bitbucket account",
            "bitbucket_login",
            url.as_str(),
        ))
    }

    /// The Slack user's name and the workspace's name, for the login page (ids when
    /// Slack cannot say).
    pub async fn names_for_page(&self, team_id: &str, user_id: &str) -> (String, String) {
        let installation = self.store.installations.get(team_id).ok().flatten();
        let workspace = installation
            .as_ref()
            .map(|installation| installation.team_name.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| team_id.to_string());
        let token = installation.and_then(|installation| installation.bot_token);
        let person = match &token {
            Some(token) => match self.web.user_name(token, user_id).await {
                Ok(Some(name)) => name,
                Ok(None) => user_id.to_string(),
                Err(error) => {
                    warn!(%error, "could not read the user's name for the login page");
                    user_id.to_string()
                }
            },
            None => user_id.to_string(),
        };
        (person, workspace)
    }

    /// Where `/bitbucket/login` sends the browser.
    pub fn authorize_url(&self, state: &str) -> Result<Url, LoginError> {
        Ok(self.client()?.authorize_url(state))
    }

    /// The callback's work, after its state was verified and used up.
    pub async fn complete_login(
        &self,
        claims: &StateClaims,
        code: &str,
    ) -> Result<UserLink, LoginError> {
        let client = self.client()?;
        let (Some(team_id), Some(user_id)) = (&claims.team_id, &claims.user_id) else {
            return Err(AccountError::Decode("the login state names no Slack user".into()).into());
        };
        let now = self.clock.now();
        let tokens = client.exchange_code(code, now).await?;
        let account = client.current_user(&tokens.access_token).await?;
        // One Bitbucket account, one Slack user per workspace: a second person cannot take
        // over someone's mentions and access silently.
        if let Some(other) = self
            .store
            .user_links
            .slack_user_for(team_id, &account.uuid)?
        {
            if &other != user_id {
                warn!(team = %team_id, user = %user_id, "refused to link a Bitbucket account already linked to another Slack user");
                return Err(LoginError::AlreadyLinked {
                    bitbucket: account.display_name,
                });
            }
        }
        let link = UserLink {
            team_id: team_id.clone(),
            slack_user_id: user_id.clone(),
            bitbucket_uuid: account.uuid,
            account_id: account.account_id,
            display_name: account.display_name,
            nickname: account.nickname,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            access_expires_at: tokens.expires_at,
            linked_at: now,
            stale: false,
            stale_notified: false,
            scopes: tokens.scopes,
            reconnect_asked: false,
        };
        self.store.user_links.put(&link).await?;
        self.link_changes.notify_one();
        info!(team = %team_id, user = %user_id, "Bitbucket account linked");
        self.direct_message(
            team_id,
            user_id,
            &Message::text(format!(
                "You're connected to Bitbucket as *{}*{}. Notifications will mention you. Not you? Run `/bitbucket logout` at once.",
                crate::message::escape_inline_code(&link.display_name, 80),
                link.nickname
                    .as_deref()
                    .map(|nick| format!(" (`{}`)", crate::message::escape_inline_code(nick, 60)))
                    .unwrap_or_default()
            )),
        )
        .await;
        Ok(link)
    }

    /// `/bitbucket logout`.
    pub async fn logout(&self, team_id: &str, user_id: &str) -> Message {
        match self.store.user_links.remove(team_id, user_id).await {
            Ok(true) => {
                self.link_changes.notify_one();
                Message::text("Your Bitbucket account is disconnected, and its tokens are deleted.")
            }
            Ok(false) => Message::text("You have no Bitbucket account connected."),
            Err(error) => {
                warn!(%error, "could not remove a user link");
                Message::text(LoginError::Store(error).user_message())
            }
        }
    }

    /// `/bitbucket whoami`.
    pub fn whoami(&self, team_id: &str, user_id: &str) -> Message {
        match self.store.user_links.get(team_id, user_id) {
            Ok(Some(link)) if link.stale => Message::text(format!(
                "You were connected as *{}*, but Bitbucket no longer accepts that link. Run `/bitbucket login` to connect again.",
                crate::message::escape_inline_code(&link.display_name, 80)
            )),
            Ok(Some(link)) => Message::text(format!(
                "You are connected to Bitbucket as *{}*{} since {}.",
                crate::message::escape_inline_code(&link.display_name, 80),
                link.nickname
                    .as_deref()
                    .map(|nick| format!(" (`{}`)", crate::message::escape_inline_code(nick, 60)))
                    .unwrap_or_default(),
                link.linked_at.strftime("%Y-%m-%d")
            )),
            Ok(None) => Message::text(
                "You have no Bitbucket account connected. Run `/bitbucket login` to connect one.",
            ),
            Err(error) => {
                warn!(%error, "could not read a user link");
                Message::text(LoginError::Store(error).user_message())
            }
        }
    }

    /// A usable access token for the user, refreshed (and the rotated refresh token
    /// stored first) when it is about to expire. `None` when the user has no link.
    pub async fn access_token(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<Option<Secret<String>>, LoginError> {
        let Some(mut link) = self.store.user_links.get(team_id, user_id)? else {
            return Ok(None);
        };
        if link.stale {
            return Err(LoginError::Stale);
        }
        let now = self.clock.now();
        if link.access_expires_at > now.checked_add(REFRESH_MARGIN).unwrap_or(now) {
            return Ok(Some(link.access_token));
        }
        match self.client()?.refresh(&link.refresh_token, now).await {
            Ok(tokens) => {
                link.access_token = tokens.access_token;
                link.refresh_token = tokens.refresh_token;
                link.access_expires_at = tokens.expires_at;
                if tokens.scopes.is_some() {
                    link.scopes = tokens.scopes;
                }
                // The old refresh token is dead now: the new one must be on disk first.
                self.store.user_links.put(&link).await?;
                Ok(Some(link.access_token))
            }
            Err(AccountError::Rejected { code }) => {
                warn!(team = team_id, user = user_id, %code, "Bitbucket rejected a refresh token; marking the link stale");
                self.mark_stale(link).await?;
                Err(LoginError::Stale)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Bitbucket refused the person's access token outright: the link is stale.
    pub async fn link_rejected(&self, team_id: &str, user_id: &str) {
        match self.store.user_links.get(team_id, user_id) {
            Ok(Some(link)) if !link.stale => {
                if let Err(error) = self.mark_stale(link).await {
                    warn!(%error, "could not mark a link stale");
                }
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "could not read a user link"),
        }
    }

    async fn mark_stale(&self, mut link: UserLink) -> Result<(), LoginError> {
        let tell = !link.stale_notified;
        link.stale = true;
        link.stale_notified = true;
        self.store.user_links.put(&link).await?;
        self.link_changes.notify_one();
        if tell {
            self.direct_message(
                &link.team_id,
                &link.slack_user_id,
                &Message::text(LoginError::Stale.user_message()),
            )
            .await;
        }
        Ok(())
    }

    /// A DM to the person, best effort (a failure is logged).
    pub async fn tell(&self, team_id: &str, user_id: &str, reply: &Message) {
        self.direct_message(team_id, user_id, reply).await;
    }

    /// Best effort: a DM that fails is logged, never an error for the flow.
    async fn direct_message(&self, team_id: &str, user_id: &str, reply: &Message) {
        let token = match self.store.installations.get(team_id) {
            Ok(Some(installation)) => installation.bot_token,
            _ => None,
        };
        let Some(token) = token else {
            warn!(team = team_id, "no bot token to send a direct message with");
            return;
        };
        if let Err(error) = self.web.post_message(&token, user_id, reply).await {
            warn!(team = team_id, user = user_id, %error, "could not send a direct message");
        }
    }
}
