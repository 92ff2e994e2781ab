//! Bitbucket Cloud's JSON, as serde types: only the fields the poller reads.
//!
//! Owns the wire shapes of Bitbucket Cloud's 2.0 REST API (paginated collections and the
//! pull request, activity, commit, pipeline, issue, commit status, tag, deployment and
//! environment objects). Every field that Bitbucket may omit is optional, and a date that
//! does not parse becomes `None` rather than failing the whole page. These types must
//! never leave `src/bitbucket/`: `diff/` turns them into [`super::activity::Activity`]
//! values and cursors.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer};

/// One page of a paginated collection. `next` is an opaque URL; its absence ends the list.
#[derive(Debug, Clone, Deserialize)]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub values: Vec<T>,
    pub next: Option<String>,
}

/// Reads a Bitbucket date: RFC 3339 with an offset, or (as some payloads have it) without
/// one, which is UTC. Anything else is `None`.
fn lenient_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    Ok(text.and_then(|text| parse_time(&text)))
}

pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse::<Timestamp>().ok().or_else(|| {
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|civil| civil.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|zoned| zoned.timestamp())
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct User {
    pub display_name: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Href {
    pub href: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Links {
    pub html: Option<Href>,
}

impl Links {
    pub fn html(links: &Option<Links>) -> Option<String> {
        links
            .as_ref()
            .and_then(|links| links.html.as_ref())
            .map(|href| href.href.clone())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hash {
    pub hash: Option<String>,
}

/// A pull request's `source` or `destination`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Endpoint {
    pub branch: Option<Named>,
    pub commit: Option<Hash>,
}

impl Endpoint {
    pub fn branch_name(endpoint: &Option<Endpoint>) -> Option<String> {
        endpoint.as_ref()?.branch.as_ref()?.name.clone()
    }

    pub fn commit_hash(endpoint: &Option<Endpoint>) -> Option<String> {
        endpoint.as_ref()?.commit.as_ref()?.hash.clone()
    }
}

/// `GET /repositories/{workspace}/{slug}`, and the items of the workspace sweep.
#[derive(Debug, Clone, Deserialize)]
pub struct RepositoryInfo {
    pub full_name: Option<String>,
    pub has_issues: Option<bool>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub updated_on: Option<Timestamp>,
}

/// An item of `…/pullrequests` (the collection: no participants).
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestSummary {
    pub id: u64,
    pub title: Option<String>,
    pub state: Option<String>,
    pub draft: Option<bool>,
    pub author: Option<User>,
    pub source: Option<Endpoint>,
    pub destination: Option<Endpoint>,
}

/// `GET …/pullrequests/{id}`: the only shape with reviewers and participants.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestDetail {
    pub id: u64,
    pub title: Option<String>,
    pub state: Option<String>,
    pub links: Option<Links>,
    /// `None` when the answer did not carry the list (not asked for).
    pub reviewers: Option<Vec<Option<User>>>,
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// A pull request's state, as the API description lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRequestState {
    Open,
    Draft,
    /// In the merge queue: still open.
    Queued,
    Merged,
    Declined,
    /// Closed because a newer pull request replaced it.
    Superseded,
}

impl PullRequestState {
    /// Reads a state; an absent state is OPEN (the feed's first entries), an unknown one is
    /// `None`.
    pub fn parse(state: Option<&str>) -> Option<Self> {
        Some(match state.unwrap_or("OPEN") {
            "OPEN" => Self::Open,
            "DRAFT" => Self::Draft,
            "QUEUED" => Self::Queued,
            "MERGED" => Self::Merged,
            "DECLINED" => Self::Declined,
            "SUPERSEDED" => Self::Superseded,
            _ => return None,
        })
    }

    /// Open, draft and queued pull requests can still change.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Open | Self::Draft | Self::Queued)
    }

    /// Whether a state as Bitbucket wrote it is an open one (absent: OPEN; unknown: not).
    pub fn names_open(state: Option<&str>) -> bool {
        Self::parse(state).is_some_and(Self::is_open)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Participant {
    pub user: Option<User>,
    /// `REVIEWER` or `PARTICIPANT`.
    pub role: Option<String>,
    #[serde(default)]
    pub approved: bool,
}

/// Whether two commit hashes name the same commit: Bitbucket serves 12-character short
/// hashes in pull requests and full ones on branches and commits.
pub fn same_commit(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// An entry of the repository-wide `…/pullrequests/activity` feed: exactly one of the
/// optional parts is set. The request-changes key is disputed, so both spellings are read
/// (and both are asked for: `fields=` drops every key not named).
#[derive(Debug, Clone, Deserialize)]
pub struct FeedEntry {
    pub pull_request: Option<FeedPullRequest>,
    pub update: Option<Update>,
    pub approval: Option<Approval>,
    pub comment: Option<PullRequestComment>,
    #[serde(alias = "changes_requested")]
    pub changes_request: Option<Approval>,
}

/// The condensed pull request of a feed entry.
#[derive(Debug, Clone, Deserialize)]
pub struct FeedPullRequest {
    pub id: u64,
    pub title: Option<String>,
    pub links: Option<Links>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub state: Option<String>,
    pub title: Option<String>,
    pub reason: Option<String>,
    pub source: Option<Endpoint>,
    pub destination: Option<Endpoint>,
    /// Who made this update: for a MERGED or DECLINED update, who merged or declined.
    pub author: Option<User>,
    /// Never present in feed entries (only on the pull request itself); read when it is.
    pub closed_by: Option<User>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub date: Option<Timestamp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Approval {
    #[serde(default, deserialize_with = "lenient_time")]
    pub date: Option<Timestamp>,
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Content {
    pub raw: Option<String>,
}

impl Content {
    /// The raw (markdown) text of optional content; empty when there is none.
    pub fn raw_text(content: Option<&Content>) -> &str {
        content.and_then(|c| c.raw.as_deref()).unwrap_or("")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Inline {
    pub path: Option<String>,
    pub to: Option<u64>,
    pub from: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestComment {
    pub id: u64,
    pub content: Option<Content>,
    pub user: Option<User>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_on: Option<Timestamp>,
    #[serde(default)]
    pub deleted: bool,
    /// The caller's own unpublished draft.
    #[serde(default)]
    pub pending: bool,
    pub inline: Option<Inline>,
    pub links: Option<Links>,
    /// The comment this one replies to.
    #[serde(default)]
    pub parent: Option<CommentParent>,
}

/// A reply's `parent`: the comment it answers.
#[derive(Debug, Clone, Deserialize)]
pub struct CommentParent {
    pub id: Option<u64>,
}

/// An item of `…/refs/branches`.
#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub name: String,
    pub target: Option<Commit>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommitAuthor {
    pub raw: Option<String>,
    pub user: Option<User>,
}

/// An item of `…/commits/{revision}`, and a branch's target.
#[derive(Debug, Clone, Deserialize)]
pub struct Commit {
    pub hash: String,
    #[serde(default, deserialize_with = "lenient_time")]
    pub date: Option<Timestamp>,
    pub message: Option<String>,
    pub author: Option<CommitAuthor>,
    pub links: Option<Links>,
}

/// `state`: `name` PENDING, IN_PROGRESS (with a `stage`: RUNNING, PAUSED or HALTED) or
/// COMPLETED (with a `result`: SUCCESSFUL, FAILED, ERROR, STOPPED or EXPIRED).
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineState {
    pub name: Option<String>,
    pub stage: Option<Named>,
    pub result: Option<Named>,
}

/// `target`: a branch or tag (`ref_name`), a bare commit, or a pull request (`source`,
/// `destination` and `pullrequest`, no `ref_name`).
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineTarget {
    pub ref_name: Option<String>,
    pub ref_type: Option<String>,
    pub commit: Option<Hash>,
    pub source: Option<String>,
    pub pullrequest: Option<PipelinePullRequest>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PipelinePullRequest {
    pub id: Option<u64>,
}

impl PipelineTarget {
    /// The branch the pipeline ran for: the ref of a branch pipeline, the source branch of
    /// a pull-request pipeline; `None` for tags and bare commits.
    pub fn branch(&self) -> Option<String> {
        match self.ref_type.as_deref() {
            Some("tag") | Some("bookmark") => None,
            _ => self.ref_name.clone().or_else(|| self.source.clone()),
        }
    }
}

/// An item of `…/pipelines`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    pub uuid: String,
    #[serde(default)]
    pub build_number: u64,
    pub state: Option<PipelineState>,
    pub target: Option<PipelineTarget>,
    pub creator: Option<User>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_on: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub completed_on: Option<Timestamp>,
}

/// An item of `…/issues`.
#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub id: u64,
    pub title: Option<String>,
    pub state: Option<String>,
    pub kind: Option<String>,
    pub priority: Option<String>,
    pub reporter: Option<User>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_on: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub updated_on: Option<Timestamp>,
    pub links: Option<Links>,
}

/// An item of `…/issues/{id}/comments`.
#[derive(Debug, Clone, Deserialize)]
pub struct IssueComment {
    pub id: u64,
    pub content: Option<Content>,
    pub user: Option<User>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_on: Option<Timestamp>,
    pub links: Option<Links>,
}

/// The answer of the OAuth token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: Option<u64>,
}

/// An item of `…/commit/{hash}/statuses`: a build status another CI system (or Bitbucket
/// Pipelines itself) reported on a commit. `state` is FAILED, INPROGRESS, STOPPED or
/// SUCCESSFUL.
#[derive(Debug, Clone, Deserialize)]
pub struct CommitStatus {
    pub key: String,
    pub name: Option<String>,
    pub state: Option<String>,
    pub url: Option<String>,
    /// The ref that pointed at the commit when the status was created, if the CI said.
    pub refname: Option<String>,
    /// The commit, with its full hash (a pull request's head is known by a short one).
    pub commit: Option<Hash>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_on: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub updated_on: Option<Timestamp>,
}

/// An item of `…/refs/tags`.
#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub name: String,
    pub target: Option<Commit>,
    /// An annotated tag's own date and tagger.
    #[serde(default, deserialize_with = "lenient_time")]
    pub date: Option<Timestamp>,
    pub tagger: Option<CommitAuthor>,
    pub links: Option<Links>,
}

/// A deployment's environment: only its uuid unless `…/environments` is asked.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentEnvironment {
    pub uuid: String,
    pub name: Option<String>,
}

/// A deployment's `state`: `name` is UNDEPLOYED, IN_PROGRESS or COMPLETED; a completed one
/// has `status.name` SUCCESSFUL, FAILED or STOPPED.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentState {
    pub name: Option<String>,
    pub status: Option<Named>,
    pub url: Option<String>,
    pub deployer: Option<User>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub start_date: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub completion_date: Option<Timestamp>,
}

/// What a deployment deploys: a release named after the pipeline that built it.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentRelease {
    pub name: Option<String>,
    pub url: Option<String>,
    pub commit: Option<Hash>,
}

/// An item of `…/deployments`.
#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    pub uuid: String,
    pub state: Option<DeploymentState>,
    pub environment: Option<DeploymentEnvironment>,
    pub release: Option<DeploymentRelease>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_with_and_without_offset_parse() {
        let with = parse_time("2022-06-23T22:10:09.939978+00:00").expect("offset");
        let without = parse_time("2022-06-23T22:10:09.939978").expect("no offset");
        assert_eq!(with, without);
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn a_feed_page_with_every_entry_kind_decodes() {
        let page: Page<FeedEntry> = serde_json::from_value(serde_json::json!({
            "pagelen": 50,
            "next": "https://api.bitbucket.org/2.0/x?page=2",
            "values": [
                {"approval": {"date": "2026-01-01T10:00:00+00:00", "user": {"display_name": "A", "uuid": "{a}"}},
                 "pull_request": {"id": 1, "title": "T", "type": "pullrequest"}},
                {"changes_requested": {"date": "2026-01-01T10:00:00+00:00", "user": {"uuid": "{b}"}},
                 "pull_request": {"id": 1}},
                {"comment": {"id": 9, "content": {"raw": "hi"}, "created_on": "bad date",
                             "inline": {"path": "src/a.rs", "to": 3}},
                 "pull_request": {"id": 1}},
                {"update": {"state": "OPEN", "date": "2026-01-01T09:00:00.5+00:00",
                            "source": {"branch": {"name": "f"}, "commit": {"hash": "abc"}}},
                 "pull_request": {"id": 1}}
            ]
        }))
        .expect("decodes");
        assert_eq!(page.values.len(), 4);
        assert!(page.next.is_some());
        assert!(page.values[1].changes_request.is_some());
        assert!(
            page.values[2]
                .comment
                .as_ref()
                .expect("comment")
                .created_on
                .is_none()
        );
        let update = page.values[3].update.as_ref().expect("update");
        assert_eq!(
            Endpoint::commit_hash(&update.source).as_deref(),
            Some("abc")
        );
    }
}
