//! Snapshot tests of the Block Kit JSON each activity kind renders to (insta): a change to
//! a message's shape shows up as a reviewed diff of `tests/snapshots/`.

use bitbucket_slack::bitbucket::{
    Activity, ActivityKind, Actor, BuildRef, CommentRef, CommitRef, DeploymentRef, IssueRef,
    PipelineRef, PullRequestRef,
};
use bitbucket_slack::notify::render;
use bitbucket_slack::slack::convert::message_content;
use jiff::Timestamp;

fn actor(name: &str) -> Option<Actor> {
    Some(Actor {
        display_name: name.into(),
        uuid: Some(format!("{{{name}}}")),
    })
}

fn pull_request() -> PullRequestRef {
    PullRequestRef {
        id: 42,
        title: "Retry webhooks with <backoff> & jitter".into(),
        link: Some("https://bitbucket.org/acme/api/pull-requests/42".into()),
        author: actor("Ada Lovelace"),
        source_branch: Some("feature/retries".into()),
        destination_branch: Some("main".into()),
        reviewers: Vec::new(),
    }
}

fn pipeline(duration: Option<u64>) -> PipelineRef {
    PipelineRef {
        uuid: "{p-7}".into(),
        build_number: 7,
        branch: Some("main".into()),
        commit: Some("0123456789abcdef".into()),
        duration_secs: duration,
        pull_request: None,
        result: None,
        pull_request_author: None,
    }
}

fn issue() -> IssueRef {
    IssueRef {
        id: 9,
        title: "Login fails on Safari".into(),
        state: "open".into(),
        kind: Some("bug".into()),
        priority: Some("major".into()),
        link: Some("https://bitbucket.org/acme/api/issues/9".into()),
    }
}

fn comment() -> CommentRef {
    CommentRef {
        id: 5,
        excerpt: "Could we cap the retries at 5?\nOtherwise <!here> gets paged.".into(),
        link: Some("https://bitbucket.org/acme/api/pull-requests/42#comment-5".into()),
        inline_path: Some("src/retry.rs".into()),
        inline_line: Some(12),
        parent_author: None,
        mentions: Vec::new(),
    }
}

fn snapshot(name: &str, kind: ActivityKind) {
    let activity = Activity {
        id: format!("acme/api:{name}"),
        repository: "acme/api".into(),
        occurred_at: Timestamp::from_second(1_800_000_000).expect("valid"),
        actor: actor("Grace Hopper"),
        link: Some("https://bitbucket.org/acme/api".into()),
        kind,
    };
    // Grace is linked in Slack; Ada is not.
    let mention = |uuid: &str| (uuid == "{Grace Hopper}").then(|| "U0GRACE".to_string());
    let notification = render(&activity, &mention);
    let message = serde_json::to_value(message_content(&notification.message)).expect("JSON");
    let parent = notification
        .parent_update
        .map(|reply| serde_json::to_value(message_content(&reply)).expect("JSON"));
    insta::assert_json_snapshot!(
        name,
        serde_json::json!({
            "message": message,
            "thread_key": notification.thread_key,
            "parent_update": parent,
        })
    );
}

