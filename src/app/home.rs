//! The App Home tab: on `app_home_opened` (the "home" tab) gathers what one person
//! should see and publishes it with `views.publish`; answers the tab's own buttons
//! (`home_*`: a notification toggle, unmute, Disconnect, an admin's Unsubscribe) and
//! publishes the tab again at once.
//!
//! Combines the store (links, settings, subscriptions, watched repositories), the
//! person's own Bitbucket token (through `Accounts`, refreshed like the actions do), the
//! campaigns (who is an admin, the phase) and Slack; `slack::home` decides how it looks.
//! Bitbucket's cost is bounded: at most [`MAX_REPOSITORIES`] repository reads and
//! [`MAX_BUILDS_READ`] build-state reads per refresh, one refresh per person per
//! [`CACHE_FOR`] (later opens and clicks reuse it), never two at once for one person.
//! Only repositories the person's own token reads appear (a 403 or 404 drops one); only
//! the event's workspace is ever read. Never acts for anyone but the clicker; an admin
//! button clicked by someone who is not an admin changes nothing and is logged. Never
//! logs a token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use tracing::{debug, info, warn};

use super::accounts::{Accounts, LoginError};
use super::subscriptions::Subscriptions;
use super::upgrade_driver::Campaigns;
use crate::bitbucket::accounts::AccountError;
use crate::bitbucket::name::parse_target;
use crate::bitbucket::open_pulls::OpenPullRequest;
use crate::clock::Clock;
use crate::config::{Secret, UpgradeConfig};
use crate::notify::personal::{KINDS, NotifyKind};
use crate::notify::subscription::covered_repositories;
use crate::slack::envelope::{BlockAction, BlockActions, ViewType};
use crate::slack::home::{
    self, AdminFacts, Coverage, HomeFacts, LinkedFacts, MAX_BUILDS_READ, PersonFacts,
    PullRequestLine, SubscriptionLine, WaitingFacts,
};
use crate::slack::web::SlackWeb;
use crate::store::{Installation, Store, UserLink};
use crate::upgrade::{self, Feature};

/// Repositories read per refresh; the view says when more were left out.
pub const MAX_REPOSITORIES: usize = 20;
/// How long one person's Bitbucket reads are reused.
pub const CACHE_FOR: SignedDuration = SignedDuration::from_secs(60);

/// What one refresh read from Bitbucket for one person.
#[derive(Debug, Clone)]
struct PullRequests {
    reviews: Vec<PullRequestLine>,
    own: Vec<PullRequestLine>,
    coverage: Coverage,
}

/// One person's cached reads.
#[derive(Debug, Clone)]
struct Cached {
    read_at: Timestamp,
    /// The link they were read for: a new link is read afresh.
    bitbucket_uuid: String,
    pull_requests: PullRequests,
}

type PersonKey = (String, String);

/// The Home tab service.
#[derive(Clone)]
pub struct Home {
    pub store: Store,
    pub web: SlackWeb,
    pub accounts: Accounts,
    pub subscriptions: Subscriptions,
    pub campaigns: Campaigns,
    pub upgrade: UpgradeConfig,
    pub clock: Arc<dyn Clock>,
    cache: Arc<Mutex<HashMap<PersonKey, Cached>>>,
    /// People whose refresh is running now.
    refreshing: Arc<Mutex<HashSet<PersonKey>>>,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Home")
    }
}

/// Why a person's pull requests could not be read.
enum ReadFailure {
    /// Bitbucket no longer accepts the link.
    Stale,
    /// Something else (Bitbucket down, a store error): the view says nothing is listed.
    Other,
}

impl Home {
    pub fn new(
        store: Store,
        web: SlackWeb,
        accounts: Accounts,
        subscriptions: Subscriptions,
        campaigns: Campaigns,
        upgrade: UpgradeConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Home {
            store,
            web,
            accounts,
            subscriptions,
            campaigns,
            upgrade,
            clock,
            cache: Arc::default(),
            refreshing: Arc::default(),
        }
    }

