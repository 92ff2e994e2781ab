//! [`Activity`]: one thing that happened in a watched repository, as the rest of the
//! daemon sees it (the outbox stores it, notifications render it).
//!
//! Owns the activity kinds and their deterministic ids: the same change seen twice (a
//! re-read page, a poll redone after a crash) gets the same id, so the outbox keeps it
//! once. Must never hold Bitbucket's JSON shapes (those stay in `model.rs`) or anything
//! secret; it is plain data, serialized as JSON in the store. Also [`PollWants`]: which
//! optional kinds (tags, builds, deployments) a repository's subscribers want polled.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// At most this many commits are listed for one push.
pub const MAX_COMMITS: usize = 10;

/// Comment and description excerpts are cut to this many characters.
pub const MAX_EXCERPT: usize = 300;

/// Something that happened in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Deterministic: `{workspace}/{repo}:{what}`, for example
    /// `acme/api:pr:7:approved:{uuid}:2026-01-02T03:04:05Z`.
    pub id: String,
    /// The repository's full name, `workspace/slug`.
    pub repository: String,
    /// When it happened, by Bitbucket's clock.
    pub occurred_at: Timestamp,
    /// Who did it, when Bitbucket says.
    pub actor: Option<Actor>,
    /// Where a person can see it.
    pub link: Option<String>,
    pub kind: ActivityKind,
}

/// A Bitbucket user as shown to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub display_name: String,
    /// Bitbucket's `{uuid}`, the stable key for linking Slack users.
    pub uuid: Option<String>,
}

/// The pull request an activity is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestRef {
    pub id: u64,
    pub title: String,
    pub link: Option<String>,
    pub author: Option<Actor>,
    pub source_branch: Option<String>,
    pub destination_branch: Option<String>,
    /// The uuids of its reviewers, when the daemon has read them (for personal
    /// notifications; empty in activities stored before it was recorded).
    #[serde(default)]
    pub reviewers: Vec<String>,
}

/// A comment, cut to [`MAX_EXCERPT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentRef {
    pub id: u64,
    pub excerpt: String,
    pub link: Option<String>,
    /// The file an inline comment is on.
    pub inline_path: Option<String>,
    pub inline_line: Option<u64>,
    /// The author of the comment this one replies to, when it is a reply and the daemon
    /// saw that comment.
    #[serde(default)]
    pub parent_author: Option<Actor>,
    /// Who the full text mentions, as written: `{uuid}`, an account id, or a nickname
    /// (without the `@`), each once.
    #[serde(default)]
    pub mentions: Vec<String>,
}

/// One commit of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRef {
    pub hash: String,
    /// The first line of the message.
    pub summary: String,
    /// The author as git recorded it (`Name <email>`), or the Bitbucket user's name.
    pub author: String,
    pub link: Option<String>,
}

/// A pipeline run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRef {
    pub uuid: String,
    pub build_number: u64,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// Seconds from creation to completion, once completed.
    pub duration_secs: Option<u64>,
    /// The pull request a pull-request pipeline ran for.
    #[serde(default)]
    pub pull_request: Option<u64>,
    /// The completed result as Bitbucket names it (`FAILED`, `ERROR`, `EXPIRED`, ...).
    #[serde(default)]
    pub result: Option<String>,
    /// The author of that pull request, when the daemon knows it.
    #[serde(default)]
    pub pull_request_author: Option<Actor>,
}

/// An issue of the repository's issue tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRef {
    pub id: u64,
    pub title: String,
    pub state: String,
    pub kind: Option<String>,
    pub priority: Option<String>,
    pub link: Option<String>,
}

/// A build status that a CI system (Jenkins, a GitHub Actions mirror, ...) reported on a
/// commit through Bitbucket's commit statuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    /// The status's key, unique per CI system and build plan.
    pub key: String,
    /// The build's own name, e.g. `Jenkins #12`.
    pub name: Option<String>,
    pub commit: String,
    /// The branch the commit was the head of (a pull request's source branch).
    pub branch: Option<String>,
    /// The CI system's page for the build.
    pub url: Option<String>,
    /// The pull request whose head the commit is, for a pull request's build.
    pub pull_request: Option<PullRequestRef>,
}

/// A deployment to an environment (Bitbucket Deployments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRef {
    pub uuid: String,
    /// The environment's name (`Production`), or its uuid when no name was found.
    pub environment: String,
    /// The release deployed (named after the pipeline that built it).
    pub release: Option<String>,
    pub commit: Option<String>,
    /// The deployment's page.
    pub url: Option<String>,
    /// Seconds from start to completion, once completed.
    pub duration_secs: Option<u64>,
}

