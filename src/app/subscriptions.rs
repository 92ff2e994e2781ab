//! `/bitbucket subscribe`, `unsubscribe`, `subscriptions` and `settings`: checks that the
//! repository exists and can be read (by the daemon, and by the user for a private one),
//! that the bot can post in the channel, then stores the subscription and watches the
//! repository.
//!
//! Combines the store, Bitbucket and Slack. Bad input was already refused by the pure
//! parser; a check that fails here says what to do, and nothing is stored.

use std::sync::Arc;

use tracing::{info, warn};

use std::collections::BTreeSet;

use super::access::AccessControl;
use super::accounts::Accounts;

use crate::bitbucket::Target;
use crate::bitbucket::{LookupError, RepositoryLookup, RepositoryName};
use crate::clock::Clock;
use crate::message::Message;
use crate::notify::access::{self, Coverage, Refusal};
use crate::notify::subscription::{
    FEATURE_HELP, Features, Filters, PauseKind, SubscribeWord, Subscription,
};
use crate::slack::envelope::SlashCommand;
use crate::slack::web::{ChannelAccess, SlackWeb};
use crate::store::{Installation, Store, StoreError};

#[derive(Clone)]
pub struct Subscriptions {
    pub store: Store,
    pub web: SlackWeb,
    pub clock: Arc<dyn Clock>,
    pub accounts: Accounts,
    /// `None` when no Bitbucket credential is configured.
    pub lookup: Option<Arc<dyn RepositoryLookup>>,
    /// The private-repository policy and allowed workspaces.
    pub access: AccessControl,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscriptions")
    }
}

fn store_failed(error: StoreError) -> Message {
    warn!(%error, "subscription store failed");
    Message::text(
        "Sorry, the subscription could not be saved. Nothing was changed; the error was logged.",
    )
}

fn apply_words(features: &mut Features, filters: &mut Filters, words: &[SubscribeWord], on: bool) {
    for word in words {
        match word {
            SubscribeWord::Feature(feature) => features.set(feature, on),
            SubscribeWord::Branch(glob) => filters.branch = on.then(|| glob.clone()),
            SubscribeWord::ExcludeAuthor(glob) => {
                if on {
                    filters.exclude_authors.insert(glob.clone());
                } else {
                    filters.exclude_authors.remove(glob);
                }
            }
        }
    }
}

