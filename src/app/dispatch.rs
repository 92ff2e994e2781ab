//! Routes each envelope to its handler: slash commands to the command parser and its
//! effects, lifecycle events to the installation store, interactions to theirs.
//!
//! Runs on the handler tasks that `slack::socket` spawns, never on a socket's reader.
//! Each envelope's team id (or enterprise id) selects the installation; an envelope from
//! a workspace without an active installation is answered with how to install, never
//! served with another workspace's data. A handler's failure becomes a reply to the user
//! and a log line; it never reaches the socket, the poller or the process.

use std::sync::Arc;

use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::commands::status::{StatusView, status_reply};
use crate::commands::{self, Command};
use crate::config::Secret;
use crate::message::Message;
use crate::slack::envelope::{
    BlockActions, Event, EventCallback, HomeTab, Interaction, InteractionKind, MessageIm,
    SlashCommand,
};
use crate::slack::socket::{EnvelopeHandler, SocketHealth};
use crate::store::{InstallSource, Installation, Store};
use crate::upgrade;

use super::accounts::Accounts;
use super::actions::PullRequestActions;
use super::home::Home;
use super::installations::Installer;
use super::subscriptions::Subscriptions;
use super::unfurls::Unfurls;
use super::upgrade_driver::{AnswerTo, Campaigns};

/// What the handlers need.
#[derive(Clone)]
pub struct DispatchContext {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub sockets: SocketHealth,
    pub installer: Installer,
    pub accounts: Accounts,
    /// Approve, merge, comment, decline and rerun with the person's own account.
    pub actions: PullRequestActions,
    pub subscriptions: Subscriptions,
    /// The configured single-workspace token, re-checked by `/bitbucket status`.
    pub configured_bot_token: Option<Secret<String>>,
    /// Where admins install the app, when OAuth is configured.
    pub install_url: Option<String>,
    /// The permission-upgrade dates and extra admins.
    pub upgrade: crate::config::UpgradeConfig,
    /// The permission-upgrade campaigns (admins, phases, click answers).
    pub campaigns: Campaigns,
    /// Link previews (`link_shared` → `chat.unfurl`).
    pub unfurls: Unfurls,
    /// `/bitbucket remind`.
    pub reminders: super::reminders::ReviewReminders,
}

/// The daemon's envelope handler.
pub struct Dispatcher {
    context: DispatchContext,
    /// The App Home tab (built from the context).
    home: Home,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

impl Dispatcher {
    pub fn new(context: DispatchContext) -> Self {
        let home = Home::new(
            context.store.clone(),
            context.accounts.web.clone(),
            context.accounts.clone(),
            context.subscriptions.clone(),
            context.campaigns.clone(),
            context.upgrade.clone(),
            context.clock.clone(),
        );
        Self { context, home }
    }

    /// `app_home_opened`: the "home" tab is published for the person; the "messages"
    /// tab is not this handler's. Before the workspace's permission upgrade a configured
    /// token's scopes are read again first, so an update shows at once.
    async fn home_opened(&self, team_id: &str, user: &str, tab: &HomeTab) {
        if *tab != HomeTab::Home {
            debug!(team = team_id, ?tab, "app_home_opened on another tab");
            return;
        }
        let Some(installation) = self.event_installation(team_id, "app_home_opened") else {
            return;
        };
        let installation = if upgrade::is_available(upgrade::Feature::AppHome, &installation.scopes)
        {
            installation
        } else {
            self.recheck_if_configured(installation).await
        };
        self.home.opened(&installation, user).await;
    }

    fn not_installed(&self) -> Message {
        let how = match &self.context.install_url {
            Some(url) => format!("A workspace admin can install it at {url}"),
            None => "Ask the person who runs bitbucket-slack to install it here.".to_string(),
        };
        Message::text(format!(
            "Bitbucket for Slack is not installed in this workspace. {how}"
        ))
    }

