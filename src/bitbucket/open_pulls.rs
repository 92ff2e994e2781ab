//! Open pull requests as the review lists see them (review reminders, the personal
//! digest, the home tab): who wrote each, who reviews it and how far each reviewer got,
//! how old it is. Owns the `fields=` of that read ([`FIELDS_OPEN`]), its wire shape, and
//! the pure choices made from it: which pull requests wait for review at all
//! ([`OpenPullRequest::waits_for_review`]) and which wait for one person
//! ([`OpenPullRequest::waits_for`]).
//!
//! Pure: no I/O, no clock (ages take `now`). The reads themselves live in the clients
//! (`BitbucketClient::open_pull_requests` with the daemon's credential,
//! `UserOAuthClient::open_pull_requests` with a person's token).

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use super::activity::Actor;
use super::preview::BuildSummary;

/// What one page of `GET /repositories/{workspace}/{repo}/pullrequests?state=OPEN` is read
/// with. `reviewers` and `participants` are hidden in the collection unless asked for.
pub const FIELDS_OPEN: &str = "next,values.id,values.title,values.state,values.draft,\
values.created_on,values.updated_on,values.links.html.href,\
values.author.display_name,values.author.uuid,\
values.source.branch.name,values.source.commit.hash,values.destination.branch.name,\
values.reviewers.display_name,values.reviewers.uuid,\
values.participants.user.display_name,values.participants.user.uuid,\
values.participants.role,values.participants.approved,values.participants.state";

/// Pull requests read per page, and the pages read per repository: a review list never
/// needs more than the 100 most recently updated open pull requests of one repository.
pub const OPEN_PAGELEN: &str = "50";
pub const OPEN_MAX_PAGES: usize = 2;

/// Where one reviewer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewState {
    /// Asked, has not approved or requested changes.
    Pending,
    Approved,
    ChangesRequested,
}

/// A reviewer (or a participant who approved or requested changes without being asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub who: Actor,
    /// Asked to review (role REVIEWER), as opposed to someone who chimed in.
    pub requested: bool,
    pub state: ReviewState,
}

/// An open pull request with its review state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPullRequest {
    /// `workspace/repo`, lower case.
    pub repository: String,
    pub id: u64,
    pub title: String,
    pub link: Option<String>,
    pub author: Option<Actor>,
    pub created_on: Timestamp,
    pub updated_on: Timestamp,
    pub draft: bool,
    pub source_branch: Option<String>,
    pub destination_branch: Option<String>,
    /// The source branch's head commit (for its build state).
    pub head: Option<String>,
    /// Requested reviewers first (in Bitbucket's order), then others who approved or
    /// requested changes.
    pub reviews: Vec<Review>,
}

impl OpenPullRequest {
    /// Ready for review and not yet approved by everyone asked: a draft never waits; one
    /// without requested reviewers waits until someone approves it.
    pub fn waits_for_review(&self) -> bool {
        if self.draft {
            return false;
        }
        let requested: Vec<&Review> = self.reviews.iter().filter(|r| r.requested).collect();
        if requested.is_empty() {
            return !self
                .reviews
                .iter()
                .any(|review| review.state == ReviewState::Approved);
        }
        requested
            .iter()
            .any(|review| review.state != ReviewState::Approved)
    }

    /// Waits for the person with Bitbucket `uuid`: they are asked to review it and have
    /// neither approved it nor requested changes (then it waits for the author). Never a
    /// draft, never their own.
    pub fn waits_for(&self, uuid: &str) -> bool {
        !self.draft
            && !self.is_by(uuid)
            && self.reviews.iter().any(|review| {
                review.requested
                    && review.state == ReviewState::Pending
                    && review.who.uuid.as_deref() == Some(uuid)
            })
    }

    /// Written by the person with Bitbucket `uuid`.
    pub fn is_by(&self, uuid: &str) -> bool {
        self.author
            .as_ref()
            .and_then(|author| author.uuid.as_deref())
            == Some(uuid)
    }