impl Subscriptions {
    pub async fn subscribe(
        &self,
        installation: &Installation,
        command: &SlashCommand,
        target: Target,
        words: Vec<SubscribeWord>,
    ) -> Message {
        // Outside the allowed workspaces: refused before any request is made.
        if let Some(reply) = self.access.refuse_workspace(&target) {
            return reply;
        }
        let Some(lookup) = &self.lookup else {
            return Message::text(
                "Bitbucket is not configured for this daemon yet: ask the person who runs bitbucket-slack to set bitbucket.token or bitbucket.oauth.",
            );
        };
        let summary = match lookup.lookup(&target).await {
            Ok(summary) => summary,
            Err(LookupError::NotFound) => {
                return Message::text(format!(
                    "`{}` was not found on Bitbucket, or the daemon's credential cannot see it. Check the name (`workspace/repository`).",
                    target.as_str()
                ));
            }
            Err(LookupError::Forbidden) => {
                return Message::text(format!(
                    "The daemon's Bitbucket credential may not read `{}`. Give it read access (for example add the repository to its access token), then subscribe again.",
                    target.as_str()
                ));
            }
            Err(LookupError::Invalid(reason)) => {
                warn!(%reason, "refused a target before asking Bitbucket");
                return Message::text(format!(
                    "That is not a repository or workspace name. Expected {}.",
                    crate::bitbucket::name::EXPECTED_FORM
                ));
            }
            Err(LookupError::Unavailable(reason)) => {
                warn!(%reason, "repository lookup failed");
                return Message::text(
                    "Bitbucket could not be reached to check that repository. Nothing was changed; try again in a minute.",
                );
            }
        };
        let admission = match self
            .access
            .admit(
                &installation.team_id,
                &command.user_id,
                &target,
                summary.is_private,
            )
            .await
        {
            Ok(admission) => admission,
            Err(refusal) => return refusal,
        };
        if let Some(reply) = self
            .channel_problem(installation, &command.channel_id)
            .await
        {
            return reply;
        }
        let existing =
            match self
                .store
                .subscriptions
                .get(&installation.team_id, &command.channel_id, &target)
            {
                Ok(existing) => existing,
                Err(error) => return store_failed(error),
            };
        let now = self.clock.now();
        let mut subscription = existing.unwrap_or_else(|| Subscription {
            team_id: installation.team_id.clone(),
            channel_id: command.channel_id.clone(),
            target: target.clone(),
            features: Features::defaults(),
            filters: Filters::default(),
            main_branch: summary.main_branch.clone(),
            created_by: command.user_id.clone(),
            created_at: now,
            paused: None,
            private: None,
            coverage: Coverage::Whole,
        });
        apply_words(
            &mut subscription.features,
            &mut subscription.filters,
            &words,
            true,
        );
        subscription.main_branch = summary.main_branch.clone();
        // Subscribing again is how a paused subscription is resumed; whoever subscribes
        // (again) is the person whose access it now rests on.
        subscription.paused = None;
        subscription.created_by = command.user_id.clone();
        subscription.private = admission.private;
        access::apply(&mut subscription, admission.verdict, now);
        if let Err(error) = self.store.subscriptions.put(&subscription).await {
            return store_failed(error);
        }
        self.watch_target(&subscription).await;
        info!(team = %installation.team_id, channel = %command.channel_id, target = %target.as_str(), "subscribed");
        let mut reply = Message::text(format!(
            "Subscribed this channel to {}.",
            subscription.describe()
        ));
        if let Coverage::Only {
            reason: Some(Refusal::NotLinked | Refusal::LinkStale),
            left_out,
            ..
        } = &subscription.coverage
        {
            if !left_out.is_empty() {
                if let Some(button) = self
                    .access
                    .accounts
                    .login_button(&installation.team_id, &command.user_id)
                {
                    reply = reply.with_button(button);
                }
            }
        }
        reply
    }