    async fn status(&self, installation: Installation) -> Message {
        let installation = self.recheck_if_configured(installation).await;
        let store = &self.context.store;
        let team_subscriptions: Vec<_> = store
            .subscriptions
            .list_all()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.team_id == installation.team_id)
            .collect();
        let dead_letters = store
            .deliveries
            .dead_letters()
            .unwrap_or_default()
            .iter()
            .filter(|d| d.team_id == installation.team_id)
            .count();
        let upgrade = self.upgrade_line(&installation);
        let view = StatusView {
            level: upgrade::permission_level(&installation.scopes),
            team_name: installation.team_name,
            team_id: installation.team_id,
            installed_by: match installation.source {
                InstallSource::ConfiguredToken => "installed with a configured bot token".into(),
                InstallSource::OAuth => "installed through Slack".into(),
            },
            sockets_connected: self.context.sockets.connected_count(),
            sockets_total: self.context.sockets.snapshot().len(),
            subscriptions: team_subscriptions.len(),
            paused_subscriptions: team_subscriptions
                .iter()
                .filter(|s| s.paused.is_some())
                .count(),
            dead_letters,
            upgrade,
            access: self.context.subscriptions.access.describe_policy(),
        };
        status_reply(&view)
    }

    /// A configured token's scopes change when the app is reinstalled from its settings
    /// page; `status` re-reads them so it tells the truth.
    async fn recheck_if_configured(&self, installation: Installation) -> Installation {
        let Some(token) = &self.context.configured_bot_token else {
            return installation;
        };
        if installation.source != InstallSource::ConfiguredToken {
            return installation;
        }
        match self.context.installer.install_configured_token(token).await {
            Ok(fresh) if fresh.team_id == installation.team_id => fresh,
            Ok(_) => installation,
            Err(error) => {
                warn!(%error, "could not re-check the configured bot token's scopes");
                installation
            }
        }
    }

    /// Where the permission update stands, for `/bitbucket status`: the campaign's phase
    /// and dates (the status lists what is missing above it). Nothing once the scopes are
    /// current, even before the driver has recorded the upgrade.
    fn upgrade_line(&self, installation: &Installation) -> Option<String> {
        if upgrade::permission_level(&installation.scopes) == upgrade::PermissionLevel::Current {
            return None;
        }
        let state = self.context.campaigns.current_state(installation);
        Some(upgrade::campaign::phase_summary(
            &state,
            &self.context.upgrade.schedule,
            self.context.clock.now(),
        ))
    }

    /// The admins to name: the campaign's (workspace admins and owners, the installer,
    /// `upgrade.admins`), else the configured ones and the installer.
    fn admins(&self, installation: &Installation) -> Vec<String> {
        self.context.campaigns.admins(installation)
    }

    /// The help, without the commands whose features the workspace's scopes do not allow.
    fn help(&self, installation: &Installation) -> Message {
        let available = upgrade::available_features(&installation.scopes);
        commands::help_without(&commands::unavailable_commands(&available))
    }

    /// The active installation an interaction comes from (the team, else the Grid org).
    fn interaction_installation(&self, interaction: &Interaction) -> Option<Installation> {
        let team_id = interaction.team_id.as_deref();
        match self
            .context
            .store
            .installations
            .for_team(team_id, interaction.enterprise_id.as_deref())
        {
            Ok(Some(installation)) if installation.is_active() => Some(installation),
            Ok(_) => {
                info!(
                    team = team_id,
                    "an interaction from a workspace without an active installation"
                );
                None
            }
            Err(error) => {
                error!(team = team_id, %error, "could not read the installation");
                None
            }
        }
    }

    /// Actions need the feature's scopes: before the workspace's permission upgrade the
    /// person is told an admin must update them, naming the admins.
    fn actions_refusal(&self, installation: &Installation) -> Option<Message> {
        let feature = upgrade::Feature::PullRequestActions;
        if upgrade::is_available(feature, &installation.scopes) {
            return None;
        }
        Some(upgrade::messages::feature_unavailable(
            feature.spec().name,
            &upgrade::missing_for(feature, &installation.scopes),
            &self.admins(installation),
        ))
    }

    /// A click on an action button of a pull-request or pipeline message.
    async fn action_click(
        &self,
        interaction: &Interaction,
        click: &BlockActions,
        action: &crate::slack::envelope::BlockAction,
    ) {
        let Some(installation) = self.interaction_installation(interaction) else {
            return;
        };
        if let Some(refusal) = self.actions_refusal(&installation) {
            if let (Some(token), Some(channel)) = (&installation.bot_token, &click.channel) {
                let _ = self
                    .context
                    .actions
                    .web
                    .post_ephemeral(token, channel, &click.user, &refusal)
                    .await;
            }
            return;
        }
        self.context
            .actions
            .clicked(&installation, click, action)
            .await;
    }

