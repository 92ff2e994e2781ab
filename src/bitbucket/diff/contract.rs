//! Contract table test: the Bitbucket answers in `tests/fixtures/bitbucket/` (written from
//! Bitbucket Cloud's published API description, one file per endpoint the client reads,
//! every enum value it lists for pull-request state, pipeline state, stage and result, and
//! issue state, kind and priority) are parsed by the models and run through the diff; each
//! row names the activities it must give, so every state has a deliberate behaviour.
//!
//! Test-only; the fixtures are compiled in from the repository (`include_str!`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;
use crate::bitbucket::model::{
    Commit, CommitStatus, Deployment, DeploymentEnvironment, Issue, IssueComment, Page, Pipeline,
    PullRequestDetail, PullRequestSummary, RepositoryInfo, Tag,
};

const REPO: &str = "acme/api";

/// The fixtures, compiled in (a pure module reads no files).
macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        fn fixture_text(name: &str) -> &'static str {
            match name {
                $($name => include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/bitbucket/",
                    $name
                )),)*
                other => panic!("no fixture {other}"),
            }
        }
    };
}

fixtures!(
    "repository.json",
    "workspace-repositories.json",
    "pullrequests.json",
    "pullrequest.json",
    "pullrequests-activity.json",
    "refs-branches.json",
    "commits.json",
    "pipelines.json",
    "issues.json",
    "issue-comments.json",
    "issue-comments-edits-only.json",
    "commit-statuses.json",
    "refs-tags.json",
    "deployments.json",
    "environments.json",
);