    /// The repositories a subscription delivers from, to poll: the repository, the
    /// covered repositories of a workspace, or (the `credential` policy) every repository
    /// of the workspace as far as Bitbucket lists them now. Nothing while paused for
    /// access or outside the allowed workspaces.
    async fn repositories_of(&self, subscription: &Subscription) -> Vec<String> {
        if !access::workspace_allowed(&subscription.target, &self.access.workspaces) {
            return Vec::new();
        }
        if subscription
            .paused
            .as_ref()
            .is_some_and(|pause| pause.kind == PauseKind::Access)
        {
            return Vec::new();
        }
        match (&subscription.target, &subscription.coverage) {
            (Target::Repository(name), _) => vec![name.clone()],
            (Target::Workspace(_), Coverage::Only { repositories, .. }) => {
                repositories.iter().cloned().collect()
            }
            (Target::Workspace(workspace), Coverage::Whole) => match &self.lookup {
                Some(lookup) => match lookup.workspace_repositories(workspace).await {
                    Ok(repositories) => repositories
                        .into_iter()
                        .map(|repository| repository.full_name)
                        .collect(),
                    Err(error) => {
                        warn!(%error, %workspace, "could not list the workspace's repositories; will retry");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            },
        }
    }

    /// Puts the target's repositories on the poller's watch list.
    async fn watch_target(&self, subscription: &Subscription) {
        for repository in self.repositories_of(subscription).await {
            self.watch(&repository, true).await;
        }
    }

    async fn watch(&self, repository: &str, on: bool) {
        let Ok(name) = repository.parse::<RepositoryName>() else {
            warn!(%repository, "not a repository name; not watched");
            return;
        };
        let result = if on {
            self.store.repositories.watch(&name).await
        } else {
            self.store.repositories.unwatch(&name).await
        };
        if let Err(error) = result {
            warn!(%error, %repository, "could not change the watch list");
        }
    }

    /// Makes the poller's watch list exactly the repositories that subscriptions of
    /// active installations cover: a workspace that was uninstalled (or lost its token)
    /// stops being polled, a reinstall resumes it, and new repositories of workspaces
    /// subscribed whole are picked up.
    pub async fn reconcile_watchlist(&self) {
        let (Ok(active), Ok(subscriptions), Ok(watched)) = (
            self.store.installations.active_team_ids(),
            self.store.subscriptions.list_all(),
            self.store.repositories.names(),
        ) else {
            warn!("could not read the store to reconcile the watch list; will retry");
            return;
        };
        let mut wanted = BTreeSet::new();
        let mut listed = BTreeSet::new();
        for subscription in subscriptions
            .iter()
            .filter(|subscription| active.contains(&subscription.team_id))
        {
            // A workspace covered whole is listed once, however many channels follow it.
            let whole_workspace = matches!(
                (&subscription.target, &subscription.coverage),
                (Target::Workspace(_), Coverage::Whole)
            );
            if whole_workspace && !listed.insert(subscription.target.clone()) {
                continue;
            }
            wanted.extend(self.repositories_of(subscription).await);
        }
        for repository in watched.iter().filter(|name| !wanted.contains(*name)) {
            info!(%repository, "no active subscription covers it any more: not polled");
            self.watch(repository, false).await;
        }
        for repository in wanted.iter().filter(|name| !watched.contains(*name)) {
            self.watch(repository, true).await;
        }
    }

    async fn channel_problem(
        &self,
        installation: &Installation,
        channel_id: &str,
    ) -> Option<Message> {
        let token = installation.bot_token.as_ref()?;
        match self.web.channel_access(token, channel_id).await {
            Ok(ChannelAccess::PrivateNotMember) => Some(Message::text(
                "I can't post in this channel: it is private and I am not a member. Invite me with `/invite @bitbucket`, then subscribe again.",
            )),
            Ok(ChannelAccess::Archived) => Some(Message::text(
                "This channel is archived, so nothing can be posted in it.",
            )),
            Ok(ChannelAccess::DirectMessage) => Some(Message::text(
                "Subscriptions post into channels. Run this in the channel that should get the notifications.",
            )),
            Ok(ChannelAccess::Postable | ChannelAccess::Unknown) => None,
            Err(error) => {
                warn!(%error, "could not check the channel; subscribing anyway");
                None
            }
        }
    }

    pub async fn unsubscribe(
        &self,
        installation: &Installation,
        command: &SlashCommand,
        target: Target,
        words: Vec<SubscribeWord>,
    ) -> Message {
        self.unsubscribe_channel(installation, &command.channel_id, target, words)
            .await
    }

    /// What `/bitbucket unsubscribe` does in `channel_id`, wherever it was asked (the
    /// command, or an admin's button on the Home tab).
    pub async fn unsubscribe_channel(
        &self,
        installation: &Installation,
        channel_id: &str,
        target: Target,
        words: Vec<SubscribeWord>,
    ) -> Message {
        let existing =
            match self
                .store
                .subscriptions
                .get(&installation.team_id, channel_id, &target)
            {
                Ok(Some(existing)) => existing,
                Ok(None) => {
                    return Message::text(format!(
                        "This channel has no subscription to `{}`.",
                        target.as_str()
                    ));
                }
                Err(error) => return store_failed(error),
            };
        let mut subscription = existing;
        apply_words(
            &mut subscription.features,
            &mut subscription.filters,
            &words,
            false,
        );
        let result = if words.is_empty() || subscription.features.is_empty() {
            self.store
                .subscriptions
                .remove(&installation.team_id, channel_id, &target)
                .await
                .map(|_| format!("Unsubscribed this channel from `{}`.", target.as_str()))
        } else {
            self.store
                .subscriptions
                .put(&subscription)
                .await
                .map(|_| format!("Updated: {}.", subscription.describe()))
        };
        match result {
            Ok(text) => Message::text(text),
            Err(error) => store_failed(error),
        }
    }

    pub fn list(&self, team_id: &str, channel_id: &str) -> Message {
        match self.store.subscriptions.list_channel(team_id, channel_id) {
            Ok(subscriptions) if subscriptions.is_empty() => Message::text(
                "This channel has no subscriptions. Add one with `/bitbucket subscribe workspace/repository`.",
            ),
            Ok(subscriptions) => {
                let lines: Vec<String> = subscriptions
                    .iter()
                    .map(|s| format!("• {}", s.describe()))
                    .collect();
                Message {
                    text: format!("{} subscriptions in this channel", subscriptions.len()),
                    sections: vec!["*Subscriptions in this channel*".into(), lines.join("\n")],
                    buttons: Vec::new(),
                }
            }
            Err(error) => store_failed(error),
        }
    }

    pub fn features() -> Message {
        let lines: Vec<String> = FEATURE_HELP
            .iter()
            .map(|(word, what)| format!("`{word}`: {what}"))
            .collect();
        Message {
            text: "Subscription features".into(),
            sections: vec![
                "*Features and filters* for `/bitbucket subscribe workspace/repository [feature ...]`:".into(),
                lines.join("\n"),
            ],
            buttons: Vec::new(),
        }
    }

    pub async fn set_threading(&self, team_id: &str, channel_id: &str, on: bool) -> Message {
        match self
            .store
            .subscriptions
            .set_threading(team_id, channel_id, on)
            .await
        {
            Ok(()) if on => Message::text(
                "Threading is on: a pull request's later activity goes into the thread of its first message.",
            ),
            Ok(()) => {
                Message::text("Threading is off: every notification is posted in the channel.")
            }
            Err(error) => store_failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Secret;
    use crate::notify::subscription::{Features, Filters};
    use crate::store::{InstallSource, InstallationState};

    fn installation(team: &str) -> Installation {
        Installation {
            team_id: team.into(),
            team_name: team.into(),
            enterprise_id: None,
            bot_user_id: "UB".into(),
            bot_id: None,
            app_id: None,
            bot_token: Some(Secret::new(format!("xoxb-{team}"))),
            scopes: Vec::new(),
            installer_user_id: None,
            installed_at: jiff::Timestamp::UNIX_EPOCH,
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            state: InstallationState::Active,
            source: InstallSource::OAuth,
        }
    }

    fn subscription(team: &str, repo: &str) -> Subscription {
        Subscription {
            team_id: team.into(),
            channel_id: "C1".into(),
            target: Target::Repository(repo.into()),
            features: Features::defaults(),
            filters: Filters::default(),
            main_branch: None,
            created_by: "U1".into(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            paused: None,
            private: None,
            coverage: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_watch_list_follows_active_installations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let clock = Arc::new(ManualClock::new(jiff::Timestamp::UNIX_EPOCH));
        let web =
            SlackWeb::new(&url::Url::parse("http://127.0.0.1:9/api/").expect("url")).expect("web");
        let accounts = Accounts {
            store: store.clone(),
            web: web.clone(),
            client: None,
            clock: clock.clone(),
            public_url: url::Url::parse("http://localhost/").expect("url"),
            link_changes: Default::default(),
        };
        let service = Subscriptions {
            store: store.clone(),
            web,
            clock: clock.clone(),
            accounts: accounts.clone(),
            lookup: None,
            access: AccessControl::new(
                store.clone(),
                accounts,
                None,
                crate::config::PrivateRepositories::Linked,
                Vec::new(),
                clock,
            ),
        };
        for team in ["T1", "T2"] {
            store
                .installations
                .upsert(installation(team))
                .await
                .expect("install");
        }
        store
            .subscriptions
            .put(&subscription("T1", "acme/api"))
            .await
            .expect("subscribe");
        store
            .subscriptions
            .put(&subscription("T2", "acme/web"))
            .await
            .expect("subscribe");
        service.reconcile_watchlist().await;
        assert_eq!(
            store.repositories.names().expect("names"),
            vec!["acme/api", "acme/web"]
        );

        store
            .installations
            .mark_uninstalled("T2", jiff::Timestamp::UNIX_EPOCH)
            .await
            .expect("uninstall");
        service.reconcile_watchlist().await;
        assert_eq!(
            store.repositories.names().expect("names"),
            vec!["acme/api"],
            "T2 is not polled"
        );

        store
            .installations
            .upsert(installation("T2"))
            .await
            .expect("reinstall");
        service.reconcile_watchlist().await;
        assert_eq!(
            store.repositories.names().expect("names"),
            vec!["acme/api", "acme/web"],
            "resumed"
        );
    }
}
