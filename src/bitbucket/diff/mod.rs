//! Pure: a repository's previous [`RepoCursor`] plus what one poll read gives the new
//! cursor and the [`Activity`] values to append, with deterministic ids.
//!
//! Owns the cursors (everything remembered about a repository or a workspace between
//! polls), the baseline of a repository's first poll, and the helpers every lane shares;
//! each lane's rule of "what counts as new" lives in its own file: `pull_requests.rs`
//! (the activity feed and approvals), `branches.rs` (branch heads and pushes),
//! `pipelines.rs`, `issues.rs` (and issue comments), `sweep.rs` (the workspace sweep),
//! and the lanes only some subscribers want: `tags.rs`, `builds.rs` (other CI systems'
//! commit statuses), `deployments.rs`.
//! Callers use the re-exports here (`diff::feed`, `diff::branches`, ...).
//!
//! Must never do I/O, read the clock (`now` is passed in) or spawn, nor import tokio; it
//! fails only by skipping an entry it cannot place (a missing date).

mod branches;
mod builds;
#[cfg(test)]
mod contract;
mod deployments;
mod issues;
mod pipelines;
mod pull_requests;
mod sweep;
mod tags;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::activity::{Activity, ActivityKind, Actor};
use super::model::{Branch, FeedEntry, PullRequestState, PullRequestSummary, RepositoryInfo, User};
use branches::branch_heads;
use pull_requests::{entry_date, feed_silently, tracked_from_summary};

pub use branches::{branches, push};
pub use builds::{
    BuildCursor, builds, forget_builds, retire_builds, watch_pull_request_heads, watch_pushed_head,
};
pub use deployments::{DeploymentCursor, deployments, forget_deployments};
pub use issues::{issue_comments, issues};
pub use pipelines::pipelines;
pub use pull_requests::{approvals, feed, feed_page_is_enough, reviewers};
pub use sweep::{SweepCursor, sweep, sweep_since};
pub use tags::tags;

/// Everything remembered about one repository between polls. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoCursor {
    pub feed: FeedCursor,
    /// Open pull requests we know of, by id.
    pub pull_requests: BTreeMap<u64, TrackedPullRequest>,
    /// Pull request ids up to this one existed before the baseline (or were seen).
    pub max_pull_request_id: u64,
    /// Approvals we saw, by pull request then user uuid: the approval's date.
    pub approvals: BTreeMap<u64, BTreeMap<String, TrackedApproval>>,
    /// Branch name to head commit hash.
    pub branches: BTreeMap<String, String>,
    pub pipelines: PipelineCursor,
    pub issues: IssueCursor,
    pub has_issues: bool,
    /// Tag name to commit, once a subscriber wanted tags (`None` before: the first read
    /// is history).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// The heads whose commit statuses are watched, while a subscriber wants builds.
    #[serde(default)]
    pub builds: BuildCursor,
    /// The deployments seen, while a subscriber wants deployments.
    #[serde(default)]
    pub deployments: DeploymentCursor,
    /// Open pull requests whose reviewers must be read from their detail (the feed does
    /// not list who was added), by id. Read a few per poll by the poller.
    #[serde(default)]
    pub reviewer_checks: BTreeMap<u64, ReviewerCheck>,
    /// Who wrote the newest pull-request comments seen, by comment id (at most
    /// [`pull_requests::KNOWN_COMMENT_AUTHORS`]), so a reply can name whom it answers.
    #[serde(default)]
    pub comment_authors: BTreeMap<u64, Actor>,
}