    /// A click on one of the campaign's buttons.
    async fn upgrade_click(
        &self,
        interaction: &Interaction,
        click: &BlockActions,
        action_id: &str,
    ) {
        let Some(team_id) = interaction.team_id.as_deref() else {
            debug!("block_actions without a team id ignored");
            return;
        };
        let user_id = click.user.as_str();
        // The same resolution as slash commands: the team, else the Grid org.
        let installation = match self
            .context
            .store
            .installations
            .for_team(Some(team_id), interaction.enterprise_id.as_deref())
        {
            Ok(Some(installation)) if installation.is_active() => installation,
            Ok(_) => {
                info!(
                    team = team_id,
                    "a click from a workspace without an active installation"
                );
                return;
            }
            Err(error) => {
                error!(team = team_id, %error, "could not read the installation");
                return;
            }
        };
        let answer_to = match &click.response_url {
            Some(url) => AnswerTo::ResponseUrl(url.clone()),
            None => AnswerTo::Channel(click.channel.as_deref().unwrap_or(user_id).to_string()),
        };
        if action_id == upgrade::messages::CHECK_AGAIN_ACTION_ID {
            let checked = self.recheck_if_configured(installation).await;
            let reply = upgrade::messages::check_again_result(
                &super::upgrade_driver::missing_scopes(&checked),
            );
            self.context
                .campaigns
                .answer_ephemerally(
                    checked.bot_token.as_ref(),
                    user_id,
                    &reply,
                    Some(&answer_to),
                )
                .await;
            return;
        }
        self.context
            .campaigns
            .clicked(&installation, user_id, answer_to)
            .await;
    }

    /// The upgrade story's gating: until the permissions are updated, from the
    /// availability date new users cannot log in (and the admins are nudged), from the
    /// deadline only `help`, `status` and `upgrade` answer, and a command whose feature
    /// needs missing scopes is refused.
    async fn upgrade_refusal(
        &self,
        installation: &Installation,
        user_id: &str,
        command: &Command,
    ) -> Option<Message> {
        let gate = upgrade::gate(
            &installation.scopes,
            &self.context.upgrade.schedule,
            self.context.clock.now(),
        );
        if matches!(command, Command::Help | Command::Status | Command::Upgrade) {
            return None;
        }
        let admins = self.admins(installation);
        match gate {
            upgrade::Gate::CommandsRefused => {
                if *command == Command::Login {
                    self.nudge_admins(installation, user_id).await;
                }
                return Some(upgrade::messages::commands_refused(&admins));
            }
            upgrade::Gate::LoginRefused if *command == Command::Login => {
                let linked = matches!(
                    self.context.store.user_links.get(&installation.team_id, user_id),
                    Ok(Some(link)) if !link.stale
                );
                if !linked {
                    self.nudge_admins(installation, user_id).await;
                    return Some(upgrade::messages::login_refused(&admins));
                }
            }
            upgrade::Gate::LoginRefused | upgrade::Gate::Open => {}
        }
        let feature = command.feature()?;
        if upgrade::is_available(feature, &installation.scopes) {
            return None;
        }
        Some(upgrade::messages::feature_unavailable(
            feature.spec().name,
            &upgrade::missing_for(feature, &installation.scopes),
            &admins,
        ))
    }

    /// Tells the admins that someone could not log in; the campaign decides who is due a
    /// DM (at most one per reminder interval each). A slow Slack only moves the refusal
    /// from the ack to the response_url.
    async fn nudge_admins(&self, installation: &Installation, user_id: &str) {
        self.context
            .campaigns
            .login_refused(installation, user_id)
            .await;
    }

    /// A message someone sent the app in a direct message: answered once (Slack's retries
    /// are deduplicated before this) with the help and the Home tab's link (the app id
    /// from the installation, else from the event). Never answers a
    /// bot, itself included, so it cannot talk to itself; a workspace whose permissions do
    /// not include the home tab's gets no answer (Slack would not send the event anyway).
    async fn direct_message(&self, team_id: &str, app_id: Option<&str>, message: &MessageIm) {
        if message.bot_id.is_some() {
            debug!(team = team_id, "a bot's direct message is not answered");
            return;
        }
        let Some(installation) = self.event_installation(team_id, "message.im") else {
            return;
        };
        if message.user == installation.bot_user_id {
            return;
        }
        if !upgrade::is_available(upgrade::Feature::AppHome, &installation.scopes) {
            debug!(
                team = team_id,
                "a direct message before the permission upgrade is not answered"
            );
            return;
        }
        let Some(token) = &installation.bot_token else {
            return;
        };
        let home = installation
            .app_id
            .as_deref()
            .or(app_id)
            .and_then(|app_id| commands::home_tab_link(&installation.team_id, app_id));
        let available = upgrade::available_features(&installation.scopes);
        let reply = commands::direct_message_reply(
            home.as_deref(),
            &commands::unavailable_commands(&available),
        );
        match self
            .context
            .actions
            .web
            .post_in_thread(
                token,
                &message.channel,
                &reply,
                message.thread_ts.as_deref(),
                false,
            )
            .await
        {
            Ok(_) => {
                info!(team = team_id, user = %message.user, "answered a direct message with help")
            }
            Err(error) => {
                warn!(team = team_id, user = %message.user, %error, "could not answer a direct message")
            }
        }
    }