/// What happened. The variants are exactly the kinds the daemon notifies about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ActivityKind {
    PullRequestCreated {
        pull_request: PullRequestRef,
    },
    /// Opened as a draft: not yet asking for review.
    PullRequestDraftCreated {
        pull_request: PullRequestRef,
    },
    /// A draft marked ready for review.
    PullRequestReadyForReview {
        pull_request: PullRequestRef,
    },
    /// `reviewer` was asked to review (the actor is who added them, when known).
    PullRequestReviewRequested {
        pull_request: PullRequestRef,
        reviewer: Actor,
    },
    /// New commits on the source branch; `previous_head` is unknown for a pull request
    /// last seen before the daemon watched the repository.
    PullRequestUpdated {
        pull_request: PullRequestRef,
        previous_head: Option<String>,
        head: String,
    },
    PullRequestApproved {
        pull_request: PullRequestRef,
    },
    PullRequestUnapproved {
        pull_request: PullRequestRef,
    },
    PullRequestChangesRequested {
        pull_request: PullRequestRef,
    },
    PullRequestCommented {
        pull_request: PullRequestRef,
        comment: CommentRef,
    },
    PullRequestMerged {
        pull_request: PullRequestRef,
    },
    PullRequestDeclined {
        pull_request: PullRequestRef,
        reason: Option<String>,
    },
    /// New commits on a branch, newest first, at most [`MAX_COMMITS`].
    Push {
        branch: String,
        previous_head: String,
        head: String,
        commits: Vec<CommitRef>,
        /// More commits were pushed than listed.
        truncated: bool,
    },
    BranchCreated {
        branch: String,
        head: String,
    },
    BranchDeleted {
        branch: String,
        previous_head: String,
    },
    PipelineStarted {
        pipeline: PipelineRef,
    },
    PipelineSucceeded {
        pipeline: PipelineRef,
    },
    PipelineFailed {
        pipeline: PipelineRef,
    },
    PipelineStopped {
        pipeline: PipelineRef,
    },
    /// A success on a branch whose previous pipeline failed.
    PipelineFixed {
        pipeline: PipelineRef,
    },
    IssueCreated {
        issue: IssueRef,
    },
    IssueUpdated {
        issue: IssueRef,
    },
    IssueCommented {
        issue: IssueRef,
        comment: CommentRef,
    },
    TagCreated {
        tag: String,
        commit: String,
    },
    TagDeleted {
        tag: String,
        previous_commit: String,
    },
    BuildStarted {
        build: BuildRef,
    },
    BuildSucceeded {
        build: BuildRef,
    },
    BuildFailed {
        build: BuildRef,
    },
    BuildStopped {
        build: BuildRef,
    },
    /// A success after a failure of the same build key on the same branch.
    BuildFixed {
        build: BuildRef,
    },
    DeploymentStarted {
        deployment: DeploymentRef,
    },
    DeploymentSucceeded {
        deployment: DeploymentRef,
    },
    DeploymentFailed {
        deployment: DeploymentRef,
    },
    DeploymentStopped {
        deployment: DeploymentRef,
    },
}

impl ActivityKind {
    /// A short stable name, the serde tag: `pull_request_approved`, `push`, ...
    pub fn name(&self) -> &'static str {
        match self {
            ActivityKind::PullRequestCreated { .. } => "pull_request_created",
            ActivityKind::PullRequestDraftCreated { .. } => "pull_request_draft_created",
            ActivityKind::PullRequestReadyForReview { .. } => "pull_request_ready_for_review",
            ActivityKind::PullRequestReviewRequested { .. } => "pull_request_review_requested",
            ActivityKind::PullRequestUpdated { .. } => "pull_request_updated",
            ActivityKind::PullRequestApproved { .. } => "pull_request_approved",
            ActivityKind::PullRequestUnapproved { .. } => "pull_request_unapproved",
            ActivityKind::PullRequestChangesRequested { .. } => "pull_request_changes_requested",
            ActivityKind::PullRequestCommented { .. } => "pull_request_commented",
            ActivityKind::PullRequestMerged { .. } => "pull_request_merged",
            ActivityKind::PullRequestDeclined { .. } => "pull_request_declined",
            ActivityKind::Push { .. } => "push",
            ActivityKind::BranchCreated { .. } => "branch_created",
            ActivityKind::BranchDeleted { .. } => "branch_deleted",
            ActivityKind::PipelineStarted { .. } => "pipeline_started",
            ActivityKind::PipelineSucceeded { .. } => "pipeline_succeeded",
            ActivityKind::PipelineFailed { .. } => "pipeline_failed",
            ActivityKind::PipelineStopped { .. } => "pipeline_stopped",
            ActivityKind::PipelineFixed { .. } => "pipeline_fixed",
            ActivityKind::IssueCreated { .. } => "issue_created",
            ActivityKind::IssueUpdated { .. } => "issue_updated",
            ActivityKind::IssueCommented { .. } => "issue_commented",
            ActivityKind::TagCreated { .. } => "tag_created",
            ActivityKind::TagDeleted { .. } => "tag_deleted",
            ActivityKind::BuildStarted { .. } => "build_started",
            ActivityKind::BuildSucceeded { .. } => "build_succeeded",
            ActivityKind::BuildFailed { .. } => "build_failed",
            ActivityKind::BuildStopped { .. } => "build_stopped",
            ActivityKind::BuildFixed { .. } => "build_fixed",
            ActivityKind::DeploymentStarted { .. } => "deployment_started",
            ActivityKind::DeploymentSucceeded { .. } => "deployment_succeeded",
            ActivityKind::DeploymentFailed { .. } => "deployment_failed",
            ActivityKind::DeploymentStopped { .. } => "deployment_stopped",
        }
    }
}