/// Why a pull request's reviewers are to be read, and what to say about new ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewerCheck {
    /// The update that may have added reviewers.
    pub date: Timestamp,
    /// Who made that update (who added the reviewers).
    pub by: Option<Actor>,
    /// Every reviewer found is news (the pull request was just opened); otherwise only
    /// those not known before, and nothing when none were known (first read).
    pub announce_all: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCursor {
    /// The newest entry date processed.
    pub watermark: Option<Timestamp>,
    /// Keys of entries processed within [`pull_requests::FEED_LOOKBACK`] of the watermark,
    /// with dates.
    pub recent: BTreeMap<String, Timestamp>,
    /// The oldest entry the baseline read: anything older is history, even inside the
    /// look-back (the baseline read only the first page).
    #[serde(default)]
    pub floor: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedPullRequest {
    pub title: Option<String>,
    pub head: Option<String>,
    pub author: Option<Actor>,
    pub source_branch: Option<String>,
    pub destination_branch: Option<String>,
    /// A draft: not yet ready for review.
    #[serde(default)]
    pub draft: bool,
    /// Reviewer uuids, once read; `None` until the first read.
    #[serde(default)]
    pub reviewers: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedApproval {
    pub date: Timestamp,
    pub display_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCursor {
    /// Pipelines created before this are history, recorded without an activity.
    pub since: Option<Timestamp>,
    /// The newest pipelines seen, by uuid.
    pub known: BTreeMap<String, KnownPipeline>,
    /// The last completed result per branch, for "fixed".
    pub last_result: BTreeMap<String, String>,
    /// Whether the repository ever had a pipeline.
    pub seen_any: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipelinePhase {
    Pending,
    Running,
    /// IN_PROGRESS at a PAUSED or HALTED stage: waiting for a person.
    Halted,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPipeline {
    pub created_on: Timestamp,
    pub phase: PipelinePhase,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueCursor {
    /// Issues updated after this are news.
    pub since: Option<Timestamp>,
}

impl RepoCursor {
    /// Whether a pipeline is pending or running: the repository stays hot. A halted one
    /// waits for a person and does not.
    pub fn pipelines_running(&self) -> bool {
        self.pipelines
            .known
            .values()
            .any(|known| matches!(known.phase, PipelinePhase::Pending | PipelinePhase::Running))
    }

    /// Whether any pull request is known to be open.
    pub fn has_open_pull_requests(&self) -> bool {
        !self.pull_requests.is_empty()
    }

    /// Pull requests whose approvals we watch for an unapprove.
    pub fn approved_pull_requests(&self) -> Vec<u64> {
        self.approvals.keys().copied().collect()
    }
}

/// The first poll of a repository: remember the present, emit nothing. `now` starts the
/// pipeline and issue watermarks, so a pipeline started after the baseline is news.
pub fn baseline(
    info: &RepositoryInfo,
    pull_requests: &[PullRequestSummary],
    feed_entries: &[FeedEntry],
    branches: &[Branch],
    now: Timestamp,
) -> RepoCursor {
    let mut cursor = RepoCursor {
        has_issues: info.has_issues.unwrap_or(false),
        ..RepoCursor::default()
    };
    // The feed first, then the pull request list: the list holds today's heads.
    feed_silently(&mut cursor, feed_entries);
    cursor.feed.floor = feed_entries.iter().filter_map(entry_date).min();
    // The feed's entries asked for nothing to be said; what they queued is re-queued
    // below, silently, for the pull requests still open.
    cursor.reviewer_checks.clear();
    for summary in pull_requests {
        cursor.max_pull_request_id = cursor.max_pull_request_id.max(summary.id);
        let open = PullRequestState::names_open(summary.state.as_deref());
        if open {
            cursor
                .pull_requests
                .insert(summary.id, tracked_from_summary(summary));
            // Learn today's reviewers quietly, a few per poll, so a reviewer added
            // later is news.
            cursor.reviewer_checks.insert(
                summary.id,
                ReviewerCheck {
                    date: now,
                    by: None,
                    announce_all: false,
                },
            );
        } else {
            cursor.pull_requests.remove(&summary.id);
            cursor.approvals.remove(&summary.id);
        }
    }
    cursor.branches = branch_heads(branches);
    cursor.pipelines.since = Some(now);
    cursor.issues.since = Some(now);
    cursor
}

/// Who a Bitbucket user is in an activity; a user without a name is "someone".
fn actor(user: &Option<User>) -> Option<Actor> {
    let user = user.as_ref()?;
    Some(Actor {
        display_name: user
            .display_name
            .clone()
            .unwrap_or_else(|| "someone".into()),
        uuid: user.uuid.clone(),
    })
}

/// One activity of `repo`, the value every lane emits.
fn activity(
    id: String,
    repo: &str,
    occurred_at: Timestamp,
    actor: Option<Actor>,
    link: Option<String>,
    kind: ActivityKind,
) -> Activity {
    Activity {
        id,
        repository: repo.to_string(),
        occurred_at,
        actor,
        link,
        kind,
    }
}

/// What the lanes' tests share: times, a repository name and a baselined cursor.
#[cfg(test)]
mod test_support {
    use serde_json::{Value, json};

    use super::*;

    pub(super) const REPO: &str = "acme/api";

    pub(super) fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_770_000_000 + minute * 60).expect("valid")
    }

    pub(super) fn time(minute: i64) -> String {
        at(minute).to_string()
    }

    pub(super) fn entries(values: Value) -> Vec<FeedEntry> {
        serde_json::from_value(values).expect("feed entries")
    }

    pub(super) fn pr(id: u64) -> Value {
        json!({"id": id, "title": format!("PR {id}"), "links": {"html": {"href": format!("https://bb/pr/{id}")}}})
    }

    pub(super) fn update(id: u64, state: &str, head: &str, minute: i64) -> Value {
        json!({"pull_request": pr(id), "update": {
            "state": state, "date": time(minute), "author": {"display_name": "Ada", "uuid": "{ada}"},
            "source": {"branch": {"name": "feature"}, "commit": {"hash": head}},
            "destination": {"branch": {"name": "main"}}, "reason": "no"}})
    }

    pub(super) fn approval(id: u64, who: &str, minute: i64) -> Value {
        json!({"pull_request": pr(id), "approval": {"date": time(minute), "user": {"display_name": who, "uuid": format!("{{{who}}}")}}})
    }

    pub(super) fn comment(id: u64, comment_id: u64, minute: i64, pending: bool) -> Value {
        json!({"pull_request": pr(id), "comment": {"id": comment_id, "content": {"raw": "hi"},
            "created_on": time(minute), "pending": pending, "deleted": false,
            "user": {"display_name": "Bob", "uuid": "{bob}"}}})
    }

    pub(super) fn kinds(activities: &[Activity]) -> Vec<String> {
        activities
            .iter()
            .map(|a| a.id.trim_start_matches("acme/api:").to_string())
            .collect()
    }

    pub(super) fn info() -> RepositoryInfo {
        serde_json::from_value(json!({"full_name": REPO, "has_issues": true})).expect("info")
    }

    pub(super) fn summaries(values: Value) -> Vec<PullRequestSummary> {
        serde_json::from_value(values).expect("summaries")
    }

    /// A cursor whose baseline saw PR 3 (open, head h1) and PR 5 as the newest id.
    pub(super) fn baselined() -> RepoCursor {
        let feed = entries(json!([update(3, "OPEN", "h1", 0)]));
        let prs = summaries(json!([
            {"id": 5, "state": "MERGED"},
            {"id": 3, "state": "OPEN", "source": {"commit": {"hash": "h1"}}, "author": {"display_name": "Ada"}}
        ]));
        baseline(&info(), &prs, &feed, &[], at(1))
    }
}