    /// Links shared in a workspace: previewed for its active installation only.
    async fn link_shared(&self, team_id: &str, shared: &crate::slack::envelope::LinkShared) {
        if let Some(installation) = self.event_installation(team_id, "link_shared") {
            self.context
                .unfurls
                .link_shared(&installation, shared)
                .await
        }
    }

    /// The active installation an event of `team_id` is for; none (logged, the event
    /// ignored) for a workspace without one or when the store cannot say.
    fn event_installation(&self, team_id: &str, event_type: &str) -> Option<Installation> {
        match self
            .context
            .store
            .installations
            .for_team(Some(team_id), None)
        {
            Ok(Some(installation)) if installation.is_active() => Some(installation),
            Ok(_) => {
                info!(
                    team = team_id,
                    event_type, "an event from a workspace without an active installation ignored"
                );
                None
            }
            Err(error) => {
                error!(team = team_id, event_type, %error, "could not read the installation");
                None
            }
        }
    }

    async fn uninstalled(&self, team_id: &str) {
        let now = self.context.clock.now();
        match self
            .context
            .store
            .installations
            .mark_uninstalled(team_id, now)
            .await
        {
            Ok(Some(_)) => {
                info!(
                    team = team_id,
                    "app uninstalled: token deleted, data kept for the retention period"
                );
                self.context.installer.changed.notify_one();
            }
            Ok(None) => debug!(team = team_id, "app_uninstalled for an unknown workspace"),
            Err(error) => error!(team = team_id, %error, "could not record app_uninstalled"),
        }
    }

    async fn tokens_revoked(&self, team_id: &str, bot_users: &[String]) {
        if bot_users.is_empty() {
            debug!(
                team = team_id,
                "tokens_revoked for user tokens only; no bot token affected"
            );
            return;
        }
        let now = self.context.clock.now();
        match self
            .context
            .store
            .installations
            .revoke_tokens(team_id, now)
            .await
        {
            Ok(Some(_)) => {
                info!(
                    team = team_id,
                    "bot token revoked: deleted, workspace paused"
                );
                self.context.installer.changed.notify_one();
            }
            Ok(None) => debug!(team = team_id, "tokens_revoked for an unknown workspace"),
            Err(error) => error!(team = team_id, %error, "could not record tokens_revoked"),
        }
    }
}