    /// `app_home_opened` on the "home" tab by `user_id` of `installation`.
    pub async fn opened(&self, installation: &Installation, user_id: &str) {
        self.publish(installation, user_id).await;
    }

    /// Whether a click is one of the Home tab's own buttons.
    pub fn handles(action_id: &str) -> bool {
        action_id.starts_with(home::ACTION_PREFIX)
    }

    /// A `home_*` button clicked by `click.user`; the tab is published again after it.
    pub async fn clicked(
        &self,
        installation: &Installation,
        click: &BlockActions,
        action: &BlockAction,
    ) {
        let team_id = installation.team_id.as_str();
        let user_id = click.user.as_str();
        if click
            .view
            .as_ref()
            .is_none_or(|view| view.view_type != ViewType::Home)
        {
            info!(team = team_id, user = user_id, action_id = %action.action_id, "a home button clicked outside the Home tab; ignored");
            return;
        }
        if !upgrade::is_available(Feature::AppHome, &installation.scopes) {
            info!(team = team_id, user = user_id, action_id = %action.action_id, "a home button clicked before the permission upgrade; ignored");
            return;
        }
        match action.action_id.as_str() {
            home::TOGGLE_KIND_ACTION_ID => {
                let kind = action
                    .value
                    .as_deref()
                    .and_then(|word| KINDS.iter().find(|spec| spec.word == word))
                    .map(|spec| spec.kind);
                match kind {
                    Some(kind) => self.toggle(team_id, user_id, kind).await,
                    None => {
                        info!(
                            team = team_id,
                            user = user_id,
                            "a notification toggle naming no known kind; ignored"
                        );
                        return;
                    }
                }
            }
            home::UNMUTE_ACTION_ID => self.unmute(team_id, user_id).await,
            home::DISCONNECT_ACTION_ID => {
                let answer = self.accounts.logout(team_id, user_id).await;
                self.forget(team_id, user_id);
                info!(team = team_id, user = user_id, answer = %answer.text, "disconnected from the Home tab");
            }
            home::UNSUBSCRIBE_ACTION_ID => {
                if !self.is_admin(installation, user_id) {
                    warn!(
                        team = team_id,
                        user = user_id,
                        "an Unsubscribe from the Home tab by someone who is not an admin; nothing changed"
                    );
                    return;
                }
                let Some((channel_id, target)) = action
                    .value
                    .as_deref()
                    .and_then(home::parse_unsubscribe_value)
                else {
                    info!(
                        team = team_id,
                        user = user_id,
                        "an Unsubscribe without a channel and target; ignored"
                    );
                    return;
                };
                let Ok(target) = parse_target(target) else {
                    info!(
                        team = team_id,
                        user = user_id,
                        "an Unsubscribe naming no valid target; ignored"
                    );
                    return;
                };
                let answer = self
                    .subscriptions
                    .unsubscribe_channel(installation, channel_id, target, Vec::new())
                    .await;
                info!(team = team_id, user = user_id, channel = channel_id, answer = %answer.text, "unsubscribe from the Home tab");
            }
            other => {
                debug!(
                    team = team_id,
                    action_id = other,
                    "a home button nothing handles"
                );
                return;
            }
        }
        self.publish(installation, user_id).await;
    }

    async fn toggle(&self, team_id: &str, user_id: &str, kind: NotifyKind) {
        match self.store.user_links.get(team_id, user_id) {
            Ok(Some(_)) => {}
            Ok(None) => {
                info!(
                    team = team_id,
                    user = user_id,
                    "a notification toggle from someone not linked; nothing changed"
                );
                return;
            }
            Err(error) => {
                warn!(team = team_id, user = user_id, %error, "could not read the user link");
                return;
            }
        }
        let mut settings = match self.store.personal_settings.get(team_id, user_id) {
            Ok(settings) => settings,
            Err(error) => {
                warn!(team = team_id, user = user_id, %error, "could not read personal settings");
                return;
            }
        };
        let on = !settings.is_on(kind);
        settings.set(kind, on);
        if let Err(error) = self
            .store
            .personal_settings
            .put(team_id, user_id, &settings)
            .await
        {
            warn!(team = team_id, user = user_id, %error, "could not store personal settings");
        }
    }

