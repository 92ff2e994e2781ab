//! The private-repository policy at work: who may bring which repository into a channel
//! (`bitbucket.private_repositories`, `bitbucket.workspaces`), checked when a channel
//! subscribes and again every hour and whenever a person's link is removed or goes stale.
//!
//! Gathers the facts (the daemon's credential says whether a repository is private and
//! lists a workspace; the subscriber's own token says what they can read) and hands them
//! to the pure `notify::access`, then stores what changed before telling the subscriber
//! once by DM. A fact that cannot be gathered (Bitbucket unreachable) changes nothing.
//! Never shows a private repository's name to anyone but its subscriber.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::accounts::{Accounts, LoginError};
use crate::bitbucket::Target;
use crate::bitbucket::accounts::AccountError;
use crate::bitbucket::{LookupError, RepositoryLookup};
use crate::clock::Clock;
use crate::config::PrivateRepositories;
use crate::message::Message;
use crate::notify::Subscription;
use crate::notify::access::{self, Change, Refusal, Verdict};
use crate::store::Store;

/// How often every subscription's access is checked again.
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long a person's answer is reused (several subscriptions, one request).
const CACHE_LIFETIME: SignedDuration = SignedDuration::from_mins(30);

/// What a fact-finding request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<T> {
    Known(T),
    Refused(Refusal),
    /// Bitbucket could not be asked: the reason for the log, and what to tell a person
    /// when it is not a passing fault.
    Unknown {
        log: String,
        tell: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Question {
    Repository(String),
    Workspace(String),
}

#[derive(Debug, Clone)]
enum Answer {
    Reads(bool),
    Readable(BTreeSet<String>),
}

/// Answers per (team, person, question), with when they were given.
type AnswerCache = HashMap<(String, String, Question), (Timestamp, Answer)>;

/// The policy and its checker.
#[derive(Clone)]
pub struct AccessControl {
    pub store: Store,
    pub accounts: Accounts,
    /// `None` when no Bitbucket credential is configured.
    pub lookup: Option<Arc<dyn RepositoryLookup>>,
    pub policy: PrivateRepositories,
    /// `bitbucket.workspaces`: empty means any.
    pub workspaces: Vec<String>,
    pub clock: Arc<dyn Clock>,
    cache: Arc<Mutex<AnswerCache>>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("policy", &self.policy)
            .field("workspaces", &self.workspaces)
            .finish_non_exhaustive()
    }
}

/// What a subscribe asked for may be stored as.
#[derive(Debug)]
pub struct Admission {
    pub private: Option<bool>,
    pub verdict: Verdict,
}

impl AccessControl {
    pub fn new(
        store: Store,
        accounts: Accounts,
        lookup: Option<Arc<dyn RepositoryLookup>>,
        policy: PrivateRepositories,
        workspaces: Vec<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        AccessControl {
            store,
            accounts,
            lookup,
            policy,
            workspaces,
            clock,
            cache: Arc::default(),
        }
    }

    /// `/bitbucket status`'s line about the policy.
    pub fn describe_policy(&self) -> String {
        let policy = match self.policy {
            PrivateRepositories::Linked => {
                "private repositories can be subscribed by people whose own linked Bitbucket account can read them"
            }
            PrivateRepositories::Deny => "private repositories cannot be subscribed",
            PrivateRepositories::Credential => {
                "the daemon's Bitbucket credential decides: every repository it can read can be subscribed by anyone"
            }
        };
        let workspaces = if self.workspaces.is_empty() {
            "any workspace the credential can read".to_string()
        } else {
            self.allowed_list()
        };
        format!(
            "*Access:* {policy} (`bitbucket.private_repositories = \"{}\"`); workspaces: {workspaces}.",
            self.policy.as_str()
        )
    }