    /// Who approved it, in review order.
    pub fn approved_by(&self) -> impl Iterator<Item = &Actor> {
        self.reviews
            .iter()
            .filter(|review| review.state == ReviewState::Approved)
            .map(|review| &review.who)
    }

    /// Requested reviewers who have not approved yet.
    pub fn pending_reviewers(&self) -> impl Iterator<Item = &Actor> {
        self.reviews
            .iter()
            .filter(|review| review.requested && review.state != ReviewState::Approved)
            .map(|review| &review.who)
    }

    /// How long it has been open at `now` (never negative).
    pub fn age(&self, now: Timestamp) -> SignedDuration {
        now.duration_since(self.created_on)
            .max(SignedDuration::ZERO)
    }
}

/// One page as Bitbucket sends it.
#[derive(Debug, Deserialize)]
pub struct OpenPage {
    #[serde(default)]
    pub values: Vec<WirePullRequest>,
    pub next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WirePullRequest {
    id: u64,
    #[serde(default)]
    title: String,
    state: Option<String>,
    #[serde(default)]
    draft: bool,
    created_on: Timestamp,
    updated_on: Option<Timestamp>,
    links: Option<WireLinks>,
    author: Option<WireAccount>,
    source: Option<WireEndpoint>,
    destination: Option<WireEndpoint>,
    #[serde(default)]
    reviewers: Vec<Option<WireAccount>>,
    #[serde(default)]
    participants: Vec<WireParticipant>,
}

#[derive(Debug, Deserialize)]
struct WireLinks {
    html: Option<WireHref>,
}

#[derive(Debug, Deserialize)]
struct WireHref {
    href: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireAccount {
    display_name: Option<String>,
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireEndpoint {
    branch: Option<WireName>,
    commit: Option<WireCommit>,
}

#[derive(Debug, Deserialize)]
struct WireName {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireCommit {
    hash: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireParticipant {
    /// `null` for a deleted account.
    user: Option<WireAccount>,
    role: Option<String>,
    #[serde(default)]
    approved: bool,
    state: Option<String>,
}

fn actor(account: &WireAccount) -> Actor {
    Actor {
        display_name: account
            .display_name
            .clone()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| "someone".to_string()),
        uuid: account.uuid.clone(),
    }
}

impl WirePullRequest {
    /// The pull request of `repository`, if it is open (Bitbucket's DRAFT state is an open
    /// draft; QUEUED and closed states are not waiting for anyone).
    pub fn into_open(self, repository: &str) -> Option<OpenPullRequest> {
        let state = self.state.as_deref().unwrap_or("OPEN");
        let draft = match state {
            "OPEN" => self.draft,
            "DRAFT" => true,
            _ => return None,
        };
        let mut reviews: Vec<Review> = Vec::new();
        for account in self.reviewers.iter().flatten() {
            if account.uuid.is_some()
                && reviews.iter().any(|review| review.who.uuid == account.uuid)
            {
                continue;
            }
            reviews.push(Review {
                who: actor(account),
                requested: true,
                state: ReviewState::Pending,
            });
        }
        for participant in &self.participants {
            let Some(user) = &participant.user else {
                continue;
            };
            let state = if participant.approved || participant.state.as_deref() == Some("approved")
            {
                ReviewState::Approved
            } else if participant.state.as_deref() == Some("changes_requested") {
                ReviewState::ChangesRequested
            } else {
                ReviewState::Pending
            };
            let requested = participant.role.as_deref() == Some("REVIEWER");
            let known = reviews
                .iter_mut()
                .find(|review| user.uuid.is_some() && review.who.uuid == user.uuid);
            match known {
                Some(review) => {
                    review.state = state;
                    review.requested |= requested;
                }
                None if requested || state != ReviewState::Pending => reviews.push(Review {
                    who: actor(user),
                    requested,
                    state,
                }),
                None => {}
            }
        }
        Some(OpenPullRequest {
            repository: repository.to_lowercase(),
            id: self.id,
            title: self.title,
            link: self.links.and_then(|links| links.html?.href),
            author: self.author.as_ref().map(actor),
            created_on: self.created_on,
            updated_on: self.updated_on.unwrap_or(self.created_on),
            draft,
            source_branch: self
                .source
                .as_ref()
                .and_then(|endpoint| endpoint.branch.as_ref()?.name.clone()),
            destination_branch: self
                .destination
                .as_ref()
                .and_then(|endpoint| endpoint.branch.as_ref()?.name.clone()),
            head: self
                .source
                .as_ref()
                .and_then(|endpoint| endpoint.commit.as_ref()?.hash.clone()),
            reviews,
        })
    }
}

/// What one page of `GET …/commit/{hash}/statuses` is read with (the home tab's build
/// state of a person's own pull requests).
pub const FIELDS_STATUSES: &str = "values.state";

/// Where the builds reported for one commit stand, all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    /// Every reported build passed.
    Passed,
    /// At least one failed.
    Failed,
    /// None failed and at least one is still running.
    Running,
    /// None failed or runs, and at least one was stopped.
    Stopped,
}

impl BuildState {
    /// The overall state of a commit's build statuses as Bitbucket names them
    /// (`SUCCESSFUL`, `FAILED`, `INPROGRESS`, `STOPPED`); `None` when none were reported.
    /// A failure wins, then a running build, then a stopped one
    /// ([`BuildSummary::state`]).
    pub fn overall<'a>(states: impl IntoIterator<Item = &'a str>) -> Option<BuildState> {
        let mut summary = BuildSummary::default();
        for state in states {
            summary.count(state);
        }
        summary.state()
    }
}

/// One page of a commit's statuses as Bitbucket sends it.
#[derive(Debug, Deserialize)]
pub struct StatusPage {
    #[serde(default)]
    pub values: Vec<WireStatus>,
}

#[derive(Debug, Deserialize)]
pub struct WireStatus {
    #[serde(default)]
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> OpenPullRequest {
        serde_json::from_value::<WirePullRequest>(value)
            .expect("parses")
            .into_open("Acme/Web")
            .expect("open")
    }