    async fn unmute(&self, team_id: &str, user_id: &str) {
        let mut settings = match self.store.personal_settings.get(team_id, user_id) {
            Ok(settings) => settings,
            Err(error) => {
                warn!(team = team_id, user = user_id, %error, "could not read personal settings");
                return;
            }
        };
        if settings.muted_until.is_none() {
            return;
        }
        settings.muted_until = None;
        if let Err(error) = self
            .store
            .personal_settings
            .put(team_id, user_id, &settings)
            .await
        {
            warn!(team = team_id, user = user_id, %error, "could not store personal settings");
        }
    }

    /// The campaign's admins: workspace admins and owners, the installer, `upgrade.admins`.
    fn is_admin(&self, installation: &Installation, user_id: &str) -> bool {
        self.campaigns
            .admins(installation)
            .iter()
            .any(|admin| admin == user_id)
    }

    /// Gathers the facts and publishes the tab; a failure is logged.
    async fn publish(&self, installation: &Installation, user_id: &str) {
        let Some(token) = &installation.bot_token else {
            return;
        };
        let facts = self.facts(installation, user_id).await;
        let view = home::home_view(&facts);
        if let Err(error) = self.web.publish_home(token, user_id, &view).await {
            warn!(team = %installation.team_id, user = user_id, %error, "could not publish the Home tab");
        }
    }

    async fn facts(&self, installation: &Installation, user_id: &str) -> HomeFacts {
        let is_admin = self.is_admin(installation, user_id);
        if !upgrade::is_available(Feature::AppHome, &installation.scopes) {
            return HomeFacts::WaitingOnAdmin(self.waiting(installation, is_admin));
        }
        let person = self.person(installation, user_id).await;
        let admin = is_admin.then(|| self.admin(installation));
        HomeFacts::Dashboard { person, admin }
    }

    fn phase(&self, installation: &Installation) -> String {
        let state = self.campaigns.current_state(installation);
        upgrade::campaign::phase_summary(&state, &self.upgrade.schedule, self.clock.now())
    }

    fn waiting(&self, installation: &Installation, viewer_is_admin: bool) -> WaitingFacts {
        let level = upgrade::permission_level(&installation.scopes);
        WaitingFacts {
            features: upgrade::FEATURES
                .iter()
                .filter(|spec| !upgrade::is_available(spec.feature, &installation.scopes))
                .map(|spec| spec.name.to_string())
                .collect(),
            missing_scopes: level.missing().iter().map(|s| s.to_string()).collect(),
            admins: self.campaigns.admins(installation),
            viewer_is_admin,
            phase: self.phase(installation),
        }
    }

    fn admin(&self, installation: &Installation) -> AdminFacts {
        let level = upgrade::permission_level(&installation.scopes);
        let subscriptions = match self.store.subscriptions.list_all() {
            Ok(all) => all
                .into_iter()
                .filter(|s| s.team_id == installation.team_id)
                .map(|s| SubscriptionLine {
                    channel_id: s.channel_id.clone(),
                    target: s.target.as_str().to_string(),
                    description: s.describe(),
                })
                .collect(),
            Err(error) => {
                warn!(team = %installation.team_id, %error, "could not list the subscriptions for the Home tab");
                Vec::new()
            }
        };
        AdminFacts {
            permission_level: level.name().to_string(),
            missing_scopes: level.missing().iter().map(|s| s.to_string()).collect(),
            phase: self.phase(installation),
            subscriptions,
        }
    }