    fn allowed_list(&self) -> String {
        self.workspaces
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The refusal for a target outside `bitbucket.workspaces`, before any request.
    pub fn refuse_workspace(&self, target: &Target) -> Option<Message> {
        if access::workspace_allowed(target, &self.workspaces) {
            return None;
        }
        Some(Message::text(format!(
            "`{}` is not in a Bitbucket workspace this daemon may use. Allowed: {}. Nothing was changed.",
            target.as_str(),
            self.allowed_list()
        )))
    }

    /// Decides whether `user` may subscribe a channel to `target`, asking Bitbucket
    /// afresh (no cached answer): the refusal to show, or what to store.
    pub async fn admit(
        &self,
        team_id: &str,
        user_id: &str,
        target: &Target,
        is_private: bool,
    ) -> Result<Admission, Message> {
        if let Some(reply) = self.refuse_workspace(target) {
            return Err(reply);
        }
        self.forget_person(team_id, user_id);
        let mut note = None;
        let verdict = match target {
            Target::Repository(name) => {
                self.repository_verdict(team_id, user_id, name, is_private, &mut note)
                    .await
            }
            Target::Workspace(workspace) => {
                let mut listings = HashMap::new();
                self.workspace_verdict(team_id, user_id, workspace, &mut listings, &mut note)
                    .await
            }
        };
        match verdict {
            Verdict::Unknown => Err(Message::text(note.unwrap_or_else(|| {
                "Bitbucket could not be reached to check who may read that. Nothing was changed; try again in a minute.".into()
            }))),
            Verdict::Refused(refusal) => Err(self.refusal_reply(team_id, user_id, target, refusal)),
            verdict => Ok(Admission {
                private: matches!(target, Target::Repository(_)).then_some(is_private),
                verdict,
            }),
        }
    }

    /// The answer to a subscribe the policy refuses; nothing was stored.
    fn refusal_reply(
        &self,
        team_id: &str,
        user_id: &str,
        target: &Target,
        refusal: Refusal,
    ) -> Message {
        let name = target.as_str();
        match refusal {
            Refusal::NotLinked | Refusal::LinkStale => {
                let why = if refusal == Refusal::NotLinked {
                    "connect your own Bitbucket account first"
                } else {
                    "your Bitbucket link has expired: connect your account again"
                };
                let mut reply = Message::text(format!(
                    "`{name}` is private. To bring a private repository into a channel, {why} (it must be able to read `{name}`), then subscribe again. Nothing was changed."
                ));
                if let Some(button) = self.accounts.login_button(team_id, user_id) {
                    reply = reply.with_button(button);
                }
                reply
            }
            Refusal::CannotRead => Message::text(format!(
                "`{name}` is private and your Bitbucket account cannot read it, so you cannot subscribe a channel to it. Nothing was changed."
            )),
            Refusal::PrivateDenied => Message::text(format!(
                "`{name}` is private, and private repositories cannot be subscribed here (`bitbucket.private_repositories = \"deny\"`). Nothing was changed."
            )),
            Refusal::LinkingOff => Message::text(format!(
                "`{name}` is private. A private repository needs the subscriber's own Bitbucket account, and account linking is not set up: ask the person who runs bitbucket-slack to configure `bitbucket.user_oauth` (or to choose another `bitbucket.private_repositories`). Nothing was changed."
            )),
            Refusal::WorkspaceNotAllowed => self
                .refuse_workspace(target)
                .unwrap_or_else(|| Message::text("That workspace is not allowed here.")),
        }
    }

    /// The verdict for a repository subscription.
    async fn repository_verdict(
        &self,
        team_id: &str,
        user_id: &str,
        name: &str,
        is_private: bool,
        note: &mut Option<String>,
    ) -> Verdict {
        if !is_private {
            return Verdict::Allowed;
        }
        match self.policy {
            PrivateRepositories::Credential => Verdict::Allowed,
            PrivateRepositories::Deny => Verdict::Refused(Refusal::PrivateDenied),
            PrivateRepositories::Linked => {
                match self
                    .ask(team_id, user_id, Question::Repository(name.to_string()))
                    .await
                {
                    Fact::Known(Answer::Reads(true)) => Verdict::Allowed,
                    Fact::Known(_) => Verdict::Refused(Refusal::CannotRead),
                    Fact::Refused(refusal) => Verdict::Refused(refusal),
                    Fact::Unknown { log, tell } => {
                        warn!(reason = %log, "could not check a person's access to a repository");
                        *note = tell;
                        Verdict::Unknown
                    }
                }
            }
        }
    }

    /// The verdict for a workspace subscription; `listings` caches the workspace listing
    /// within one pass.
    async fn workspace_verdict(
        &self,
        team_id: &str,
        user_id: &str,
        workspace: &str,
        listings: &mut HashMap<String, Vec<(String, bool)>>,
        note: &mut Option<String>,
    ) -> Verdict {
        if self.policy == PrivateRepositories::Credential {
            return Verdict::Allowed;
        }
        let Some(lookup) = &self.lookup else {
            return Verdict::Unknown;
        };
        if !listings.contains_key(workspace) {
            match lookup.workspace_repositories(workspace).await {
                Ok(repositories) => {
                    listings.insert(
                        workspace.to_string(),
                        repositories
                            .into_iter()
                            .map(|repository| (repository.full_name, repository.is_private))
                            .collect(),
                    );
                }
                Err(error) => {
                    warn!(%error, %workspace, "could not list a workspace's repositories");
                    return Verdict::Unknown;
                }
            }
        }
        let listing = listings.get(workspace).cloned().unwrap_or_default();
        if self.policy == PrivateRepositories::Deny {
            return access::workspace_verdict(&listing, Err(Refusal::PrivateDenied));
        }
        if listing.iter().all(|(_, is_private)| !is_private) {
            return access::workspace_verdict(&listing, Ok(&BTreeSet::new()));
        }
        match self
            .ask(team_id, user_id, Question::Workspace(workspace.to_string()))
            .await
        {
            Fact::Known(Answer::Readable(readable)) => {
                access::workspace_verdict(&listing, Ok(&readable))
            }
            Fact::Known(Answer::Reads(_)) => Verdict::Unknown,
            Fact::Refused(refusal) => access::workspace_verdict(&listing, Err(refusal)),
            Fact::Unknown { log, tell } => {
                warn!(reason = %log, %workspace, "could not check what a person can read in a workspace");
                *note = tell;
                Verdict::Unknown
            }
        }
    }

    /// Asks Bitbucket with the person's own token, or answers from the cache.
    async fn ask(&self, team_id: &str, user_id: &str, question: Question) -> Fact<Answer> {
        let Some(client) = self.accounts.client.clone() else {
            return Fact::Refused(Refusal::LinkingOff);
        };
        let now = self.clock.now();
        let key = (team_id.to_string(), user_id.to_string(), question.clone());
        // A cached answer counts only while the person still has a working link.
        let linked =
            matches!(self.store.user_links.get(team_id, user_id), Ok(Some(link)) if !link.stale);
        if linked {
            let cache = self
                .cache
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if let Some((at, answer)) = cache.get(&key) {
                if now.duration_since(*at) < CACHE_LIFETIME {
                    return Fact::Known(answer.clone());
                }
            }
        }
        let token = match self.accounts.access_token(team_id, user_id).await {
            Ok(Some(token)) => token,
            Ok(None) => return Fact::Refused(Refusal::NotLinked),
            Err(LoginError::Stale) => return Fact::Refused(Refusal::LinkStale),
            Err(LoginError::NotConfigured) => return Fact::Refused(Refusal::LinkingOff),
            Err(error) => {
                return Fact::Unknown {
                    log: error.to_string(),
                    tell: matches!(
                        error,
                        LoginError::Bitbucket(AccountError::ConsumerRejected { .. })
                    )
                    .then(|| error.user_message()),
                };
            }
        };
        let answer = match &question {
            Question::Repository(name) => client
                .can_read_repository(&token, name)
                .await
                .map(Answer::Reads),
            Question::Workspace(workspace) => client
                .readable_in_workspace(&token, workspace)
                .await
                .map(Answer::Readable),
        };
        match answer {
            Ok(answer) => {
                self.cache
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(key, (now, answer.clone()));
                Fact::Known(answer)
            }
            Err(AccountError::Unauthorized) => {
                self.accounts.link_rejected(team_id, user_id).await;
                Fact::Refused(Refusal::LinkStale)
            }
            Err(error) => Fact::Unknown {
                log: error.to_string(),
                tell: None,
            },
        }
    }

    /// Forgets cached answers for a person (their link changed).
    pub fn forget_person(&self, team_id: &str, user_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .retain(|(team, user, _), _| !(team == team_id && user == user_id));
    }

    /// Checks every subscription of every active installation again, stores what changed
    /// and tells each subscriber once what was paused, resumed or left out.
    pub async fn recheck(&self) {
        let (Ok(active), Ok(subscriptions)) = (
            self.store.installations.active_team_ids(),
            self.store.subscriptions.list_all(),
        ) else {
            warn!("could not read the store to check subscriptions' access; will retry");
            return;
        };
        let mut listings = HashMap::new();
        let mut privacy: HashMap<String, Option<bool>> = HashMap::new();
        let mut told: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for subscription in subscriptions
            .into_iter()
            .filter(|subscription| active.contains(&subscription.team_id))
        {
            let mut updated = subscription.clone();
            let verdict = self
                .verdict_for(&mut updated, &mut listings, &mut privacy)
                .await;
            let change = access::apply(&mut updated, verdict, self.clock.now());
            if updated == subscription {
                continue;
            }
            // Compare and swap instead of a lock held across Bitbucket's answers: when two
            // passes (or a person's unsubscribe) race, only the write over what this pass
            // read lands, and only that pass tells anyone.
            match self
                .store
                .subscriptions
                .replace(&subscription, &updated)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    debug!(team = %updated.team_id, channel = %updated.channel_id, "subscription changed during the access check; left to the next pass");
                    continue;
                }
                Err(error) => {
                    warn!(%error, "could not store a subscription's access; will retry");
                    continue;
                }
            }
            if change != Change::None {
                info!(team = %updated.team_id, channel = %updated.channel_id, ?change, "subscription access changed");
            }
            if let Some(line) = access::change_line(&updated, &change) {
                told.entry((updated.team_id.clone(), updated.created_by.clone()))
                    .or_default()
                    .push(line);
            }
        }
        for ((team_id, user_id), lines) in told {
            let reply = Message {
                text: "Some of your Bitbucket subscriptions changed".into(),
                sections: vec![
                    "*Some of your Bitbucket subscriptions changed*, because of who can read the repositories:".into(),
                    lines.join("\n"),
                ],
                buttons: Vec::new(),
            };
            self.accounts.tell(&team_id, &user_id, &reply).await;
        }
    }

    /// The verdict for a stored subscription; fills in a repository's privacy when it
    /// was not known yet.
    async fn verdict_for(
        &self,
        subscription: &mut Subscription,
        listings: &mut HashMap<String, Vec<(String, bool)>>,
        privacy: &mut HashMap<String, Option<bool>>,
    ) -> Verdict {
        if !access::workspace_allowed(&subscription.target, &self.workspaces) {
            return Verdict::Refused(Refusal::WorkspaceNotAllowed);
        }
        let (team_id, user_id) = (
            subscription.team_id.clone(),
            subscription.created_by.clone(),
        );
        match subscription.target.clone() {
            Target::Workspace(workspace) => {
                self.workspace_verdict(&team_id, &user_id, &workspace, listings, &mut None)
                    .await
            }
            Target::Repository(name) => {
                let is_private = match subscription.private {
                    Some(known) => Some(known),
                    None => match privacy.get(&name) {
                        Some(known) => *known,
                        None => {
                            let known = self.privacy_of(&name).await;
                            privacy.insert(name.clone(), known);
                            known
                        }
                    },
                };
                let Some(is_private) = is_private else {
                    return Verdict::Unknown;
                };
                subscription.private = Some(is_private);
                self.repository_verdict(&team_id, &user_id, &name, is_private, &mut None)
                    .await
            }
        }
    }

    /// Whether a repository is private, with the daemon's credential (`None`: unknown).
    async fn privacy_of(&self, name: &str) -> Option<bool> {
        let lookup = self.lookup.as_ref()?;
        match lookup.lookup(&Target::Repository(name.to_string())).await {
            Ok(summary) => Some(summary.is_private),
            Err(LookupError::NotFound | LookupError::Forbidden) => None,
            Err(error) => {
                warn!(%error, repository = %name, "could not look a repository up");
                None
            }
        }
    }

    /// Checks every hour, and at once when a person's link is removed or goes stale.
    pub async fn run(
        self,
        link_changes: Arc<Notify>,
        subscriptions: super::subscriptions::Subscriptions,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(RECHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
                _ = link_changes.notified() => {
                    self.cache.lock().unwrap_or_else(|poison| poison.into_inner()).clear();
                }
            }
            self.recheck().await;
            // Coverage may have changed which repositories are worth polling.
            subscriptions.reconcile_watchlist().await;
        }
    }
}
