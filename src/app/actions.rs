//! Actions from Slack with the person's own Bitbucket account: the buttons of
//! pull-request and pipeline messages (Approve, Unapprove, Request changes, Comment,
//! Merge, Decline, Rerun), their modals, and `/bitbucket approve|merge|decline`.
//!
//! Combines the store (links, echo records), the person's OAuth client, and Slack
//! (ephemeral answers, `views.open`, `chat.update`). Who acts is always the envelope's
//! user and the team the envelope's; a button's value names only the pull request or
//! pipeline. Every action is rate-limited per person (`slack.actions_per_minute`) and
//! logged with team, user, repository and pull request; never with a token or the text
//! a person wrote. An action that worked is recorded with the channel whose message now
//! shows it, so the router drops the poller's later activity for it there.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::bitbucket::accounts::{ActionError, MergeRequest, PullRequestAddress, PullRequestFacts};
use crate::clock::Clock;
use crate::config::Secret;
use crate::message::{Button, Message, escape};
use crate::notify::actions::{
    self as pure, COMMENT_VIEW, DECLINE_VIEW, Done, MERGE_VIEW, PipelineKey, PullRequestKey,
};
use crate::slack::envelope::{BlockAction, BlockActions, InputValue, View};
use crate::slack::views::{Modal, ModalInput};
use crate::slack::web::SlackWeb;
use crate::store::{Installation, Store, UserLink};

use super::accounts::{Accounts, LoginError};

/// The Bitbucket scopes a person's link needs for actions.
pub const ACTION_SCOPES: &[&str] = &["pullrequest:write", "pipeline:write"];

/// The merge strategies Bitbucket knows, with the names people read.
const STRATEGIES: &[(&str, &str)] = &[
    ("merge_commit", "Merge commit"),
    ("squash", "Squash"),
    ("fast_forward", "Fast forward"),
    ("squash_fast_forward", "Squash, fast forward only"),
    ("rebase_fast_forward", "Rebase, fast forward"),
    ("rebase_merge", "Rebase, merge"),
];

/// A window of one minute per person.
const WINDOW: SignedDuration = SignedDuration::from_secs(60);

/// What a modal remembers between opening and its submission (its `private_metadata`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ViewContext {
    pull_request: String,
    channel: Option<String>,
    ts: Option<String>,
    title: Option<String>,
    link: Option<String>,
}

/// Where the click came from: the message to update and where to answer.
#[derive(Debug, Clone, Default)]
struct Origin {
    channel: Option<String>,
    ts: Option<String>,
    sections: Vec<String>,
}

/// The per-person rate limit: the times of each person's recent actions.
#[derive(Debug, Default)]
struct RateWindows {
    recent: HashMap<(String, String), VecDeque<Timestamp>>,
}

impl RateWindows {
    /// `None` when the action may go ahead (and it is counted), else how long to wait.
    fn admit(
        &mut self,
        team_id: &str,
        user_id: &str,
        limit: u32,
        now: Timestamp,
    ) -> Option<SignedDuration> {
        let start = now.checked_sub(WINDOW).unwrap_or(now);
        self.recent.retain(|_, times| {
            while times.front().is_some_and(|t| *t <= start) {
                times.pop_front();
            }
            !times.is_empty()
        });
        let times = self
            .recent
            .entry((team_id.to_string(), user_id.to_string()))
            .or_default();
        if times.len() >= limit as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Some(
                oldest
                    .checked_add(WINDOW)
                    .unwrap_or(now)
                    .duration_since(now),
            );
        }
        times.push_back(now);
        None
    }
}

/// The actions service.
#[derive(Clone)]
pub struct PullRequestActions {
    pub store: Store,
    pub web: SlackWeb,
    pub accounts: Accounts,
    pub clock: Arc<dyn Clock>,
    /// `slack.actions_per_minute`.
    pub per_minute: u32,
    windows: Arc<Mutex<RateWindows>>,
}

impl std::fmt::Debug for PullRequestActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullRequestActions")
    }
}

/// The person's token, or what to tell them instead.
type Ready = Result<(Secret<String>, UserLink), Message>;

fn address(key: &PullRequestKey) -> PullRequestAddress {
    PullRequestAddress {
        repository: key.repository.clone(),
        id: key.id,
    }
}