    fn account(name: &str) -> serde_json::Value {
        json!({"display_name": name, "uuid": format!("{{{name}}}")})
    }

    fn pull_request(reviewers: &[&str], participants: serde_json::Value) -> serde_json::Value {
        json!({
            "id": 7, "title": "Fix login", "state": "OPEN", "draft": false,
            "created_on": "2026-11-01T09:00:00+00:00",
            "updated_on": "2026-11-02T09:00:00.123456+00:00",
            "links": {"html": {"href": "https://bitbucket.org/acme/web/pull-requests/7"}},
            "author": account("ann"),
            "source": {"branch": {"name": "fix/login"}, "commit": {"hash": "abc123def456"}},
            "destination": {"branch": {"name": "main"}},
            "reviewers": reviewers.iter().map(|name| account(name)).collect::<Vec<_>>(),
            "participants": participants,
        })
    }

    #[test]
    fn reviewers_merge_with_participants_and_their_states() {
        let pr = parse(pull_request(
            &["bob", "cat"],
            json!([
                {"user": account("bob"), "role": "REVIEWER", "approved": true, "state": "approved"},
                {"user": account("cat"), "role": "REVIEWER", "approved": false, "state": null},
                {"user": account("dan"), "role": "PARTICIPANT", "approved": false, "state": "changes_requested"},
                {"user": account("eve"), "role": "PARTICIPANT", "approved": false, "state": null},
                {"user": null, "role": "REVIEWER", "approved": true, "state": "approved"},
            ]),
        ));
        assert_eq!(pr.repository, "acme/web");
        assert_eq!(pr.head.as_deref(), Some("abc123def456"));
        let states: Vec<(&str, bool, ReviewState)> = pr
            .reviews
            .iter()
            .map(|r| (r.who.display_name.as_str(), r.requested, r.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("bob", true, ReviewState::Approved),
                ("cat", true, ReviewState::Pending),
                ("dan", false, ReviewState::ChangesRequested),
            ],
            "a commenter who did neither is no review; a deleted account is skipped"
        );
        assert!(pr.waits_for_review(), "cat has not approved");
        assert!(pr.waits_for("{cat}"));
        assert!(!pr.waits_for("{bob}"), "approved already");
        assert!(!pr.waits_for("{dan}"), "not asked");
        assert!(!pr.waits_for("{ann}"), "the author's own");
        assert_eq!(
            pr.approved_by()
                .map(|a| a.display_name.as_str())
                .collect::<Vec<_>>(),
            vec!["bob"]
        );
        assert_eq!(
            pr.pending_reviewers()
                .map(|a| a.display_name.as_str())
                .collect::<Vec<_>>(),
            vec!["cat"]
        );
    }