    async fn person(&self, installation: &Installation, user_id: &str) -> PersonFacts {
        let team_id = installation.team_id.as_str();
        let link = match self.store.user_links.get(team_id, user_id) {
            Ok(Some(link)) => link,
            Ok(None) => {
                return PersonFacts::Unlinked {
                    connect: self.accounts.login_button(team_id, user_id),
                };
            }
            Err(error) => {
                warn!(team = team_id, user = user_id, %error, "could not read the user link");
                return PersonFacts::Unlinked {
                    connect: self.accounts.login_button(team_id, user_id),
                };
            }
        };
        if link.stale {
            return self.stale(&link);
        }
        let pull_requests = match self.pull_requests(installation, &link).await {
            Ok(pull_requests) => pull_requests,
            Err(ReadFailure::Stale) => {
                self.forget(team_id, user_id);
                return self.stale(&link);
            }
            Err(ReadFailure::Other) => PullRequests {
                reviews: Vec::new(),
                own: Vec::new(),
                coverage: Coverage {
                    failed: self.repositories(team_id).len(),
                    ..Coverage::default()
                },
            },
        };
        let settings = match self.store.personal_settings.get(team_id, user_id) {
            Ok(settings) => settings,
            Err(error) => {
                warn!(team = team_id, user = user_id, %error, "could not read personal settings");
                Default::default()
            }
        };
        PersonFacts::Linked(Box::new(LinkedFacts {
            display_name: link.display_name.clone(),
            reviews: pull_requests.reviews,
            own: pull_requests.own,
            coverage: pull_requests.coverage,
            settings,
            now: self.clock.now(),
        }))
    }

    fn stale(&self, link: &UserLink) -> PersonFacts {
        PersonFacts::Stale {
            display_name: link.display_name.clone(),
            connect: self
                .accounts
                .login_button(&link.team_id, &link.slack_user_id),
        }
    }