fn text_of(view: &View, block: &str) -> Option<String> {
    match view.input(block, block) {
        Some(InputValue::Text(text)) => text.clone(),
        _ => None,
    }
}

impl PullRequestActions {
    pub fn new(
        store: Store,
        web: SlackWeb,
        accounts: Accounts,
        clock: Arc<dyn Clock>,
        per_minute: u32,
    ) -> Self {
        Self {
            store,
            web,
            accounts,
            clock,
            per_minute,
            windows: Arc::default(),
        }
    }

    /// Whether `action_id` is one of ours.
    pub fn handles(action_id: &str) -> bool {
        pure::ACTION_IDS.contains(&action_id)
    }

    /// Whether `callback_id` is one of our modals.
    pub fn handles_view(callback_id: &str) -> bool {
        [COMMENT_VIEW, MERGE_VIEW, DECLINE_VIEW].contains(&callback_id)
    }

    /// A click on one of the action buttons.
    pub async fn clicked(
        &self,
        installation: &Installation,
        click: &BlockActions,
        action: &BlockAction,
    ) {
        let user = click.user.as_str();
        let origin = Origin {
            channel: click.channel.clone(),
            ts: click.message_ts.clone(),
            sections: click.message_sections.clone(),
        };
        let value = action.value.as_deref().unwrap_or_default();
        if action.action_id == pure::RERUN {
            let reply = match PipelineKey::parse(value) {
                Some(key) => self.rerun(installation, user, &key, &origin).await,
                None => Some(Message::text("That button names no pipeline I know.")),
            };
            if let Some(reply) = reply {
                self.answer(installation, origin.channel.as_deref(), user, &reply)
                    .await;
            }
            return;
        }
        let Ok(key) = pure::parse_pull_request(value) else {
            debug!(action_id = %action.action_id, "an action button without a pull request");
            return;
        };
        let reply = match action.action_id.as_str() {
            pure::APPROVE => {
                self.review(installation, user, &key, Done::Approved, &origin)
                    .await
            }
            pure::UNAPPROVE => {
                self.review(installation, user, &key, Done::Unapproved, &origin)
                    .await
            }
            pure::REQUEST_CHANGES => {
                self.review(installation, user, &key, Done::ChangesRequested, &origin)
                    .await
            }
            pure::COMMENT | pure::MERGE | pure::DECLINE => {
                self.open_modal(
                    installation,
                    user,
                    &key,
                    &action.action_id,
                    &click.trigger_id,
                    &origin,
                )
                .await
            }
            _ => None,
        };
        if let Some(reply) = reply {
            self.answer(installation, origin.channel.as_deref(), user, &reply)
                .await;
        }
    }

    /// A submitted comment, merge or decline modal.
    pub async fn submitted(&self, installation: &Installation, user: &str, view: &View) {
        let Ok(context) = serde_json::from_str::<ViewContext>(&view.private_metadata) else {
            warn!(team = %installation.team_id, "a modal without its context");
            return;
        };
        let Ok(key) = pure::parse_pull_request(&context.pull_request) else {
            warn!(team = %installation.team_id, "a modal naming no pull request");
            return;
        };
        let reply = match view.callback_id.as_str() {
            COMMENT_VIEW => match text_of(view, "comment") {
                Some(text) => self.comment(installation, user, &key, &text).await,
                None => Message::text("The comment was empty; nothing was sent."),
            },
            MERGE_VIEW => {
                let strategy = match view.input("strategy", "strategy") {
                    Some(InputValue::Choice(choice)) => choice.clone(),
                    _ => None,
                };
                let close_source_branch = matches!(
                    view.input("close_source_branch", "close_source_branch"),
                    Some(InputValue::Choices(chosen)) if !chosen.is_empty()
                );
                let request = MergeRequest {
                    strategy,
                    close_source_branch,
                    message: text_of(view, "message"),
                };
                self.close(installation, user, &key, Some(request), &context)
                    .await
            }
            DECLINE_VIEW => self.close(installation, user, &key, None, &context).await,
            _ => return,
        };
        self.answer(installation, context.channel.as_deref(), user, &reply)
            .await;
    }

    /// `/bitbucket approve`.
    pub async fn approve_command(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
    ) -> Message {
        self.review(installation, user, key, Done::Approved, &Origin::default())
            .await
            .unwrap_or_else(|| Message::text("Done."))
    }