    #[test]
    fn what_waits_for_review() {
        let all_approved = parse(pull_request(
            &["bob"],
            json!([{"user": account("bob"), "role": "REVIEWER", "approved": true, "state": "approved"}]),
        ));
        assert!(!all_approved.waits_for_review());
        let nobody_asked = parse(pull_request(&[], json!([])));
        assert!(
            nobody_asked.waits_for_review(),
            "nobody asked, nobody approved"
        );
        let approved_unasked = parse(pull_request(
            &[],
            json!([{"user": account("eve"), "role": "PARTICIPANT", "approved": true, "state": "approved"}]),
        ));
        assert!(!approved_unasked.waits_for_review());
        let changes = parse(pull_request(
            &["bob"],
            json!([{"user": account("bob"), "role": "REVIEWER", "approved": false, "state": "changes_requested"}]),
        ));
        assert!(changes.waits_for_review(), "not approved by everyone asked");
        assert!(!changes.waits_for("{bob}"), "now it waits for the author");
        let mut draft = pull_request(&["bob"], json!([]));
        draft["draft"] = json!(true);
        let draft = parse(draft);
        assert!(!draft.waits_for_review() && !draft.waits_for("{bob}"));
    }

    #[test]
    fn states_other_than_open_and_draft_are_not_open() {
        for (state, open, draft) in [
            ("OPEN", true, false),
            ("DRAFT", true, true),
            ("QUEUED", false, false),
            ("MERGED", false, false),
            ("DECLINED", false, false),
            ("SUPERSEDED", false, false),
        ] {
            let mut value = pull_request(&[], json!([]));
            value["state"] = json!(state);
            let parsed = serde_json::from_value::<WirePullRequest>(value)
                .expect("parses")
                .into_open("acme/web");
            assert_eq!(parsed.is_some(), open, "{state}");
            assert_eq!(parsed.is_some_and(|pr| pr.draft), draft, "{state}");
        }
    }

    #[test]
    fn age_is_never_negative() {
        let pr = parse(pull_request(&[], json!([])));
        let created: Timestamp = "2026-11-01T09:00:00Z".parse().expect("time");
        assert_eq!(
            pr.age(created + SignedDuration::from_hours(5)),
            SignedDuration::from_hours(5)
        );
        assert_eq!(
            pr.age(created - SignedDuration::from_hours(1)),
            SignedDuration::ZERO
        );
    }

    #[test]
    fn a_failure_wins_then_a_running_build_then_a_stopped_one() {
        assert_eq!(BuildState::overall([]), None);
        assert_eq!(
            BuildState::overall(["SUCCESSFUL", "SUCCESSFUL"]),
            Some(BuildState::Passed)
        );
        assert_eq!(
            BuildState::overall(["SUCCESSFUL", "STOPPED"]),
            Some(BuildState::Stopped)
        );
        assert_eq!(
            BuildState::overall(["STOPPED", "INPROGRESS", "SUCCESSFUL"]),
            Some(BuildState::Running)
        );
        assert_eq!(
            BuildState::overall(["INPROGRESS", "FAILED"]),
            Some(BuildState::Failed)
        );
    }
}