/// Cuts `text` to [`MAX_EXCERPT`] characters (on a character boundary), adding `…`.
pub fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_EXCERPT) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// What the subscriptions covering one repository want polled beyond what every watched
/// repository gets: the poller asks its store for these before each poll, so a repository
/// nobody wants tags, builds or deployments of costs no request for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollWants {
    /// Tags created and deleted (read with the branch heads).
    pub tags: bool,
    /// Commit statuses of which heads; `None`: none.
    pub builds: Option<BuildHeads>,
    /// Deployments (read with the pipelines).
    pub deployments: bool,
}

/// Which commits' statuses are watched. Pull request heads always are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildHeads {
    /// The heads pushed to these (main) branches.
    MainBranches(BTreeSet<String>),
    /// The heads pushed to any branch.
    AllBranches,
}

impl PollWants {
    /// Both wants together (two subscriptions of the same repository).
    pub fn merge(&mut self, other: PollWants) {
        self.tags |= other.tags;
        self.deployments |= other.deployments;
        self.builds = match (self.builds.take(), other.builds) {
            (None, other) => other,
            (mine, None) => mine,
            (Some(BuildHeads::AllBranches), _) | (_, Some(BuildHeads::AllBranches)) => {
                Some(BuildHeads::AllBranches)
            }
            (Some(BuildHeads::MainBranches(mut mine)), Some(BuildHeads::MainBranches(other))) => {
                mine.extend(other);
                Some(BuildHeads::MainBranches(mine))
            }
        };
    }

    /// Whether a head pushed to `branch` has its statuses watched.
    pub fn builds_of_branch(&self, branch: &str) -> bool {
        match &self.builds {
            None => false,
            Some(BuildHeads::AllBranches) => true,
            Some(BuildHeads::MainBranches(main)) => main.contains(branch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("  short  "), "short");
        let long = "é".repeat(MAX_EXCERPT + 5);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_EXCERPT + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn wants_merge_to_the_widest() {
        let main = |names: &[&str]| PollWants {
            builds: Some(BuildHeads::MainBranches(
                names.iter().map(|n| n.to_string()).collect(),
            )),
            ..PollWants::default()
        };
        let mut wants = PollWants::default();
        assert!(!wants.builds_of_branch("main"));
        wants.merge(main(&["main"]));
        wants.merge(main(&["master"]));
        assert!(wants.builds_of_branch("master") && !wants.builds_of_branch("dev"));
        wants.merge(PollWants {
            tags: true,
            builds: Some(BuildHeads::AllBranches),
            deployments: false,
        });
        assert!(wants.tags && !wants.deployments && wants.builds_of_branch("dev"));
        wants.merge(main(&["main"]));
        assert_eq!(wants.builds, Some(BuildHeads::AllBranches));
    }

    #[test]
    fn activities_round_trip_as_tagged_json() {
        let activity = Activity {
            id: "acme/api:branch:main:created:abc".into(),
            repository: "acme/api".into(),
            occurred_at: Timestamp::from_second(1_700_000_000).expect("valid"),
            actor: None,
            link: None,
            kind: ActivityKind::BranchCreated {
                branch: "main".into(),
                head: "abc".into(),
            },
        };
        let json = serde_json::to_value(&activity).expect("serializes");
        assert_eq!(json["kind"]["type"], "branch_created");
        let back: Activity = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, activity);
        assert_eq!(back.kind.name(), "branch_created");
    }
}