#[test]
fn pull_request_messages() {
    snapshot(
        "pull_request_created",
        ActivityKind::PullRequestCreated {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_updated",
        ActivityKind::PullRequestUpdated {
            pull_request: pull_request(),
            previous_head: Some("aaaaaaa".into()),
            head: "bbbbbbbcccc".into(),
        },
    );
    snapshot(
        "pull_request_approved",
        ActivityKind::PullRequestApproved {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_unapproved",
        ActivityKind::PullRequestUnapproved {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_changes_requested",
        ActivityKind::PullRequestChangesRequested {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_commented",
        ActivityKind::PullRequestCommented {
            pull_request: pull_request(),
            comment: comment(),
        },
    );
    snapshot(
        "pull_request_merged",
        ActivityKind::PullRequestMerged {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_declined",
        ActivityKind::PullRequestDeclined {
            pull_request: pull_request(),
            reason: Some("Superseded by #43".into()),
        },
    );
    snapshot(
        "pull_request_draft_created",
        ActivityKind::PullRequestDraftCreated {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_ready_for_review",
        ActivityKind::PullRequestReadyForReview {
            pull_request: pull_request(),
        },
    );
    snapshot(
        "pull_request_review_requested",
        ActivityKind::PullRequestReviewRequested {
            pull_request: pull_request(),
            reviewer: Actor {
                display_name: "Grace Hopper".into(),
                uuid: Some("{grace}".into()),
            },
        },
    );
}

#[test]
fn repository_messages() {
    let commits = (1..=3)
        .map(|n| CommitRef {
            hash: format!("{n}{n}{n}{n}{n}{n}{n}abcdef"),
            summary: format!("Change number {n}"),
            author: "Ada Lovelace <ada@example.com>".into(),
            link: Some(format!("https://bitbucket.org/acme/api/commits/{n}")),
        })
        .collect();
    snapshot(
        "push",
        ActivityKind::Push {
            branch: "main".into(),
            previous_head: "0000000".into(),
            head: "3333333".into(),
            commits,
            truncated: true,
        },
    );
    snapshot(
        "branch_created",
        ActivityKind::BranchCreated {
            branch: "release/2.0".into(),
            head: "abc".into(),
        },
    );
    snapshot(
        "branch_deleted",
        ActivityKind::BranchDeleted {
            branch: "feature/old".into(),
            previous_head: "abc".into(),
        },
    );
}

#[test]
fn pipeline_and_issue_messages() {
    snapshot(
        "pipeline_started",
        ActivityKind::PipelineStarted {
            pipeline: pipeline(None),
        },
    );
    snapshot(
        "pipeline_succeeded",
        ActivityKind::PipelineSucceeded {
            pipeline: pipeline(Some(42)),
        },
    );
    snapshot(
        "pipeline_failed",
        ActivityKind::PipelineFailed {
            pipeline: pipeline(Some(125)),
        },
    );
    snapshot(
        "pipeline_stopped",
        ActivityKind::PipelineStopped {
            pipeline: pipeline(Some(10)),
        },
    );
    snapshot(
        "pipeline_expired_for_a_pull_request",
        ActivityKind::PipelineFailed {
            pipeline: PipelineRef {
                pull_request: Some(42),
                result: Some("EXPIRED".into()),
                pull_request_author: None,
                ..pipeline(Some(3600))
            },
        },
    );
    snapshot(
        "pipeline_fixed",
        ActivityKind::PipelineFixed {
            pipeline: pipeline(Some(61)),
        },
    );
    snapshot(
        "issue_created",
        ActivityKind::IssueCreated { issue: issue() },
    );
    snapshot(
        "issue_updated",
        ActivityKind::IssueUpdated { issue: issue() },
    );
    snapshot(
        "issue_commented",
        ActivityKind::IssueCommented {
            issue: issue(),
            comment: comment(),
        },
    );
}

fn build(pull_request: Option<PullRequestRef>) -> BuildRef {
    BuildRef {
        key: "jenkins-api".into(),
        name: Some("Jenkins <api> #12".into()),
        commit: "0123456789abcdef".into(),
        branch: Some(
            if pull_request.is_some() {
                "feature/retries"
            } else {
                "main"
            }
            .into(),
        ),
        url: Some("https://ci.example.com/job/api/12".into()),
        pull_request,
    }
}

fn deployment(duration: Option<u64>) -> DeploymentRef {
    DeploymentRef {
        uuid: "{d-3}".into(),
        environment: "Production".into(),
        release: Some("#7".into()),
        commit: Some("0123456789abcdef".into()),
        url: Some("https://bitbucket.org/acme/api/addon/pipelines/home#!/results/7".into()),
        duration_secs: duration,
    }
}

#[test]
fn tag_build_and_deployment_messages() {
    snapshot(
        "tag_created",
        ActivityKind::TagCreated {
            tag: "v2.0.0".into(),
            commit: "0123456789abcdef".into(),
        },
    );
    snapshot(
        "tag_deleted",
        ActivityKind::TagDeleted {
            tag: "v2.0.0-rc1".into(),
            previous_commit: "0123456789abcdef".into(),
        },
    );
    snapshot(
        "build_started",
        ActivityKind::BuildStarted { build: build(None) },
    );
    snapshot(
        "build_succeeded",
        ActivityKind::BuildSucceeded { build: build(None) },
    );
    snapshot(
        "build_failed",
        ActivityKind::BuildFailed { build: build(None) },
    );
    snapshot(
        "build_failed_on_a_pull_request",
        ActivityKind::BuildFailed {
            build: build(Some(pull_request())),
        },
    );
    snapshot(
        "build_stopped",
        ActivityKind::BuildStopped { build: build(None) },
    );
    snapshot(
        "build_fixed",
        ActivityKind::BuildFixed { build: build(None) },
    );
    snapshot(
        "deployment_started",
        ActivityKind::DeploymentStarted {
            deployment: deployment(None),
        },
    );
    snapshot(
        "deployment_succeeded",
        ActivityKind::DeploymentSucceeded {
            deployment: deployment(Some(95)),
        },
    );
    snapshot(
        "deployment_failed",
        ActivityKind::DeploymentFailed {
            deployment: deployment(Some(30)),
        },
    );
    snapshot(
        "deployment_stopped",
        ActivityKind::DeploymentStopped {
            deployment: deployment(Some(5)),
        },
    );
}