    /// `/bitbucket decline`.
    pub async fn decline_command(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
    ) -> Message {
        let context = ViewContext {
            pull_request: key.value(),
            channel: None,
            ts: None,
            title: None,
            link: None,
        };
        self.close(installation, user, key, None, &context).await
    }

    /// `/bitbucket merge`: the confirmation step, a button that opens the merge dialog
    /// (once the person's link is known to be able to merge).
    pub async fn merge_command(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
    ) -> Message {
        if let Some(refusal) = self.admit(installation, user, key, "merge") {
            return refusal;
        }
        if let Err(reply) = self.ready(installation, user).await {
            return reply;
        }
        Message::text(format!(
            "Merge {}? Choose the strategy and confirm in the next step.",
            pure::describe(key)
        ))
        .with_button(Button {
            text: "Merge…".into(),
            action_id: pure::MERGE.into(),
            value: Some(key.value()),
            url: None,
            primary: true,
        })
    }

    /// The rate limit, and the log line every action gets.
    fn admit(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
        action: &str,
    ) -> Option<Message> {
        let now = self.clock.now();
        let wait = self
            .windows
            .lock()
            .map(|mut windows| windows.admit(&installation.team_id, user, self.per_minute, now))
            .unwrap_or(None);
        match wait {
            Some(wait) => {
                info!(team = %installation.team_id, user, repository = %key.repository, pull_request = key.id, action, "action refused: rate limit");
                Some(Message::text(format!(
                    "You have taken {} actions in the last minute, the most allowed here. Try again in {} seconds; nothing was sent to Bitbucket.",
                    self.per_minute,
                    wait.as_secs().max(1)
                )))
            }
            None => {
                info!(team = %installation.team_id, user, repository = %key.repository, pull_request = key.id, action, "action from Slack");
                None
            }
        }
    }

    /// The person's token, or the login button, the re-login prompt or the reconnect
    /// prompt.
    async fn ready(&self, installation: &Installation, user: &str) -> Ready {
        let team = installation.team_id.as_str();
        let login = |text: &str| {
            let reply = Message::text(text);
            match self.accounts.login_button(team, user) {
                Some(button) => reply.with_button(button),
                None => Message::text(LoginError::NotConfigured.user_message()),
            }
        };
        let link = match self.store.user_links.get(team, user) {
            Ok(Some(link)) => link,
            Ok(None) => {
                return Err(login(
                    "To act on pull requests from Slack, connect your Bitbucket account first: what you do is done as you, with your permissions.",
                ));
            }
            Err(error) => {
                warn!(team, user, %error, "could not read a user link");
                return Err(Message::text(LoginError::Store(error).user_message()));
            }
        };
        if link.stale {
            return Err(login(
                "Your Bitbucket link has expired: Bitbucket no longer accepts it. Connect again to act from Slack.",
            ));
        }
        if let Some(reply) = self.reconnect_prompt(&link, &login).await {
            return Err(reply);
        }
        match self.accounts.access_token(team, user).await {
            Ok(Some(token)) => Ok((token, link)),
            Ok(None) => Err(login(
                "To act on pull requests from Slack, connect your Bitbucket account first.",
            )),
            Err(LoginError::Stale) => Err(login(
                "Your Bitbucket link has expired: Bitbucket no longer accepts it. Connect again to act from Slack.",
            )),
            Err(error) => {
                warn!(team, user, %error, "no access token for an action");
                Err(Message::text(error.user_message()))
            }
        }
    }

