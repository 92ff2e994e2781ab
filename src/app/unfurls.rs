//! Link previews: a `link_shared` event's `bitbucket.org` links → access-checked reads →
//! one `chat.unfurl` with a card per link, and at most one ephemeral offer a day to a
//! sharer who must connect (or reconnect) their Bitbucket account to see them.
//!
//! Combines `bitbucket::links` (what a link is), `bitbucket::preview_reads` (the reads),
//! `notify::unfurl` (the cards), the store (the daily offers), `Accounts` (the sharer's
//! token and the login button) and Slack. Access: a repository the daemon's credential
//! says is public is read with it, for anyone; anything else only with the sharer's own
//! token, and only what that token can read is shown. Answers are cached 60 s per link,
//! public ones for everyone and the others per person, so a private answer is never
//! served to someone else. Previews spend their own budget share
//! ([`PREVIEW_SHARE_PERCENT`] of the credential's hourly limit, never waiting), and each
//! event's work is bounded ([`EVENT_DEADLINE`], [`MAX_LINKS`]). Must never show private
//! content to someone whose own token did not read it, wait on the poller's budget, or log
//! a token or a link's path (logs name the repository and the kind of link).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use crate::bitbucket::budget::BudgetGate;
use crate::bitbucket::links::{self, BitbucketLink, LinkTarget};
use crate::bitbucket::preview::Preview;
use crate::bitbucket::preview_reads::{PreviewError, PreviewReader};
use crate::bitbucket::{BitbucketClient, RepositoryName};
use crate::clock::Clock;
use crate::metrics::{KindLabel, Metrics};
use crate::notify::unfurl;
use crate::slack::envelope::{LinkShared, LinkSource};
use crate::slack::web::{SlackWeb, UnfurlTarget};
use crate::store::{Installation, Store};
use crate::upgrade::{self, Feature};

use super::accounts::{Accounts, LoginError};

/// The share of the credential's hourly request limit previews may spend, in percent
/// (with the default `bitbucket.budget_percent` of 80 for the poller, it comes out of the
/// 20 % left to people and other tools, never out of polling).
pub const PREVIEW_SHARE_PERCENT: u32 = 5;
/// How long a preview (and a repository's privacy) is reused.
pub const CACHE_FOR: SignedDuration = SignedDuration::from_secs(60);
/// The bound on one event's Bitbucket work: Slack shows unfurls only for a few seconds.
pub const EVENT_DEADLINE: Duration = Duration::from_millis(2500);
/// The links of one event previewed at most (Slack sends up to five).
pub const MAX_LINKS: usize = 5;
/// Cached answers kept at most (the oldest are dropped first).
const MAX_CACHED: usize = 1000;

/// Who a cached answer was read for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Reader {
    /// The daemon's credential, on a public repository: anyone may see it.
    Public,
    /// One person's own token.
    Person { team_id: String, user_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Privacy {
    Public,
    /// Private, or out of the daemon credential's reach.
    Private,
    /// Not known (no credential, or it could not say): only the sharer's token reads.
    Unknown,
}

/// What became of one link.
#[derive(Debug)]
enum Outcome {
    Card(Box<Preview>),
    /// The sharer needs to connect (`stale`: connect again) to see it.
    NeedsAccount {
        stale: bool,
    },
    /// Nothing to show: no access, gone, budget spent, Bitbucket failed.
    Nothing {
        refused: bool,
    },
}

#[derive(Default)]
struct Caches {
    previews: HashMap<(Reader, String), (Preview, Timestamp)>,
    privacy: HashMap<String, (Privacy, Timestamp)>,
}

/// The link-preview service. Cheap to clone.
#[derive(Clone)]
pub struct Unfurls {
    store: Store,
    web: SlackWeb,
    accounts: Accounts,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// The daemon's credential for previews (its own budget share), when one is set.
    daemon: Option<BitbucketClient>,
    budget: Arc<BudgetGate>,
    caches: Arc<Mutex<Caches>>,
}

impl std::fmt::Debug for Unfurls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unfurls")
    }
}