fn fixture_value(name: &str) -> Value {
    serde_json::from_str(fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(fixture_value(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn page<T: DeserializeOwned>(name: &str) -> Vec<T> {
    fixture::<Page<T>>(name).values
}

/// The fixtures' clock: minute `m` after 10:00 on 2026-11-30, as they write it.
fn t(minute: i64) -> Timestamp {
    let text = format!(
        "2026-11-30T{:02}:{:02}:00.123456+00:00",
        10 + minute.div_euclid(60),
        minute.rem_euclid(60)
    );
    text.parse().expect("fixture time")
}

fn ids(activities: &[Activity]) -> Vec<String> {
    activities
        .iter()
        .map(|a| a.id.trim_start_matches("acme/api:").to_string())
        .collect()
}

fn actors(activities: &[Activity]) -> Vec<Option<String>> {
    activities
        .iter()
        .map(|a| a.actor.as_ref().map(|a| a.display_name.clone()))
        .collect()
}

/// The baseline from the repository, the pull-request list (every state) and the branches.
fn baselined() -> RepoCursor {
    let info: RepositoryInfo = fixture("repository.json");
    let pull_requests: Vec<PullRequestSummary> = page("pullrequests.json");
    let branches: Vec<Branch> = page("refs-branches.json");
    baseline(&info, &pull_requests, &[], &branches, t(0))
}

#[test]
fn the_baseline_tracks_open_draft_and_queued_pull_requests() {
    let cursor = baselined();
    assert!(cursor.has_issues);
    let open: Vec<u64> = cursor.pull_requests.keys().copied().collect();
    assert_eq!(open, vec![11, 12, 15], "OPEN, DRAFT and QUEUED are open");
    assert!(cursor.pull_requests[&12].draft);
    assert_eq!(cursor.max_pull_request_id, 16);
    assert_eq!(
        cursor.pull_requests[&11].head.as_deref(),
        Some("1e1e1e1e1e1e"),
        "pull requests carry short hashes"
    );
    assert_eq!(
        cursor.reviewer_checks.keys().copied().collect::<Vec<_>>(),
        vec![11, 12, 15]
    );
    assert_eq!(cursor.branches.len(), 2);
}

#[test]
fn every_feed_entry_and_pull_request_state_gives_its_activity() {
    let mut cursor = baselined();
    let entries: Vec<FeedEntry> = page("pullrequests-activity.json");
    let found = feed(&mut cursor, REPO, &entries);
    let rows: Vec<(String, Option<&str>)> = vec![
        // OPEN with the same (short) head: a title edit, not news.
        // OPEN with a new head: new commits.
        ("pr:11:updated:8f8f8f8f8f8f".into(), Some("Ada Lovelace")),
        (
            format!("pr:11:approved:{{b2}}:{}", t(38)),
            Some("Bob Builder"),
        ),
        // The request-changes entry, by a team account (no nickname).
        (
            format!("pr:11:changes_requested:{{t3}}:{}", t(39)),
            Some("Acme Release Team"),
        ),
        // DRAFT, new: opened as a draft.
        ("pr:17:draft_created".into(), Some("Ada Lovelace")),
        // OPEN after DRAFT: ready for review.
        (format!("pr:12:ready:{}", t(41)), Some("Ada Lovelace")),
        // QUEUED (never seen open): tracked quietly.
        // MERGED: who merged is the update's author (a team account here).
        ("pr:19:merged".into(), Some("Acme Release Team")),
        (format!("pr:20:declined:{}", t(44)), Some("Bob Builder")),
        // SUPERSEDED: forgotten quietly.
        // A comment by a deleted account (`user: null`), inline.
        ("pr:11:comment:899".into(), None),
        // A pending (draft) comment and a deleted one: nothing.
    ];
    let expected_ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let expected_actors: Vec<Option<String>> =
        rows.iter().map(|(_, who)| who.map(String::from)).collect();
    assert_eq!(ids(&found), expected_ids);
    assert_eq!(actors(&found), expected_actors);
    assert!(cursor.pull_requests.contains_key(&18), "QUEUED stays open");
    assert!(
        !cursor.pull_requests.contains_key(&21),
        "SUPERSEDED is closed"
    );
    let Some(ActivityKind::PullRequestCommented { comment, .. }) = found.last().map(|a| &a.kind)
    else {
        panic!("a comment");
    };
    assert_eq!(comment.inline_path.as_deref(), Some("src/retry.rs"));
    assert_eq!(comment.inline_line, Some(211));
    // Read again: nothing twice.
    assert!(feed(&mut cursor, REPO, &entries).is_empty());
}

#[test]
fn the_detail_gives_reviewers_and_keeps_approvals() {
    let mut cursor = baselined();
    feed(
        &mut cursor,
        REPO,
        &page::<FeedEntry>("pullrequests-activity.json"),
    );
    let detail: PullRequestDetail = fixture("pullrequest.json");
    // PR 11 was known at the baseline: its first read only records (a team reviewer and
    // a deleted one included); the approval by Bob still stands.
    assert!(reviewers(&mut cursor, REPO, &detail).is_empty());
    let known = cursor.pull_requests[&11].reviewers.clone().expect("read");
    assert_eq!(known.into_iter().collect::<Vec<_>>(), vec!["{b2}", "{t3}"]);
    assert!(approvals(&mut cursor, REPO, &detail, t(60)).is_empty());
    // PR 17 was opened (as a draft) after the baseline: each reviewer is asked.
    let mut value = fixture_value("pullrequest.json");
    value["id"] = 17.into();
    value["state"] = "DRAFT".into();
    let detail: PullRequestDetail = serde_json::from_value(value).expect("detail");
    assert_eq!(
        ids(&reviewers(&mut cursor, REPO, &detail)),
        vec![
            format!("pr:17:review_requested:{{b2}}:{}", t(40)),
            format!("pr:17:review_requested:{{t3}}:{}", t(40)),
        ]
    );
}

#[test]
fn every_pipeline_state_stage_and_result_gives_its_activity() {
    let mut cursor = baselined();
    cursor.pipelines.since = Some(t(19));
    let pipelines_page: Vec<Pipeline> = page("pipelines.json");
    let found = pipelines(&mut cursor, REPO, &pipelines_page, t(31));
    assert_eq!(
        ids(&found),
        vec![
            "pipeline:{p1}:succeeded", // SUCCESSFUL on main
            "pipeline:{p2}:succeeded", // SUCCESSFUL on a bare commit (custom): no branch
            "pipeline:{p3}:succeeded", // SUCCESSFUL on a tag: no branch
            "pipeline:{p4}:failed",    // FAILED, a pull-request target
            "pipeline:{p5}:failed",    // ERROR
            "pipeline:{p6}:stopped",   // STOPPED
            "pipeline:{p7}:failed",    // EXPIRED
            // IN_PROGRESS/HALTED (p8), IN_PROGRESS/PAUSED (p9): waiting for a person.
            "pipeline:{p10}:started", // IN_PROGRESS/RUNNING
                                      // PENDING (p11): not yet.
        ]
    );
    let branch_of = |i: usize| match &found[i].kind {
        ActivityKind::PipelineSucceeded { pipeline }
        | ActivityKind::PipelineFailed { pipeline }
        | ActivityKind::PipelineStopped { pipeline }
        | ActivityKind::PipelineStarted { pipeline } => {
            (pipeline.branch.clone(), pipeline.pull_request)
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(branch_of(1), (None, None));
    assert_eq!(branch_of(2), (None, None));
    assert_eq!(branch_of(3), (Some("retries".into()), Some(11)));
    assert!(
        cursor.pipelines_running(),
        "running and pending keep it hot"
    );
}

#[test]
fn every_issue_state_kind_and_priority_reads_and_edits_are_updates() {
    let mut cursor = baselined();
    let issues_page: Vec<Issue> = page("issues.json");
    let changes = issues(&mut cursor, REPO, &issues_page);
    assert_eq!(
        ids(&changes.activities),
        vec![
            "issue:8:created",
            "issue:6:created",
            "issue:4:created",
            "issue:2:created"
        ]
    );
    let changed: Vec<u64> = changes.changed.iter().map(|i| i.id).collect();
    assert_eq!(changed, vec![9, 7, 5, 3, 1]);
    let states: Vec<String> = issues_page
        .iter()
        .map(|i| i.state.clone().unwrap_or_default())
        .collect();
    assert_eq!(states.len(), 9, "every issue state of the description");
    let one = changes.changed.iter().find(|i| i.id == 1).expect("issue 1");
    let comments: Vec<IssueComment> = page("issue-comments.json");
    assert_eq!(
        ids(&issue_comments(REPO, one, &comments, changes.since)),
        vec!["issue:1:comment:70"],
        "the edit record beside a real comment is not a second comment"
    );
    let edits: Vec<IssueComment> = page("issue-comments-edits-only.json");
    let found = issue_comments(REPO, one, &edits, changes.since);
    assert_eq!(ids(&found), vec![format!("issue:1:updated:{}", t(21))]);
    assert_eq!(actors(&found), vec![Some("Bob Builder".to_string())]);
}

#[test]
fn branches_commits_and_the_sweep_read_their_answers() {
    let mut cursor = baselined();
    let old = "c3".repeat(20);
    cursor.branches.insert("main".into(), old.clone());
    cursor.branches.remove("release/1.0");
    let branch_page: Vec<Branch> = page("refs-branches.json");
    let changes = branches(&mut cursor, REPO, &branch_page, true, t(51));
    assert_eq!(
        ids(&changes.activities),
        vec![format!("branch:release/1.0:created:{}", "b2".repeat(20))]
    );
    assert_eq!(changes.moved.len(), 1);
    let commits: Vec<Commit> = page("commits.json");
    let push_activity = push(REPO, &changes.moved[0], &commits, true, t(51));
    let ActivityKind::Push {
        commits: listed,
        truncated,
        ..
    } = &push_activity.kind
    else {
        panic!("a push");
    };
    assert_eq!(listed.len(), 2);
    assert!(truncated);
    assert_eq!(listed[0].summary, "Merge fix");
    let repositories: Vec<RepositoryInfo> = page("workspace-repositories.json");
    let mut sweep_cursor = SweepCursor::default();
    assert!(sweep(&mut sweep_cursor, &repositories).is_empty());
    assert_eq!(sweep_cursor.newest, Some(t(30)));
    assert_eq!(
        sweep_cursor.seen.len(),
        2,
        "a repository without updated_on is skipped"
    );
}

#[test]
fn every_commit_status_state_gives_its_build_activity() {
    let mut cursor = baselined();
    let head = "a1".repeat(20);
    watch_pushed_head(&mut cursor, "main", &head, t(59));
    let statuses: Vec<CommitStatus> = page("commit-statuses.json");
    let found = builds(&mut cursor, REPO, &head, &statuses, t(65));
    let mut kinds: Vec<(String, &'static str)> = found
        .iter()
        .map(|a| match &a.kind {
            ActivityKind::BuildStarted { build }
            | ActivityKind::BuildSucceeded { build }
            | ActivityKind::BuildFailed { build }
            | ActivityKind::BuildStopped { build }
            | ActivityKind::BuildFixed { build } => (build.key.clone(), a.kind.name()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("gha-e2e".to_string(), "build_stopped"),      // STOPPED
            ("jenkins-lint".to_string(), "build_started"), // INPROGRESS
            ("jenkins-unit".to_string(), "build_failed"),  // FAILED
            ("sonar".to_string(), "build_succeeded"),      // SUCCESSFUL
                                                           // Bitbucket Pipelines' own status: the pipeline lane reports it.
        ]
    );
    assert!(builds(&mut cursor, REPO, &head, &statuses, t(66)).is_empty());
}

#[test]
fn tags_are_created_and_deleted() {
    let mut cursor = baselined();
    let old: BTreeMap<String, String> = [
        ("v1.0".to_string(), "b2".repeat(20)),
        ("v0.9".to_string(), "c3".repeat(20)),
    ]
    .into_iter()
    .collect();
    cursor.tags = Some(old);
    let tag_page: Vec<Tag> = page("refs-tags.json");
    let found = tags(&mut cursor, REPO, &tag_page, true, t(71));
    assert_eq!(
        ids(&found),
        vec![
            format!("tag:v1.1:created:{}", "a1".repeat(20)),
            format!("tag:v0.9:deleted:{}", "c3".repeat(20)),
        ]
    );
    assert_eq!(
        actors(&found)[0].as_deref(),
        Some("Ada Lovelace"),
        "the tagger"
    );
}

#[test]
fn every_deployment_state_and_status_gives_its_activity() {
    let mut cursor = baselined();
    let environments: Vec<DeploymentEnvironment> = page("environments.json");
    cursor.deployments.name_environments(&environments);
    cursor.deployments.since = Some(t(70));
    let deployment_page: Vec<Deployment> = page("deployments.json");
    let found = deployments(&mut cursor, REPO, &deployment_page, t(81));
    assert_eq!(
        ids(&found),
        vec![
            // UNDEPLOYED ({dp1}): nothing ran yet.
            "deployment:{dp2}:succeeded", // COMPLETED/SUCCESSFUL, by a deleted account
            "deployment:{dp3}:failed",    // COMPLETED/FAILED
            "deployment:{dp4}:stopped",   // COMPLETED/STOPPED
            "deployment:{dp5}:started",   // IN_PROGRESS, by an app user
        ]
    );
    let environment_names: Vec<String> = found
        .iter()
        .map(|a| match &a.kind {
            ActivityKind::DeploymentStarted { deployment }
            | ActivityKind::DeploymentSucceeded { deployment }
            | ActivityKind::DeploymentFailed { deployment }
            | ActivityKind::DeploymentStopped { deployment } => deployment.environment.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        environment_names,
        vec!["Test", "Staging", "Staging", "Production"]
    );
    assert_eq!(
        actors(&found),
        vec![
            None,
            Some("Ada Lovelace".to_string()),
            Some("Ada Lovelace".to_string()),
            Some("Deploy Bot".to_string())
        ]
    );
}