    /// A link without the scopes actions need is asked to reconnect: always when its
    /// recorded scopes lack them, once when it was made before scopes were recorded.
    async fn reconnect_prompt(
        &self,
        link: &UserLink,
        login: &(dyn Fn(&str) -> Message + Sync),
    ) -> Option<Message> {
        let text = format!(
            "Acting from Slack needs more of your Bitbucket permissions ({}) than your link was given. Reconnect your Bitbucket account to allow it; nothing else changes.",
            ACTION_SCOPES
                .iter()
                .map(|scope| format!("`{scope}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match &link.scopes {
            Some(scopes) => {
                let lacking = ACTION_SCOPES
                    .iter()
                    .any(|needed| !scopes.iter().any(|scope| scope == needed));
                lacking.then(|| login(&text))
            }
            None if !link.reconnect_asked => {
                let mut asked = link.clone();
                asked.reconnect_asked = true;
                if let Err(error) = self.store.user_links.put(&asked).await {
                    warn!(team = %link.team_id, user = %link.slack_user_id, %error, "could not record the reconnect prompt");
                }
                Some(login(&text))
            }
            None => None,
        }
    }

    /// Approve, unapprove or request changes.
    async fn review(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
        done: Done,
        origin: &Origin,
    ) -> Option<Message> {
        let action = match done {
            Done::Approved => "approve",
            Done::Unapproved => "unapprove",
            _ => "request_changes",
        };
        if let Some(refusal) = self.admit(installation, user, key, action) {
            return Some(refusal);
        }
        let (token, link) = match self.ready(installation, user).await {
            Ok(ready) => ready,
            Err(reply) => return Some(reply),
        };
        let client = self.accounts.client.as_ref()?;
        let result = match done {
            Done::Approved => client.approve(&token, &address(key)).await,
            Done::Unapproved => client.unapprove(&token, &address(key)).await,
            _ => client.request_changes(&token, &address(key)).await,
        };
        if let Err(error) = result {
            return Some(self.refusal(installation, user, key, action, error).await);
        }
        info!(team = %installation.team_id, user, repository = %key.repository, pull_request = key.id, action, "action done");
        let (line, confirmation, approved) = match done {
            Done::Approved => (
                format!(":white_check_mark: <@{user}> approved"),
                "You approved",
                true,
            ),
            Done::Unapproved => (
                format!("<@{user}> withdrew their approval"),
                "You withdrew your approval of",
                false,
            ),
            _ => (
                format!(":warning: <@{user}> requested changes"),
                "You requested changes on",
                false,
            ),
        };
        self.shown(
            installation,
            origin,
            &pure::echo_key(key, done, &link.bitbucket_uuid),
        )
        .await;
        self.update(
            installation,
            origin,
            &line,
            pure::pull_request_buttons(key, approved),
        )
        .await;
        Some(Message::text(format!(
            "{confirmation} {}.",
            pure::describe(key)
        )))
    }

    /// Comment, Merge and Decline open a modal; merge reads the strategies first.
    async fn open_modal(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
        action_id: &str,
        trigger_id: &str,
        origin: &Origin,
    ) -> Option<Message> {
        let (token, _) = match self.ready(installation, user).await {
            Ok(ready) => ready,
            Err(reply) => return Some(reply),
        };
        let mut context = ViewContext {
            pull_request: key.value(),
            channel: origin.channel.clone(),
            ts: origin.ts.clone(),
            title: None,
            link: None,
        };
        let modal = match action_id {
            pure::COMMENT => Modal {
                callback_id: COMMENT_VIEW.into(),
                title: "Comment".into(),
                submit: "Comment".into(),
                private_metadata: String::new(),
                intro: format!(
                    "Comment on {} as your Bitbucket account.",
                    pure::describe(key)
                ),
                inputs: vec![ModalInput::Text {
                    block_id: "comment".into(),
                    action_id: "comment".into(),
                    label: "Comment (Markdown)".into(),
                    multiline: true,
                    optional: false,
                    initial: None,
                }],
            },
            pure::MERGE | pure::DECLINE => {
                let client = self.accounts.client.as_ref()?;
                let facts = match client.pull_request_facts(&token, &address(key)).await {
                    Ok(facts) => facts,
                    Err(error) => {
                        return Some(self.refusal(installation, user, key, "merge", error).await);
                    }
                };
                if facts.state != "OPEN" {
                    return Some(Message::text(format!(
                        "{} is already {}.",
                        pure::describe(key),
                        facts.state.to_lowercase()
                    )));
                }
                context.title = Some(crate::message::truncate(&facts.title, 150));
                context.link = facts.link.clone();
                if action_id == pure::MERGE {
                    merge_modal(key, &facts)
                } else {
                    Modal {
                        callback_id: DECLINE_VIEW.into(),
                        title: "Decline".into(),
                        submit: "Decline".into(),
                        private_metadata: String::new(),
                        intro: format!(
                            "Decline {} *{}*? It is closed without merging; it can be opened again on Bitbucket.",
                            pure::describe(key),
                            pure::title(&facts.title)
                        ),
                        inputs: Vec::new(),
                    }
                }
            }
            _ => return None,
        };
        let modal = Modal {
            private_metadata: serde_json::to_string(&context).unwrap_or_default(),
            ..modal
        };
        let bot_token = installation.bot_token.as_ref()?;
        if let Err(error) = self
            .web
            .open_view(bot_token, trigger_id, &modal.to_view())
            .await
        {
            warn!(team = %installation.team_id, user, %error, "could not open a modal");
            return Some(Message::text(
                "Slack did not open the dialog in time. Click the button again.",
            ));
        }
        None
    }

    /// A comment from its modal.
    async fn comment(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
        text: &str,
    ) -> Message {
        if let Some(refusal) = self.admit(installation, user, key, "comment") {
            return refusal;
        }
        let (token, _) = match self.ready(installation, user).await {
            Ok(ready) => ready,
            Err(reply) => return reply,
        };
        let Some(client) = self.accounts.client.as_ref() else {
            return Message::text(LoginError::NotConfigured.user_message());
        };
        match client.comment(&token, &address(key), text).await {
            Ok(()) => {
                info!(team = %installation.team_id, user, repository = %key.repository, pull_request = key.id, action = "comment", "action done");
                Message::text(format!("Your comment is on {}.", pure::describe(key)))
            }
            Err(error) => {
                self.refusal(installation, user, key, "comment", error)
                    .await
            }
        }
    }

    /// Merge (with the dialog's choices) or decline.
    async fn close(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
        merge: Option<MergeRequest>,
        context: &ViewContext,
    ) -> Message {
        let action = if merge.is_some() { "merge" } else { "decline" };
        if let Some(refusal) = self.admit(installation, user, key, action) {
            return refusal;
        }
        let (token, link) = match self.ready(installation, user).await {
            Ok(ready) => ready,
            Err(reply) => return reply,
        };
        let Some(client) = self.accounts.client.as_ref() else {
            return Message::text(LoginError::NotConfigured.user_message());
        };
        let (result, done) = match &merge {
            Some(request) => (
                client.merge(&token, &address(key), request).await,
                Done::Merged,
            ),
            None => (
                client.decline(&token, &address(key)).await.map(|()| true),
                Done::Declined,
            ),
        };
        let finished = match result {
            Ok(finished) => finished,
            Err(error) => return self.refusal(installation, user, key, action, error).await,
        };
        info!(team = %installation.team_id, user, repository = %key.repository, pull_request = key.id, action, "action done");
        let origin = Origin {
            channel: context.channel.clone(),
            ts: context.ts.clone(),
            sections: Vec::new(),
        };
        self.shown(
            installation,
            &origin,
            &pure::echo_key(key, done, &link.bitbucket_uuid),
        )
        .await;
        let (icon, word) = match done {
            Done::Merged => (":large_purple_circle:", "merged"),
            _ => (":no_entry:", "declined"),
        };
        if let (Some(channel), Some(ts), Some(bot_token)) = (
            context.channel.as_deref(),
            context.ts.as_deref(),
            installation.bot_token.as_ref(),
        ) {
            let title = match (&context.link, &context.title) {
                (Some(link), Some(title)) if !link.contains(['<', '>', '|', ' ']) => {
                    format!("<{link}|#{} {}>", key.id, escape(title))
                }
                (_, Some(title)) => format!("#{} {}", key.id, escape(title)),
                _ => format!("#{}", key.id),
            };
            let state = format!(
                "{icon} Pull request {title} in {}: *{word}* by <@{user}>",
                crate::message::code(&key.repository)
            );
            if let Err(error) = self
                .web
                .update_message(bot_token, channel, ts, &Message::text(state))
                .await
            {
                warn!(team = %installation.team_id, channel, %error, "could not update the message after an action");
            }
        }
        match (done, finished) {
            (Done::Merged, true) => Message::text(format!("You merged {}.", pure::describe(key))),
            (Done::Merged, false) => Message::text(format!(
                "Bitbucket is merging {}; it will show as merged when it is done.",
                pure::describe(key)
            )),
            _ => Message::text(format!("You declined {}.", pure::describe(key))),
        }
    }

    /// Rerun a failed pipeline on the same target.
    async fn rerun(
        &self,
        installation: &Installation,
        user: &str,
        key: &PipelineKey,
        origin: &Origin,
    ) -> Option<Message> {
        let as_pull_request = PullRequestKey {
            repository: key.repository.clone(),
            id: 0,
        };
        if let Some(refusal) = self.admit(installation, user, &as_pull_request, "rerun") {
            return Some(refusal);
        }
        let (token, _) = match self.ready(installation, user).await {
            Ok(ready) => ready,
            Err(reply) => return Some(reply),
        };
        let client = self.accounts.client.as_ref()?;
        let started = match client
            .rerun_pipeline(&token, &key.repository, &key.uuid)
            .await
        {
            Ok(started) => started,
            Err(error) => {
                return Some(
                    self.refusal(installation, user, &as_pull_request, "rerun", error)
                        .await,
                );
            }
        };
        info!(team = %installation.team_id, user, repository = %key.repository, pipeline = %key.uuid, action = "rerun", "action done");
        let number = started
            .build_number
            .map(|n| format!(" as #{n}"))
            .unwrap_or_default();
        self.shown(
            installation,
            origin,
            &pure::pipeline_echo_key(&key.repository, &started.uuid),
        )
        .await;
        self.update(
            installation,
            origin,
            &format!(":arrows_counterclockwise: <@{user}> started it again{number}"),
            pure::pipeline_buttons(key, None),
        )
        .await;
        Some(Message::text(format!(
            "The pipeline of {} is running again{number}.",
            crate::message::code(&key.repository)
        )))
    }

    /// What Bitbucket's refusal means for the person.
    async fn refusal(
        &self,
        installation: &Installation,
        user: &str,
        key: &PullRequestKey,
        action: &str,
        error: ActionError,
    ) -> Message {
        let team = installation.team_id.as_str();
        info!(team, user, repository = %key.repository, pull_request = key.id, action, %error, "action refused");
        match error {
            ActionError::Unauthorized => {
                self.accounts.link_rejected(team, user).await;
                let reply = Message::text(
                    "Bitbucket no longer accepts your link. Connect your Bitbucket account again to act from Slack.",
                );
                match self.accounts.login_button(team, user) {
                    Some(button) => reply.with_button(button),
                    None => reply,
                }
            }
            ActionError::Forbidden { reason } => Message::text(format!(
                "Bitbucket did not let you do that: {}",
                escape(&reason)
            )),
            ActionError::NotFound { reason } => Message::text(format!(
                "Bitbucket found nothing there that you can see: {}",
                escape(&reason)
            )),
            ActionError::Refused { reason, .. } => {
                Message::text(format!("Bitbucket refused: {}", escape(&reason)))
            }
            ActionError::InvalidPath(_) => Message::text(format!(
                "That is not a pull request: expected {}",
                pure::EXPECTED_REFERENCE
            )),
            ActionError::Http { .. } | ActionError::Transport(_) | ActionError::Decode(_) => {
                warn!(team, user, repository = %key.repository, action, %error, "Bitbucket could not take an action");
                Message::text(
                    "Bitbucket could not be reached or did not answer as expected; nothing is known to have changed. Try again in a minute.",
                )
            }
        }
    }

    /// Records that the message in `origin`'s channel shows `echo`.
    async fn shown(&self, installation: &Installation, origin: &Origin, echo: &str) {
        let Some(channel) = origin.channel.as_deref() else {
            return;
        };
        if let Err(error) = self
            .store
            .slack_actions
            .record(&installation.team_id, channel, echo, self.clock.now())
            .await
        {
            warn!(team = %installation.team_id, channel, %error, "could not record an action done from Slack");
        }
    }

    /// The clicked message again, with what was done and new buttons.
    async fn update(
        &self,
        installation: &Installation,
        origin: &Origin,
        line: &str,
        buttons: Vec<Button>,
    ) {
        let (Some(channel), Some(ts), Some(bot_token)) = (
            origin.channel.as_deref(),
            origin.ts.as_deref(),
            installation.bot_token.as_ref(),
        ) else {
            return;
        };
        if origin.sections.is_empty() {
            return;
        }
        let updated = pure::acted_message(&origin.sections, line, buttons);
        if let Err(error) = self
            .web
            .update_message(bot_token, channel, ts, &updated)
            .await
        {
            warn!(team = %installation.team_id, channel, %error, "could not update the message after an action");
        }
    }

    /// The ephemeral answer: in the channel of the click, else by DM.
    async fn answer(
        &self,
        installation: &Installation,
        channel: Option<&str>,
        user: &str,
        reply: &Message,
    ) {
        let Some(bot_token) = installation.bot_token.as_ref() else {
            return;
        };
        let result = match channel {
            Some(channel) => {
                self.web
                    .post_ephemeral(bot_token, channel, user, reply)
                    .await
            }
            None => self
                .web
                .post_message(bot_token, user, reply)
                .await
                .map(drop),
        };
        if let Err(error) = result {
            warn!(team = %installation.team_id, user, %error, "could not answer an action");
        }
    }
}

/// The merge dialog: the strategies the destination branch allows (its default first
/// chosen), close the source branch, and an optional commit message.
fn merge_modal(key: &PullRequestKey, facts: &PullRequestFacts) -> Modal {
    let allowed: Vec<(String, String)> = if facts.merge_strategies.is_empty() {
        STRATEGIES
            .iter()
            .take(3)
            .map(|(value, label)| (value.to_string(), label.to_string()))
            .collect()
    } else {
        facts
            .merge_strategies
            .iter()
            .map(|value| {
                let label = STRATEGIES
                    .iter()
                    .find(|(known, _)| known == value)
                    .map(|(_, label)| label.to_string())
                    .unwrap_or_else(|| value.clone());
                (value.clone(), label)
            })
            .collect()
    };
    let branches = match (&facts.source_branch, &facts.destination_branch) {
        (Some(source), Some(destination)) => format!(
            " ({} → {})",
            crate::message::code(source),
            crate::message::code(destination)
        ),
        _ => String::new(),
    };
    Modal {
        callback_id: MERGE_VIEW.into(),
        title: "Merge".into(),
        submit: "Merge".into(),
        private_metadata: String::new(),
        intro: format!(
            "Merge {} *{}*{branches} as your Bitbucket account?",
            pure::describe(key),
            pure::title(&facts.title)
        ),
        inputs: vec![
            ModalInput::Select {
                block_id: "strategy".into(),
                action_id: "strategy".into(),
                label: "Merge strategy".into(),
                initial: facts
                    .default_merge_strategy
                    .clone()
                    .or_else(|| allowed.first().map(|(value, _)| value.clone())),
                options: allowed,
            },
            ModalInput::Checkbox {
                block_id: "close_source_branch".into(),
                action_id: "close_source_branch".into(),
                label: "Source branch".into(),
                option: ("close".into(), "Close the source branch".into()),
                checked: false,
            },
            ModalInput::Text {
                block_id: "message".into(),
                action_id: "message".into(),
                label: "Commit message (optional)".into(),
                multiline: true,
                optional: true,
                initial: None,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    #[test]
    fn the_rate_limit_is_per_person_and_a_minute_long() {
        let mut windows = RateWindows::default();
        assert_eq!(windows.admit("T1", "U1", 2, at(0)), None);
        assert_eq!(windows.admit("T1", "U1", 2, at(10)), None);
        assert_eq!(
            windows.admit("T1", "U1", 2, at(20)),
            Some(SignedDuration::from_secs(40))
        );
        assert_eq!(windows.admit("T1", "U2", 2, at(20)), None, "another person");
        assert_eq!(windows.admit("T2", "U1", 2, at(20)), None, "another team");
        assert_eq!(windows.admit("T1", "U1", 2, at(61)), None);
    }

    #[test]
    fn the_merge_dialog_offers_what_the_branch_allows() {
        let facts = PullRequestFacts {
            title: "Add retries".into(),
            state: "OPEN".into(),
            source_branch: Some("feature".into()),
            destination_branch: Some("main".into()),
            merge_strategies: vec!["squash".into(), "fast_forward".into()],
            default_merge_strategy: Some("squash".into()),
            link: None,
        };
        let key = PullRequestKey {
            repository: "acme/api".into(),
            id: 7,
        };
        let modal = merge_modal(&key, &facts);
        let ModalInput::Select {
            options, initial, ..
        } = &modal.inputs[0]
        else {
            panic!("a select first");
        };
        assert_eq!(
            options,
            &vec![
                ("squash".to_string(), "Squash".to_string()),
                ("fast_forward".to_string(), "Fast forward".to_string())
            ]
        );
        assert_eq!(initial.as_deref(), Some("squash"));
    }
}