impl Unfurls {
    /// `polling` is the daemon's client (its preview twin gets the budget share);
    /// `rate_limit_per_hour` is `bitbucket.rate_limit_per_hour`.
    pub fn new(
        store: Store,
        web: SlackWeb,
        accounts: Accounts,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        polling: Option<&BitbucketClient>,
        rate_limit_per_hour: u32,
    ) -> Self {
        let budget = Arc::new(BudgetGate::unpaced(
            rate_limit_per_hour,
            PREVIEW_SHARE_PERCENT,
        ));
        // With several replicas, the previews' share is counted across them too.
        if let Some(client) = polling.filter(|_| store.coordination.is_shared()) {
            budget.share(super::poller::shared_budget(
                &store, &clock, client, "previews",
            ));
        }
        Self {
            daemon: polling.map(|client| client.for_previews(budget.clone(), EVENT_DEADLINE)),
            store,
            web,
            accounts,
            clock,
            metrics,
            budget,
            caches: Arc::default(),
        }
    }

    fn count(&self, outcome: &str, n: usize) {
        if n > 0 {
            self.metrics
                .previews
                .get_or_create(&KindLabel {
                    kind: outcome.into(),
                })
                .inc_by(n as u64);
        }
    }

    /// Answers one `link_shared` event of `installation`'s workspace.
    pub async fn link_shared(&self, installation: &Installation, event: &LinkShared) {
        let team_id = installation.team_id.as_str();
        if !upgrade::is_available(Feature::LinkUnfurls, &installation.scopes) {
            debug!(
                team = team_id,
                "link_shared before the permission upgrade (links:read, links:write): not previewed"
            );
            self.count("skipped", event.links.len());
            return;
        }
        let Some(bot_token) = &installation.bot_token else {
            debug!(
                team = team_id,
                "link_shared for a workspace without a bot token"
            );
            return;
        };
        let mut wanted: Vec<(String, BitbucketLink)> = Vec::new();
        for shared in &event.links {
            if wanted.iter().any(|(url, _)| *url == shared.url) {
                continue;
            }
            match links::parse(&shared.url) {
                Some(link) if wanted.len() < MAX_LINKS => wanted.push((shared.url.clone(), link)),
                Some(_) => debug!(team = team_id, "more links than previewed per message"),
                None => debug!(
                    team = team_id,
                    domain = %shared.domain,
                    "a shared link that is not previewed"
                ),
            }
        }
        if wanted.is_empty() {
            return;
        }
        let reads = futures_util::future::join_all(
            wanted
                .iter()
                .map(|(url, link)| self.outcome(team_id, &event.user, link, url)),
        );
        let outcomes = match tokio::time::timeout(EVENT_DEADLINE, reads).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                info!(
                    team = team_id,
                    links = wanted.len(),
                    "link previews took too long; none sent"
                );
                self.count("skipped", wanted.len());
                return;
            }
        };
        let now = self.clock.now();
        let mut cards = Map::new();
        let mut offer: Option<bool> = None;
        for ((url, link), outcome) in wanted.iter().zip(outcomes) {
            match outcome {
                Outcome::Card(preview) => {
                    cards.insert(url.clone(), unfurl::card(&preview, now));
                }
                Outcome::NeedsAccount { stale } => {
                    debug!(team = team_id, repository = %link.repository, kind = link.target.kind(), "not previewed: the sharer must connect");
                    self.count("refused", 1);
                    offer = Some(offer.unwrap_or(false) || stale);
                }
                Outcome::Nothing { refused } => {
                    self.count(if refused { "refused" } else { "skipped" }, 1);
                }
            }
        }
        // The offer goes first: once the unfurl is seen, every decision of this event
        // has been carried out.
        if let Some(stale) = offer {
            self.offer_to_connect(installation, event, stale).await;
        }
        if !cards.is_empty() {
            let target = match (&event.unfurl_id, &event.source) {
                (Some(unfurl_id), Some(source)) => UnfurlTarget::Event {
                    unfurl_id,
                    source: source_word(source),
                },
                _ => UnfurlTarget::Message {
                    channel: &event.channel,
                    ts: &event.message_ts,
                },
            };
            let n = cards.len();
            match self
                .web
                .unfurl(bot_token, &target, &Value::Object(cards))
                .await
            {
                Ok(()) => self.count("sent", n),
                Err(error) => {
                    warn!(team = team_id, %error, "chat.unfurl failed");
                    self.count("skipped", n);
                }
            }
        }
    }

    /// The ephemeral "connect your account" offer, at most once a day per person.
    async fn offer_to_connect(&self, installation: &Installation, event: &LinkShared, stale: bool) {
        let team_id = installation.team_id.as_str();
        if event.source == Some(LinkSource::Composer) || event.channel == "COMPOSER" {
            debug!(
                team = team_id,
                "a link in a message being written: no offer until it is sent"
            );
            return;
        }
        let (Some(bot_token), Some(button)) = (
            &installation.bot_token,
            self.accounts.login_button(team_id, &event.user),
        ) else {
            return;
        };
        match self
            .store
            .unfurl_offers
            .take_offer(team_id, &event.user, self.clock.now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                debug!(team = team_id, "connect offer already made today");
                return;
            }
            Err(error) => {
                warn!(team = team_id, %error, "could not record a connect offer; not offering");
                return;
            }
        }
        let offer = unfurl::connect_offer(stale, button);
        if let Err(error) = self
            .web
            .post_ephemeral(bot_token, &event.channel, &event.user, &offer)
            .await
        {
            warn!(team = team_id, %error, "could not offer to connect for link previews");
        }
    }

    /// What to show for one link shared by `user_id`.
    async fn outcome(
        &self,
        team_id: &str,
        user_id: &str,
        link: &BitbucketLink,
        url: &str,
    ) -> Outcome {
        let person = Reader::Person {
            team_id: team_id.into(),
            user_id: user_id.into(),
        };
        if let Some(preview) = self
            .cached(&Reader::Public, url)
            .or_else(|| self.cached(&person, url))
        {
            return Outcome::Card(Box::new(preview));
        }
        match self.privacy(&link.repository, link, url).await {
            Privacy::Public => {
                // A repository's own link got its card from the privacy read.
                if let Some(preview) = self.cached(&Reader::Public, url) {
                    return Outcome::Card(Box::new(preview));
                }
                match self.daemon.as_ref() {
                    Some(client) => {
                        let read = PreviewReader::Daemon(client).preview(link, url).await;
                        self.settle(read, Reader::Public, link, url)
                    }
                    None => Outcome::Nothing { refused: false },
                }
            }
            Privacy::Private | Privacy::Unknown => self.as_person(person, link, url).await,
        }
    }

    /// Reads `link` with the sharer's own token.
    async fn as_person(&self, person: Reader, link: &BitbucketLink, url: &str) -> Outcome {
        let Reader::Person { team_id, user_id } = &person else {
            return Outcome::Nothing { refused: false };
        };
        let Some(client) = self.accounts.client.as_ref() else {
            debug!(team = %team_id, "a private link, and linking accounts is not configured");
            return Outcome::Nothing { refused: true };
        };
        let token = match self.accounts.access_token(team_id, user_id).await {
            Ok(Some(token)) => token,
            Ok(None) => return Outcome::NeedsAccount { stale: false },
            Err(LoginError::Stale) => return Outcome::NeedsAccount { stale: true },
            Err(error) => {
                warn!(team = %team_id, %error, "could not get the sharer's Bitbucket token");
                return Outcome::Nothing { refused: false };
            }
        };
        let reader = PreviewReader::Person {
            client,
            token: &token,
            budget: &self.budget,
        };
        let read = reader.preview(link, url).await;
        if read == Err(PreviewError::Unauthorized) {
            self.accounts.link_rejected(team_id, user_id).await;
            return Outcome::NeedsAccount { stale: true };
        }
        self.settle(read, person, link, url)
    }

    fn settle(
        &self,
        read: Result<Preview, PreviewError>,
        reader: Reader,
        link: &BitbucketLink,
        url: &str,
    ) -> Outcome {
        match read {
            Ok(preview) => {
                self.remember(reader, url, preview.clone());
                Outcome::Card(Box::new(preview))
            }
            Err(PreviewError::NoAccess) => {
                debug!(repository = %link.repository, kind = link.target.kind(), "not readable: no preview");
                Outcome::Nothing { refused: true }
            }
            Err(PreviewError::BudgetSpent) => {
                info!("the link-preview budget is spent for this hour: no preview");
                Outcome::Nothing { refused: false }
            }
            Err(error) => {
                info!(repository = %link.repository, kind = link.target.kind(), %error, "could not read a link preview");
                Outcome::Nothing { refused: false }
            }
        }
    }

    /// Whether `repository` is public, as the daemon's credential says (cached). A
    /// public repository's own link gets its card from the same read.
    async fn privacy(
        &self,
        repository: &RepositoryName,
        link: &BitbucketLink,
        url: &str,
    ) -> Privacy {
        let now = self.clock.now();
        if let Some(privacy) = self.with_caches(|caches| {
            caches
                .privacy
                .get(repository.as_str())
                .filter(|(_, at)| fresh(*at, now))
                .map(|(privacy, _)| *privacy)
        }) {
            return privacy;
        }
        let Some(client) = self.daemon.as_ref() else {
            return Privacy::Unknown;
        };
        let privacy = match PreviewReader::Daemon(client)
            .repository(repository, url)
            .await
        {
            Ok(card) if !card.is_private => {
                if link.target == LinkTarget::Repository {
                    self.remember(Reader::Public, url, Preview::Repository(card));
                }
                Privacy::Public
            }
            Ok(_) | Err(PreviewError::NoAccess) => Privacy::Private,
            Err(error) => {
                debug!(repository = %repository, %error, "privacy unknown");
                return Privacy::Unknown;
            }
        };
        self.with_caches(|caches| {
            caches
                .privacy
                .insert(repository.as_str().to_string(), (privacy, now));
            if caches.privacy.len() > MAX_CACHED {
                caches.privacy.retain(|_, (_, at)| fresh(*at, now));
            }
        });
        privacy
    }

    fn cached(&self, reader: &Reader, url: &str) -> Option<Preview> {
        let now = self.clock.now();
        self.with_caches(|caches| {
            caches
                .previews
                .get(&(reader.clone(), url.to_string()))
                .filter(|(_, at)| fresh(*at, now))
                .map(|(preview, _)| preview.clone())
        })
    }

    fn remember(&self, reader: Reader, url: &str, preview: Preview) {
        let now = self.clock.now();
        self.with_caches(|caches| {
            if caches.previews.len() >= MAX_CACHED {
                caches.previews.retain(|_, (_, at)| fresh(*at, now));
            }
            if caches.previews.len() < MAX_CACHED {
                caches
                    .previews
                    .insert((reader, url.to_string()), (preview, now));
            }
        });
    }

    fn with_caches<T>(&self, f: impl FnOnce(&mut Caches) -> T) -> T {
        let mut caches = self
            .caches
            .lock()
            .expect("the preview cache lock is never held across a panic");
        f(&mut caches)
    }
}

fn fresh(at: Timestamp, now: Timestamp) -> bool {
    now >= at && now.duration_since(at) < CACHE_FOR
}

fn source_word(source: &LinkSource) -> &str {
    match source {
        LinkSource::Composer => "composer",
        LinkSource::ConversationsHistory => "conversations_history",
        LinkSource::Other(other) => other,
    }
}