impl EnvelopeHandler for Dispatcher {
    async fn slash_command(&self, command: SlashCommand) -> Message {
        let installation = match self
            .context
            .store
            .installations
            .for_team(Some(&command.team_id), command.enterprise_id.as_deref())
        {
            Ok(Some(installation)) if installation.is_active() => installation,
            Ok(_) => {
                info!(team = %command.team_id, "slash command from a workspace without an active installation");
                return self.not_installed();
            }
            Err(error) => {
                error!(team = %command.team_id, %error, "could not read the installation");
                return Message::text(
                    "Sorry, something went wrong reading this workspace's installation. The error was logged.",
                );
            }
        };
        let parsed = commands::parse(&command.text);
        if let Ok(parsed) = &parsed {
            if let Some(refusal) = self
                .upgrade_refusal(&installation, &command.user_id, parsed)
                .await
            {
                return refusal;
            }
        }
        match parsed {
            Ok(Command::Help) => self.help(&installation),
            Ok(Command::Upgrade) => self
                .context
                .campaigns
                .answer(&installation, &command.user_id),
            Ok(Command::Status) => self.status(installation).await,
            Ok(Command::Login) => self
                .context
                .accounts
                .login_reply(&installation.team_id, &command.user_id),
            Ok(Command::Logout) => {
                self.context
                    .accounts
                    .logout(&installation.team_id, &command.user_id)
                    .await
            }
            Ok(Command::Whoami) => self
                .context
                .accounts
                .whoami(&installation.team_id, &command.user_id),
            Ok(Command::Subscribe { target, words }) => {
                self.context
                    .subscriptions
                    .subscribe(&installation, &command, target, words)
                    .await
            }
            Ok(Command::Unsubscribe { target, words }) => {
                self.context
                    .subscriptions
                    .unsubscribe(&installation, &command, target, words)
                    .await
            }
            Ok(Command::Subscriptions) => self
                .context
                .subscriptions
                .list(&installation.team_id, &command.channel_id),
            Ok(Command::SubscriptionFeatures) => Subscriptions::features(),
            Ok(Command::Approve(key)) => {
                self.context
                    .actions
                    .approve_command(&installation, &command.user_id, &key)
                    .await
            }
            Ok(Command::Merge(key)) => {
                self.context
                    .actions
                    .merge_command(&installation, &command.user_id, &key)
                    .await
            }
            Ok(Command::Decline(key)) => {
                self.context
                    .actions
                    .decline_command(&installation, &command.user_id, &key)
                    .await
            }
            Ok(Command::Threading { on }) => {
                self.context
                    .subscriptions
                    .set_threading(&installation.team_id, &command.channel_id, on)
                    .await
            }
            Ok(Command::Remind(remind)) => {
                self.context
                    .reminders
                    .answer(
                        &installation,
                        &command.channel_id,
                        &command.user_id,
                        &remind,
                    )
                    .await
            }
            Ok(Command::Notify(notify)) => {
                super::personal::answer(
                    &self.context.store,
                    &self.context.accounts,
                    self.context.clock.now(),
                    &installation.team_id,
                    &command.user_id,
                    &notify,
                )
                .await
            }
            Err(error) => {
                info!(channel = %command.channel_id, user = %command.user_id, ?error, "slash command did not parse");
                commands::error_reply(&error)
            }
        }
    }

    async fn event(&self, callback: EventCallback) {
        let event_type = callback.event.type_name();
        let Some(team_id) = callback.team_id.as_deref() else {
            debug!(event_type, "event without a team id ignored");
            return;
        };
        match &callback.event {
            Event::AppUninstalled => self.uninstalled(team_id).await,
            Event::TokensRevoked { bot, .. } => self.tokens_revoked(team_id, bot).await,
            Event::MessageIm(message) => {
                self.direct_message(team_id, callback.api_app_id.as_deref(), message)
                    .await
            }
            Event::LinkShared(shared) => self.link_shared(team_id, shared).await,
            Event::AppHomeOpened { user, tab, .. } => self.home_opened(team_id, user, tab).await,
            Event::Unknown { .. } => {
                debug!(
                    event_type,
                    team = team_id,
                    "event received; nothing handles it"
                )
            }
        }
    }

    async fn interaction(&self, interaction: Interaction) {
        let click = match &interaction.kind {
            InteractionKind::BlockActions(click) => click,
            InteractionKind::ViewSubmission { user, view }
                if PullRequestActions::handles_view(&view.callback_id) =>
            {
                if let Some(installation) = self.interaction_installation(&interaction) {
                    if self.actions_refusal(&installation).is_none() {
                        self.context
                            .actions
                            .submitted(&installation, user, view)
                            .await;
                    }
                }
                return;
            }
            InteractionKind::ViewSubmission { .. }
            | InteractionKind::ViewClosed { .. }
            | InteractionKind::Unknown { .. } => {
                debug!(
                    interaction_type = interaction.kind.type_name(),
                    "interaction received; nothing handles it"
                );
                return;
            }
        };
        for action in &click.actions {
            match action.action_id.as_str() {
                action_id @ (upgrade::messages::UPDATE_PERMISSIONS_ACTION_ID
                | upgrade::messages::CHECK_AGAIN_ACTION_ID) => {
                    self.upgrade_click(&interaction, click, action_id).await
                }
                action_id if PullRequestActions::handles(action_id) => {
                    self.action_click(&interaction, click, action).await
                }
                action_id if Home::handles(action_id) => {
                    if let Some(installation) = self.interaction_installation(&interaction) {
                        self.home.clicked(&installation, click, action).await
                    }
                }
                other => debug!(action_id = other, "button click nothing handles"),
            }
        }
    }
}