    fn forget(&self, team_id: &str, user_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(team_id.to_string(), user_id.to_string()));
        }
    }

    /// The person's lists: from the cache when read within [`CACHE_FOR`] for the same
    /// link, else read now (and cached). While a refresh of theirs is running, an older
    /// read (or nothing) is shown instead of starting another.
    async fn pull_requests(
        &self,
        installation: &Installation,
        link: &UserLink,
    ) -> Result<PullRequests, ReadFailure> {
        let key = (link.team_id.clone(), link.slack_user_id.clone());
        let now = self.clock.now();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).cloned())
            .filter(|cached| cached.bitbucket_uuid == link.bitbucket_uuid);
        if let Some(cached) = &cached {
            if now.duration_since(cached.read_at) < CACHE_FOR {
                return Ok(cached.pull_requests.clone());
            }
        }
        let started = self
            .refreshing
            .lock()
            .map(|mut refreshing| refreshing.insert(key.clone()))
            .unwrap_or(false);
        if !started {
            debug!(team = %key.0, user = %key.1, "a Home refresh is already running for this person");
            return Ok(cached
                .map(|cached| cached.pull_requests)
                .unwrap_or(PullRequests {
                    reviews: Vec::new(),
                    own: Vec::new(),
                    coverage: Coverage::default(),
                }));
        }
        let read = self.read(installation, link).await;
        if let Ok(mut refreshing) = self.refreshing.lock() {
            refreshing.remove(&key);
        }
        let read = read?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, cached| now.duration_since(cached.read_at) < CACHE_FOR);
            cache.insert(
                key,
                Cached {
                    read_at: now,
                    bitbucket_uuid: link.bitbucket_uuid.clone(),
                    pull_requests: read.clone(),
                },
            );
        }
        Ok(read)
    }

    /// The repositories this workspace's subscriptions cover
    /// (`notify::subscription::covered_repositories`), sorted, without duplicates.
    fn repositories(&self, team_id: &str) -> Vec<String> {
        let subscriptions = match self.store.subscriptions.list_all() {
            Ok(all) => all,
            Err(error) => {
                warn!(team = team_id, %error, "could not list the subscriptions for the Home tab");
                return Vec::new();
            }
        };
        let watched = self.store.repositories.names().unwrap_or_default();
        covered_repositories(
            subscriptions.iter().filter(|s| s.team_id == team_id),
            &watched,
        )
        .into_iter()
        .collect()
    }

    /// One refresh: the open pull requests of at most [`MAX_REPOSITORIES`] repositories
    /// with the person's token, then the build state of at most [`MAX_BUILDS_READ`] of
    /// their own.
    async fn read(
        &self,
        installation: &Installation,
        link: &UserLink,
    ) -> Result<PullRequests, ReadFailure> {
        let team_id = installation.team_id.as_str();
        let user_id = link.slack_user_id.as_str();
        let Some(client) = &self.accounts.client else {
            return Err(ReadFailure::Other);
        };
        let token: Secret<String> = match self.accounts.access_token(team_id, user_id).await {
            Ok(Some(token)) => token,
            Ok(None) => return Err(ReadFailure::Other),
            Err(LoginError::Stale) => return Err(ReadFailure::Stale),
            Err(error) => {
                warn!(team = team_id, user = user_id, %error, "no usable Bitbucket token for the Home tab");
                return Err(ReadFailure::Other);
            }
        };
        let repositories = self.repositories(team_id);
        let mut coverage = Coverage {
            left_out: repositories.len().saturating_sub(MAX_REPOSITORIES),
            ..Coverage::default()
        };
        let mut open: Vec<OpenPullRequest> = Vec::new();
        for repository in repositories.iter().take(MAX_REPOSITORIES) {
            match client.open_pull_requests(&token, repository).await {
                Ok(found) => {
                    coverage.read += 1;
                    open.extend(found);
                }
                // Not theirs to read: the repository is left out without a word.
                Err(AccountError::Http { status: 403 | 404 }) => {}
                Err(AccountError::Unauthorized) => {
                    self.accounts.link_rejected(team_id, user_id).await;
                    return Err(ReadFailure::Stale);
                }
                Err(error) => {
                    debug!(team = team_id, user = user_id, %error, "a repository could not be read for the Home tab");
                    coverage.failed += 1;
                }
            }
        }
        let now = self.clock.now();
        let uuid = link.bitbucket_uuid.as_str();
        let mut reviews: Vec<&OpenPullRequest> =
            open.iter().filter(|pr| pr.waits_for(uuid)).collect();
        reviews.sort_by_key(|pr| (pr.created_on, pr.id));
        let mut own: Vec<&OpenPullRequest> = open.iter().filter(|pr| pr.is_by(uuid)).collect();
        own.sort_by_key(|pr| std::cmp::Reverse((pr.updated_on, pr.id)));
        let mut own_lines: Vec<PullRequestLine> = own.iter().map(|pr| line(pr, now)).collect();
        let mut builds_read = 0;
        for (line, pr) in own_lines.iter_mut().zip(&own) {
            let Some(head) = pr.head.as_deref() else {
                continue;
            };
            if builds_read == MAX_BUILDS_READ {
                coverage.builds_not_read += 1;
                continue;
            }
            builds_read += 1;
            match client
                .commit_build_state(&token, &pr.repository, head)
                .await
            {
                Ok(build) => line.build = build,
                Err(error) => {
                    debug!(team = team_id, user = user_id, %error, "a build state could not be read for the Home tab")
                }
            }
        }
        Ok(PullRequests {
            reviews: reviews.iter().map(|pr| line(pr, now)).collect(),
            own: own_lines,
            coverage,
        })
    }
}

/// A pull request as a list shows it.
fn line(pr: &OpenPullRequest, now: Timestamp) -> PullRequestLine {
    PullRequestLine {
        repository: pr.repository.clone(),
        id: pr.id,
        title: pr.title.clone(),
        link: pr.link.clone(),
        author: pr.author.as_ref().map(|author| author.display_name.clone()),
        age: pr.age(now),
        approvals: pr.approved_by().count(),
        reviewers: pr.reviews.iter().filter(|review| review.requested).count(),
        draft: pr.draft,
        build: None,
    }
}
