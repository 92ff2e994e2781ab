//! Pure: a repository's previous [`RepoCursor`] plus what one poll read gives the new
//! cursor and the [`Activity`] values to append, with deterministic ids.
//!
//! Owns every rule of "what counts as new": the pull request feed's watermark and
//! look-back, branch-head diffs, pipeline transitions (and "fixed"), issue watermarks,
//! approvals that disappeared. Must never do I/O, read the clock (`now` is passed in) or
//! spawn; it fails only by skipping an entry it cannot place (a missing date).

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::activity::{
    Activity, ActivityKind, Actor, CommentRef, CommitRef, IssueRef, MAX_COMMITS, PipelineRef,
    PullRequestRef, excerpt,
};
use super::model::{
    Branch, Commit, Endpoint, FeedEntry, Issue, IssueComment, Links, Pipeline, PullRequestDetail,
    PullRequestSummary, RepositoryInfo, User,
};

/// Feed entries this much older than the watermark are read again (and deduplicated by
/// key), because an entry can show up late: a draft comment published after newer ones.
pub const FEED_LOOKBACK: SignedDuration = SignedDuration::from_mins(10);

/// Pipelines remembered per repository (the newest ones).
const KNOWN_PIPELINES: usize = 50;

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCursor {
    /// The newest entry date processed.
    pub watermark: Option<Timestamp>,
    /// Keys of entries processed within [`FEED_LOOKBACK`] of the watermark, with dates.
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
    /// Whether a pipeline is pending or running: the repository stays hot.
    pub fn pipelines_running(&self) -> bool {
        self.pipelines
            .known
            .values()
            .any(|known| known.phase != PipelinePhase::Completed)
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
    for summary in pull_requests {
        cursor.max_pull_request_id = cursor.max_pull_request_id.max(summary.id);
        if summary.state.as_deref() == Some("OPEN") {
            cursor
                .pull_requests
                .insert(summary.id, tracked_from_summary(summary));
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

fn tracked_from_summary(summary: &PullRequestSummary) -> TrackedPullRequest {
    TrackedPullRequest {
        title: summary.title.clone(),
        head: Endpoint::commit_hash(&summary.source),
        author: actor(&summary.author),
        source_branch: Endpoint::branch_name(&summary.source),
        destination_branch: Endpoint::branch_name(&summary.destination),
    }
}

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

// ---------------------------------------------------------------------------
// The pull request activity feed
// ---------------------------------------------------------------------------

/// The oldest entry date still worth reading; older pages need not be fetched.
pub fn feed_cutoff(cursor: &RepoCursor) -> Option<Timestamp> {
    cursor
        .feed
        .watermark
        .and_then(|watermark| watermark.checked_sub(FEED_LOOKBACK).ok())
}

/// Whether scrolling past this page (newest first) would only find what was processed:
/// it reaches below the look-back or the baseline's floor, or every entry on it was
/// processed already.
pub fn feed_page_is_enough(cursor: &RepoCursor, page: &[FeedEntry]) -> bool {
    let feed = &cursor.feed;
    let cutoff = feed_cutoff(cursor);
    let below = page.iter().filter_map(entry_date).any(|date| {
        cutoff.is_some_and(|cutoff| date < cutoff) || feed.floor.is_some_and(|floor| date <= floor)
    });
    let all_seen = !page.is_empty()
        && page
            .iter()
            .all(|entry| entry_key(entry).is_some_and(|key| feed.recent.contains_key(&key)));
    below || all_seen
}

/// New entries of the feed (as received, newest first) become activities.
pub fn feed(cursor: &mut RepoCursor, repo: &str, entries: &[FeedEntry]) -> Vec<Activity> {
    let mut activities = Vec::new();
    for entry in fresh_entries(cursor, entries) {
        activities.extend(apply_entry(cursor, repo, entry));
    }
    prune_recent(cursor);
    activities
}

/// Applies entries to the cursor without emitting anything (the baseline).
fn feed_silently(cursor: &mut RepoCursor, entries: &[FeedEntry]) {
    for entry in fresh_entries(cursor, entries) {
        apply_entry(cursor, "", entry);
    }
    prune_recent(cursor);
}

/// Entries not processed before, oldest first; records their keys and the watermark.
fn fresh_entries<'a>(cursor: &mut RepoCursor, entries: &'a [FeedEntry]) -> Vec<&'a FeedEntry> {
    let cutoff = feed_cutoff(cursor);
    let mut fresh: Vec<(Timestamp, &FeedEntry, String)> = entries
        .iter()
        .filter_map(|entry| Some((entry_date(entry)?, entry, entry_key(entry)?)))
        .filter(|(date, _, _)| cutoff.is_none_or(|cutoff| *date >= cutoff))
        .filter(|(date, _, _)| cursor.feed.floor.is_none_or(|floor| *date > floor))
        .filter(|(_, _, key)| !cursor.feed.recent.contains_key(key))
        .collect();
    fresh.sort_by_key(|(date, _, _)| *date);
    fresh.dedup_by(|a, b| a.2 == b.2);
    for (date, entry, key) in &fresh {
        if !is_pending_comment(entry) {
            cursor.feed.recent.insert(key.clone(), *date);
        }
        cursor.feed.watermark = Some(cursor.feed.watermark.map_or(*date, |w| w.max(*date)));
    }
    fresh
        .into_iter()
        .filter(|(_, entry, _)| !is_pending_comment(entry))
        .map(|(_, entry, _)| entry)
        .collect()
}

fn is_pending_comment(entry: &FeedEntry) -> bool {
    entry
        .comment
        .as_ref()
        .is_some_and(|comment| comment.pending)
}

fn prune_recent(cursor: &mut RepoCursor) {
    if let Some(cutoff) = feed_cutoff(cursor) {
        cursor.feed.recent.retain(|_, date| *date >= cutoff);
    }
}

fn entry_date(entry: &FeedEntry) -> Option<Timestamp> {
    if let Some(update) = &entry.update {
        return update.date;
    }
    if let Some(approval) = &entry.approval {
        return approval.date;
    }
    if let Some(changes) = &entry.changes_request {
        return changes.date;
    }
    entry
        .comment
        .as_ref()
        .and_then(|comment| comment.created_on)
}

/// What identifies an entry across re-reads of the feed (it has no id of its own).
fn entry_key(entry: &FeedEntry) -> Option<String> {
    let pr = entry.pull_request.as_ref()?.id;
    let uuid = |user: &Option<User>| {
        user.as_ref()
            .and_then(|user| user.uuid.clone())
            .unwrap_or_default()
    };
    if let Some(update) = &entry.update {
        return Some(format!(
            "u:{pr}:{}:{}:{}",
            update.date?,
            update.state.as_deref().unwrap_or(""),
            Endpoint::commit_hash(&update.source).unwrap_or_default()
        ));
    }
    if let Some(approval) = &entry.approval {
        return Some(format!(
            "a:{pr}:{}:{}",
            uuid(&approval.user),
            approval.date?
        ));
    }
    if let Some(changes) = &entry.changes_request {
        return Some(format!("c:{pr}:{}:{}", uuid(&changes.user), changes.date?));
    }
    let comment = entry.comment.as_ref()?;
    Some(format!("m:{pr}:{}", comment.id))
}

fn pull_request_ref(cursor: &RepoCursor, entry: &FeedEntry) -> Option<PullRequestRef> {
    let condensed = entry.pull_request.as_ref()?;
    let tracked = cursor.pull_requests.get(&condensed.id);
    Some(PullRequestRef {
        id: condensed.id,
        title: condensed
            .title
            .clone()
            .or_else(|| tracked.and_then(|t| t.title.clone()))
            .unwrap_or_default(),
        link: Links::html(&condensed.links),
        author: tracked.and_then(|t| t.author.clone()),
        source_branch: tracked.and_then(|t| t.source_branch.clone()),
        destination_branch: tracked.and_then(|t| t.destination_branch.clone()),
    })
}

fn apply_entry(cursor: &mut RepoCursor, repo: &str, entry: &FeedEntry) -> Option<Activity> {
    if entry.update.is_some() {
        return apply_update(cursor, repo, entry);
    }
    let pull_request = pull_request_ref(cursor, entry)?;
    let pr = pull_request.id;
    if let Some(approval) = &entry.approval {
        let date = approval.date?;
        let who = actor(&approval.user);
        let uuid = who
            .as_ref()
            .and_then(|a| a.uuid.clone())
            .unwrap_or_default();
        cursor.approvals.entry(pr).or_default().insert(
            uuid.clone(),
            TrackedApproval {
                date,
                display_name: who
                    .as_ref()
                    .map(|a| a.display_name.clone())
                    .unwrap_or_default(),
            },
        );
        let id = format!("{repo}:pr:{pr}:approved:{uuid}:{date}");
        let link = pull_request.link.clone();
        let kind = ActivityKind::PullRequestApproved { pull_request };
        return Some(activity(id, repo, date, who, link, kind));
    }
    if let Some(changes) = &entry.changes_request {
        let date = changes.date?;
        let who = actor(&changes.user);
        let uuid = who
            .as_ref()
            .and_then(|a| a.uuid.clone())
            .unwrap_or_default();
        let id = format!("{repo}:pr:{pr}:changes_requested:{uuid}:{date}");
        let link = pull_request.link.clone();
        let kind = ActivityKind::PullRequestChangesRequested { pull_request };
        return Some(activity(id, repo, date, who, link, kind));
    }
    let comment = entry.comment.as_ref()?;
    if comment.deleted {
        return None;
    }
    let date = comment.created_on?;
    let inline = comment.inline.as_ref();
    let comment_ref = CommentRef {
        id: comment.id,
        excerpt: excerpt(
            comment
                .content
                .as_ref()
                .and_then(|c| c.raw.as_deref())
                .unwrap_or(""),
        ),
        link: Links::html(&comment.links),
        inline_path: inline.and_then(|i| i.path.clone()),
        inline_line: inline.and_then(|i| i.to.or(i.from)),
    };
    let id = format!("{repo}:pr:{pr}:comment:{}", comment.id);
    let link = comment_ref.link.clone().or(pull_request.link.clone());
    let kind = ActivityKind::PullRequestCommented {
        pull_request,
        comment: comment_ref,
    };
    Some(activity(id, repo, date, actor(&comment.user), link, kind))
}

fn apply_update(cursor: &mut RepoCursor, repo: &str, entry: &FeedEntry) -> Option<Activity> {
    let update = entry.update.as_ref()?;
    let pr = entry.pull_request.as_ref()?.id;
    let date = update.date?;
    let head = Endpoint::commit_hash(&update.source);
    let previous = cursor.pull_requests.get(&pr).cloned();
    let state = update.state.as_deref().unwrap_or("OPEN");
    if state == "OPEN" {
        let tracked = TrackedPullRequest {
            title: update
                .title
                .clone()
                .or_else(|| entry.pull_request.as_ref().and_then(|p| p.title.clone())),
            head: head.clone(),
            author: actor(&update.author),
            source_branch: Endpoint::branch_name(&update.source),
            destination_branch: Endpoint::branch_name(&update.destination),
        };
        cursor.pull_requests.insert(pr, tracked);
    }
    let pull_request = pull_request_ref(cursor, entry)?;
    let link = pull_request.link.clone();
    let author = actor(&update.author);
    let (suffix, kind, who) = match (state, previous) {
        ("OPEN", None) if pr > cursor.max_pull_request_id => {
            cursor.max_pull_request_id = pr;
            (
                "created".to_string(),
                ActivityKind::PullRequestCreated { pull_request },
                author,
            )
        }
        ("OPEN", Some(previous)) if head.is_some() && previous.head != head => {
            let head = head.unwrap_or_default();
            (
                format!("updated:{head}"),
                ActivityKind::PullRequestUpdated {
                    pull_request,
                    previous_head: previous.head,
                    head,
                },
                author,
            )
        }
        ("MERGED", _) => {
            forget_pull_request(cursor, pr);
            (
                "merged".to_string(),
                ActivityKind::PullRequestMerged { pull_request },
                actor(&update.closed_by),
            )
        }
        ("DECLINED", _) => {
            forget_pull_request(cursor, pr);
            let reason = update.reason.clone().filter(|r| !r.trim().is_empty());
            (
                format!("declined:{date}"),
                ActivityKind::PullRequestDeclined {
                    pull_request,
                    reason,
                },
                actor(&update.closed_by),
            )
        }
        ("OPEN", _) => return None,
        _ => {
            forget_pull_request(cursor, pr);
            return None;
        }
    };
    let id = format!("{repo}:pr:{pr}:{suffix}");
    Some(activity(id, repo, date, who, link, kind))
}

fn forget_pull_request(cursor: &mut RepoCursor, pr: u64) {
    cursor.pull_requests.remove(&pr);
    cursor.approvals.remove(&pr);
    cursor.max_pull_request_id = cursor.max_pull_request_id.max(pr);
}

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

// ---------------------------------------------------------------------------
// Approvals that disappeared (the feed shows no "unapproved" entry)
// ---------------------------------------------------------------------------

/// Compares a pull request's participants with the approvals we saw: each approval that
/// is gone is an unapprove, detected at `now`.
pub fn approvals(
    cursor: &mut RepoCursor,
    repo: &str,
    detail: &PullRequestDetail,
    now: Timestamp,
) -> Vec<Activity> {
    let pr = detail.id;
    let Some(known) = cursor.approvals.remove(&pr) else {
        return Vec::new();
    };
    if detail.state.as_deref().is_some_and(|state| state != "OPEN") {
        return Vec::new();
    }
    let approved_now: BTreeSet<String> = detail
        .participants
        .iter()
        .filter(|p| p.approved)
        .filter_map(|p| p.user.as_ref().and_then(|u| u.uuid.clone()))
        .collect();
    let mut activities = Vec::new();
    let mut still = BTreeMap::new();
    for (uuid, approval) in known {
        if approved_now.contains(&uuid) {
            still.insert(uuid, approval);
            continue;
        }
        let tracked = cursor.pull_requests.get(&pr);
        let pull_request = PullRequestRef {
            id: pr,
            title: detail
                .title
                .clone()
                .or_else(|| tracked.and_then(|t| t.title.clone()))
                .unwrap_or_default(),
            link: Links::html(&detail.links),
            author: tracked.and_then(|t| t.author.clone()),
            source_branch: tracked.and_then(|t| t.source_branch.clone()),
            destination_branch: tracked.and_then(|t| t.destination_branch.clone()),
        };
        let id = format!("{repo}:pr:{pr}:unapproved:{uuid}:{}", approval.date);
        let who = Actor {
            display_name: approval.display_name.clone(),
            uuid: Some(uuid),
        };
        let link = pull_request.link.clone();
        let kind = ActivityKind::PullRequestUnapproved { pull_request };
        activities.push(activity(id, repo, now, Some(who), link, kind));
    }
    if !still.is_empty() {
        cursor.approvals.insert(pr, still);
    }
    activities
}

// ---------------------------------------------------------------------------
// Branch heads
// ---------------------------------------------------------------------------

fn branch_heads(branches: &[Branch]) -> BTreeMap<String, String> {
    branches
        .iter()
        .filter_map(|b| Some((b.name.clone(), b.target.as_ref()?.hash.clone())))
        .collect()
}

/// A branch whose head moved: the poller lists the commits between the two heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedBranch {
    pub name: String,
    pub previous_head: String,
    pub head: String,
}

/// Branches created and deleted (as activities) and branches moved (to be listed).
#[derive(Debug, Default)]
pub struct BranchChanges {
    pub activities: Vec<Activity>,
    pub moved: Vec<MovedBranch>,
}

/// Diffs the branch list against the cursor and records the new heads. `complete` says
/// whether `branches` is the whole list; only then does a missing branch count as deleted.
pub fn branches(
    cursor: &mut RepoCursor,
    repo: &str,
    branches: &[Branch],
    complete: bool,
    now: Timestamp,
) -> BranchChanges {
    let mut changes = BranchChanges::default();
    for branch in branches {
        let Some(target) = &branch.target else {
            continue;
        };
        let name = &branch.name;
        match cursor.branches.get(name) {
            Some(previous) if *previous == target.hash => {}
            Some(previous) => changes.moved.push(MovedBranch {
                name: name.clone(),
                previous_head: previous.clone(),
                head: target.hash.clone(),
            }),
            None => changes.activities.push(activity(
                format!("{repo}:branch:{name}:created:{}", target.hash),
                repo,
                target.date.unwrap_or(now),
                commit_actor(target),
                Links::html(&target.links),
                ActivityKind::BranchCreated {
                    branch: name.clone(),
                    head: target.hash.clone(),
                },
            )),
        }
    }
    let present = branch_heads(branches);
    if complete {
        for (name, previous) in &cursor.branches {
            if !present.contains_key(name) {
                changes.activities.push(activity(
                    format!("{repo}:branch:{name}:deleted:{previous}"),
                    repo,
                    now,
                    None,
                    None,
                    ActivityKind::BranchDeleted {
                        branch: name.clone(),
                        previous_head: previous.clone(),
                    },
                ));
            }
        }
        cursor.branches = present;
    } else {
        cursor.branches.extend(present);
    }
    changes
}

fn commit_actor(commit: &Commit) -> Option<Actor> {
    let author = commit.author.as_ref()?;
    if let Some(found) = actor(&author.user) {
        return Some(found);
    }
    let raw = author.raw.as_deref()?;
    let name = raw.split('<').next().unwrap_or(raw).trim();
    Some(Actor {
        display_name: name.to_string(),
        uuid: None,
    })
}

fn commit_ref(commit: &Commit) -> CommitRef {
    CommitRef {
        hash: commit.hash.clone(),
        summary: commit
            .message
            .as_deref()
            .and_then(|m| m.lines().next())
            .unwrap_or("")
            .to_string(),
        author: commit_actor(commit)
            .map(|a| a.display_name)
            .unwrap_or_default(),
        link: Links::html(&commit.links),
    }
}

/// The push activity of a moved branch, from its commits (newest first, as listed by
/// `commits/{head}?exclude={previous}`); `more` says the listing had further pages.
pub fn push(
    repo: &str,
    moved: &MovedBranch,
    commits: &[Commit],
    more: bool,
    now: Timestamp,
) -> Activity {
    let listed: Vec<CommitRef> = commits.iter().take(MAX_COMMITS).map(commit_ref).collect();
    let newest = commits.first();
    activity(
        format!(
            "{repo}:push:{}:{}..{}",
            moved.name, moved.previous_head, moved.head
        ),
        repo,
        newest.and_then(|c| c.date).unwrap_or(now),
        newest.and_then(commit_actor),
        newest.and_then(|c| Links::html(&c.links)),
        ActivityKind::Push {
            branch: moved.name.clone(),
            previous_head: moved.previous_head.clone(),
            head: moved.head.clone(),
            commits: listed,
            truncated: more || commits.len() > MAX_COMMITS,
        },
    )
}

// ---------------------------------------------------------------------------
// Pipelines
// ---------------------------------------------------------------------------

fn phase(pipeline: &Pipeline) -> PipelinePhase {
    match pipeline.state.as_ref().and_then(|s| s.name.as_deref()) {
        Some("COMPLETED") => PipelinePhase::Completed,
        Some("IN_PROGRESS") | Some("RUNNING") => PipelinePhase::Running,
        _ => PipelinePhase::Pending,
    }
}

fn result_name(pipeline: &Pipeline) -> String {
    pipeline
        .state
        .as_ref()
        .and_then(|s| s.result.as_ref())
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| "UNKNOWN".into())
}

fn pipeline_ref(pipeline: &Pipeline) -> PipelineRef {
    let target = pipeline.target.as_ref();
    let duration_secs = match (pipeline.created_on, pipeline.completed_on) {
        (Some(start), Some(end)) => u64::try_from(end.duration_since(start).as_secs()).ok(),
        _ => None,
    };
    PipelineRef {
        uuid: pipeline.uuid.clone(),
        build_number: pipeline.build_number,
        branch: target.and_then(|t| t.ref_name.clone()),
        commit: target
            .and_then(|t| t.commit.as_ref())
            .and_then(|c| c.hash.clone()),
        duration_secs,
    }
}

/// The newest pipelines (as received, newest first): new ones and state changes become
/// activities. A pipeline created before the cursor's `since` is history.
pub fn pipelines(
    cursor: &mut RepoCursor,
    repo: &str,
    page: &[Pipeline],
    now: Timestamp,
) -> Vec<Activity> {
    let mut activities = Vec::new();
    let mut ordered: Vec<&Pipeline> = page.iter().collect();
    ordered.sort_by_key(|p| (p.created_on, p.build_number));
    for pipeline in ordered {
        activities.extend(apply_pipeline(cursor, repo, pipeline, now));
    }
    let state = &mut cursor.pipelines;
    while state.known.len() > KNOWN_PIPELINES {
        let oldest = state
            .known
            .iter()
            .filter(|(_, k)| k.phase == PipelinePhase::Completed)
            .min_by_key(|(_, k)| k.created_on)
            .map(|(uuid, _)| uuid.clone());
        // What is forgotten becomes history: `since` moves past it.
        let Some(forgotten) = oldest.and_then(|uuid| state.known.remove(&uuid)) else {
            break;
        };
        let after = forgotten
            .created_on
            .checked_add(SignedDuration::from_nanos(1))
            .unwrap_or(forgotten.created_on);
        state.since = Some(state.since.map_or(after, |since| since.max(after)));
    }
    activities
}

fn apply_pipeline(
    cursor: &mut RepoCursor,
    repo: &str,
    pipeline: &Pipeline,
    now: Timestamp,
) -> Vec<Activity> {
    let state = &mut cursor.pipelines;
    state.seen_any = true;
    let created_on = pipeline.created_on.unwrap_or(now);
    let phase = phase(pipeline);
    let previous = state.known.get(&pipeline.uuid).map(|k| k.phase);
    let is_history = previous.is_none() && state.since.is_some_and(|since| created_on < since);
    state
        .known
        .insert(pipeline.uuid.clone(), KnownPipeline { created_on, phase });
    let branch = pipeline.target.as_ref().and_then(|t| t.ref_name.clone());
    if is_history || previous == Some(PipelinePhase::Completed) {
        if is_history && phase == PipelinePhase::Completed {
            if let Some(branch) = branch {
                state.last_result.insert(branch, result_name(pipeline));
            }
        }
        return Vec::new();
    }
    let mut activities = Vec::new();
    let who = actor(&pipeline.creator);
    let started = previous == Some(PipelinePhase::Running);
    if phase == PipelinePhase::Running && !started {
        activities.push(activity(
            format!("{repo}:pipeline:{}:started", pipeline.uuid),
            repo,
            created_on,
            who.clone(),
            None,
            ActivityKind::PipelineStarted {
                pipeline: pipeline_ref(pipeline),
            },
        ));
    }
    if phase == PipelinePhase::Completed {
        let result = result_name(pipeline);
        let failed_before = branch
            .as_ref()
            .and_then(|b| state.last_result.get(b))
            .is_some_and(|r| r == "FAILED" || r == "ERROR");
        if let Some(branch) = branch {
            state.last_result.insert(branch, result.clone());
        }
        let reference = pipeline_ref(pipeline);
        let (suffix, kind) = match result.as_str() {
            "SUCCESSFUL" if failed_before => (
                "fixed",
                ActivityKind::PipelineFixed {
                    pipeline: reference,
                },
            ),
            "SUCCESSFUL" => (
                "succeeded",
                ActivityKind::PipelineSucceeded {
                    pipeline: reference,
                },
            ),
            "FAILED" | "ERROR" => (
                "failed",
                ActivityKind::PipelineFailed {
                    pipeline: reference,
                },
            ),
            _ => (
                "stopped",
                ActivityKind::PipelineStopped {
                    pipeline: reference,
                },
            ),
        };
        activities.push(activity(
            format!("{repo}:pipeline:{}:{suffix}", pipeline.uuid),
            repo,
            pipeline.completed_on.unwrap_or(now),
            who,
            None,
            kind,
        ));
    }
    activities
}

// ---------------------------------------------------------------------------
// Issues
// ---------------------------------------------------------------------------

fn issue_ref(issue: &Issue) -> IssueRef {
    IssueRef {
        id: issue.id,
        title: issue.title.clone().unwrap_or_default(),
        state: issue.state.clone().unwrap_or_default(),
        kind: issue.kind.clone(),
        priority: issue.priority.clone(),
        link: Links::html(&issue.links),
    }
}

/// What the issue list said: new issues (as activities) and older issues that changed,
/// whose comments the poller reads to tell a comment from another update.
#[derive(Debug, Default)]
pub struct IssueChanges {
    pub activities: Vec<Activity>,
    pub changed: Vec<Issue>,
    /// The watermark the changes were measured against.
    pub since: Option<Timestamp>,
}

/// Issues updated after the cursor's watermark (the list was asked for exactly those).
pub fn issues(cursor: &mut RepoCursor, repo: &str, page: &[Issue]) -> IssueChanges {
    let since = cursor.issues.since;
    let mut changes = IssueChanges {
        since,
        ..IssueChanges::default()
    };
    for issue in page {
        let Some(updated_on) = issue.updated_on else {
            continue;
        };
        if since.is_some_and(|since| updated_on <= since) {
            continue;
        }
        cursor.issues.since = Some(
            cursor
                .issues
                .since
                .map_or(updated_on, |s| s.max(updated_on)),
        );
        let is_new = issue
            .created_on
            .is_some_and(|created| since.is_none_or(|since| created > since));
        if is_new {
            changes.activities.push(activity(
                format!("{repo}:issue:{}:created", issue.id),
                repo,
                issue.created_on.unwrap_or(updated_on),
                actor(&issue.reporter),
                Links::html(&issue.links),
                ActivityKind::IssueCreated {
                    issue: issue_ref(issue),
                },
            ));
        } else {
            changes.changed.push(issue.clone());
        }
    }
    changes
}

/// A changed issue's newest comments: those after `since` are comment activities; with
/// none, the change was some other update.
pub fn issue_comments(
    repo: &str,
    issue: &Issue,
    comments: &[IssueComment],
    since: Option<Timestamp>,
) -> Vec<Activity> {
    let fresh: Vec<&IssueComment> = comments
        .iter()
        .filter(|c| {
            c.created_on
                .is_some_and(|created| since.is_none_or(|s| created > s))
        })
        .collect();
    if fresh.is_empty() {
        let updated_on = issue.updated_on.unwrap_or(Timestamp::UNIX_EPOCH);
        return vec![activity(
            format!("{repo}:issue:{}:updated:{updated_on}", issue.id),
            repo,
            updated_on,
            None,
            Links::html(&issue.links),
            ActivityKind::IssueUpdated {
                issue: issue_ref(issue),
            },
        )];
    }
    fresh
        .into_iter()
        .map(|comment| {
            let comment_ref = CommentRef {
                id: comment.id,
                excerpt: excerpt(
                    comment
                        .content
                        .as_ref()
                        .and_then(|c| c.raw.as_deref())
                        .unwrap_or(""),
                ),
                link: Links::html(&comment.links),
                inline_path: None,
                inline_line: None,
            };
            activity(
                format!("{repo}:issue:{}:comment:{}", issue.id, comment.id),
                repo,
                comment.created_on.unwrap_or(Timestamp::UNIX_EPOCH),
                actor(&comment.user),
                comment_ref
                    .link
                    .clone()
                    .or_else(|| Links::html(&issue.links)),
                ActivityKind::IssueCommented {
                    issue: issue_ref(issue),
                    comment: comment_ref,
                },
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The workspace sweep
// ---------------------------------------------------------------------------

/// What the sweeps of one workspace saw: each repository's last `updated_on`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepCursor {
    pub seen: BTreeMap<String, Timestamp>,
    /// The newest `updated_on` seen; `None` before the first sweep.
    pub newest: Option<Timestamp>,
}

/// How far back each sweep asks, so an `updated_on` written late is still seen.
pub const SWEEP_OVERLAP: SignedDuration = SignedDuration::from_mins(2);

/// The `updated_on` a sweep asks after.
pub fn sweep_since(cursor: &SweepCursor) -> Option<Timestamp> {
    cursor
        .newest
        .map(|newest| newest.checked_sub(SWEEP_OVERLAP).unwrap_or(newest))
}

/// Repositories (full names, lower case) whose `updated_on` moved since the last sweep.
/// The first sweep only records.
pub fn sweep(cursor: &mut SweepCursor, repos: &[RepositoryInfo]) -> Vec<String> {
    let first = cursor.newest.is_none();
    let mut changed = Vec::new();
    for repo in repos {
        let (Some(name), Some(updated_on)) = (&repo.full_name, repo.updated_on) else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        let previous = cursor.seen.insert(name.clone(), updated_on);
        if !first && previous != Some(updated_on) {
            changed.push(name);
        }
        cursor.newest = Some(cursor.newest.map_or(updated_on, |n| n.max(updated_on)));
    }
    if first && cursor.newest.is_none() {
        cursor.newest = Some(Timestamp::UNIX_EPOCH);
    }
    changed
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const REPO: &str = "acme/api";

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_770_000_000 + minute * 60).expect("valid")
    }

    fn time(minute: i64) -> String {
        at(minute).to_string()
    }

    fn entries(values: Value) -> Vec<FeedEntry> {
        serde_json::from_value(values).expect("feed entries")
    }

    fn pr(id: u64) -> Value {
        json!({"id": id, "title": format!("PR {id}"), "links": {"html": {"href": format!("https://bb/pr/{id}")}}})
    }

    fn update(id: u64, state: &str, head: &str, minute: i64) -> Value {
        json!({"pull_request": pr(id), "update": {
            "state": state, "date": time(minute), "author": {"display_name": "Ada", "uuid": "{ada}"},
            "source": {"branch": {"name": "feature"}, "commit": {"hash": head}},
            "destination": {"branch": {"name": "main"}}, "reason": "no"}})
    }

    fn approval(id: u64, who: &str, minute: i64) -> Value {
        json!({"pull_request": pr(id), "approval": {"date": time(minute), "user": {"display_name": who, "uuid": format!("{{{who}}}")}}})
    }

    fn comment(id: u64, comment_id: u64, minute: i64, pending: bool) -> Value {
        json!({"pull_request": pr(id), "comment": {"id": comment_id, "content": {"raw": "hi"},
            "created_on": time(minute), "pending": pending, "deleted": false,
            "user": {"display_name": "Bob", "uuid": "{bob}"}}})
    }

    fn kinds(activities: &[Activity]) -> Vec<String> {
        activities
            .iter()
            .map(|a| a.id.trim_start_matches("acme/api:").to_string())
            .collect()
    }

    fn info() -> RepositoryInfo {
        serde_json::from_value(json!({"full_name": REPO, "has_issues": true})).expect("info")
    }

    fn summaries(values: Value) -> Vec<PullRequestSummary> {
        serde_json::from_value(values).expect("summaries")
    }

    /// A cursor whose baseline saw PR 3 (open, head h1) and PR 5 as the newest id.
    fn baselined() -> RepoCursor {
        let feed = entries(json!([update(3, "OPEN", "h1", 0)]));
        let prs = summaries(json!([
            {"id": 5, "state": "MERGED"},
            {"id": 3, "state": "OPEN", "source": {"commit": {"hash": "h1"}}, "author": {"display_name": "Ada"}}
        ]));
        baseline(&info(), &prs, &feed, &[], at(1))
    }

    #[test]
    fn the_baseline_emits_nothing_and_the_feed_then_reports_each_entry_once() {
        let mut cursor = baselined();
        assert_eq!(cursor.max_pull_request_id, 5);
        let page = entries(json!([
            comment(3, 77, 6, false),
            approval(3, "bob", 5),
            update(6, "OPEN", "n1", 4),
            update(3, "OPEN", "h2", 3),
            update(3, "OPEN", "h1", 0)
        ]));
        let found = feed(&mut cursor, REPO, &page);
        let ts = at(5);
        assert_eq!(
            kinds(&found),
            vec![
                "pr:3:updated:h2".to_string(),
                "pr:6:created".to_string(),
                format!("pr:3:approved:{{bob}}:{ts}"),
                "pr:3:comment:77".to_string(),
            ]
        );
        // The same page again (a re-read, or a poll redone): nothing.
        assert!(feed(&mut cursor, REPO, &page).is_empty());
        assert!(feed_page_is_enough(&cursor, &page));
        assert_eq!(cursor.approved_pull_requests(), vec![3]);
    }

    #[test]
    fn state_changes_title_edits_and_comments() {
        let mut cursor = baselined();
        let page = entries(json!([
            update(3, "OPEN", "h1", 2),
            json!({"pull_request": pr(3), "changes_requested": {"date": time(3), "user": {"display_name": "Cy", "uuid": "{cy}"}}}),
            comment(3, 80, 4, true),
            update(4, "OPEN", "x", 5),
            update(3, "MERGED", "h1", 6),
            update(2, "DECLINED", "y", 7),
        ]));
        let found = feed(&mut cursor, REPO, &page);
        assert_eq!(
            kinds(&found),
            vec![
                format!("pr:3:changes_requested:{{cy}}:{}", at(3)),
                "pr:3:merged".to_string(),
                format!("pr:2:declined:{}", at(7)),
            ],
            "a title edit, a draft comment and an old pull request's update are not news"
        );
        assert!(cursor.pull_requests.contains_key(&4));
        assert!(!cursor.pull_requests.contains_key(&3));
        // The draft is published later, with its old date: still reported.
        let published = entries(json!([comment(3, 80, 4, false)]));
        assert_eq!(
            kinds(&feed(&mut cursor, REPO, &published)),
            vec!["pr:3:comment:80"]
        );
    }

    #[test]
    fn a_missing_approval_is_an_unapprove() {
        let mut cursor = baselined();
        feed(
            &mut cursor,
            REPO,
            &entries(json!([approval(3, "bob", 2), approval(3, "cy", 3)])),
        );
        let detail: PullRequestDetail = serde_json::from_value(json!({
            "id": 3, "state": "OPEN", "title": "PR 3",
            "participants": [{"user": {"uuid": "{cy}"}, "approved": true}, {"user": {"uuid": "{bob}"}, "approved": false}]
        }))
        .expect("detail");
        let found = approvals(&mut cursor, REPO, &detail, at(9));
        assert_eq!(
            kinds(&found),
            vec![format!("pr:3:unapproved:{{bob}}:{}", at(2))]
        );
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("bob")
        );
        assert!(approvals(&mut cursor, REPO, &detail, at(10)).is_empty());
    }

    fn branch_list(values: Value) -> Vec<Branch> {
        serde_json::from_value(values).expect("branches")
    }

    #[test]
    fn branch_heads_give_created_moved_and_deleted() {
        let mut cursor = baselined();
        cursor.branches = [("main", "a"), ("old", "o"), ("feature", "f1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let listed = branch_list(json!([
            {"name": "main", "target": {"hash": "a"}},
            {"name": "feature", "target": {"hash": "f2"}},
            {"name": "new", "target": {"hash": "n", "author": {"raw": "Ada <ada@x>"}}}
        ]));
        let partial = branches(&mut cursor.clone(), REPO, &listed, false, at(1));
        assert!(
            partial
                .activities
                .iter()
                .all(|a| a.kind.name() != "branch_deleted")
        );
        let changes = branches(&mut cursor, REPO, &listed, true, at(1));
        assert_eq!(
            kinds(&changes.activities),
            vec!["branch:new:created:n", "branch:old:deleted:o"]
        );
        assert_eq!(
            changes.activities[0]
                .actor
                .as_ref()
                .map(|a| a.display_name.as_str()),
            Some("Ada")
        );
        assert_eq!(
            changes.moved,
            vec![MovedBranch {
                name: "feature".into(),
                previous_head: "f1".into(),
                head: "f2".into()
            }]
        );
        let commits: Vec<Commit> = serde_json::from_value(json!([
            {"hash": "f2", "message": "Second\n\nbody", "author": {"raw": "Ada <ada@x>"}},
            {"hash": "f1b", "message": "First"}
        ]))
        .expect("commits");
        let pushed = push(REPO, &changes.moved[0], &commits, true, at(2));
        let ActivityKind::Push {
            commits, truncated, ..
        } = &pushed.kind
        else {
            panic!("{pushed:?}");
        };
        assert_eq!(commits[0].summary, "Second");
        assert!(*truncated);
        assert_eq!(pushed.id, "acme/api:push:feature:f1..f2");
    }

    fn pipeline(number: u64, minute: i64, state: &str, result: Option<&str>) -> Value {
        let mut state = json!({"name": state});
        if let Some(result) = result {
            state["result"] = json!({"name": result});
        }
        json!({"uuid": format!("{{p{number}}}"), "build_number": number, "state": state,
               "target": {"ref_name": "main"}, "created_on": time(minute), "completed_on": time(minute + 3)})
    }

    #[test]
    fn pipelines_start_finish_and_get_fixed() {
        let mut cursor = baselined();
        let history = vec![pipeline(1, -10, "COMPLETED", Some("FAILED"))];
        let page: Vec<Pipeline> = serde_json::from_value(json!(history)).expect("page");
        assert!(pipelines(&mut cursor, REPO, &page, at(2)).is_empty());
        let page: Vec<Pipeline> = serde_json::from_value(json!([
            pipeline(3, 5, "PENDING", None),
            pipeline(2, 4, "IN_PROGRESS", None),
            pipeline(1, -10, "COMPLETED", Some("FAILED"))
        ]))
        .expect("page");
        assert_eq!(
            kinds(&pipelines(&mut cursor, REPO, &page, at(6))),
            vec!["pipeline:{p2}:started"]
        );
        assert!(cursor.pipelines_running());
        let page: Vec<Pipeline> = serde_json::from_value(json!([
            pipeline(3, 5, "COMPLETED", Some("STOPPED")),
            pipeline(2, 4, "COMPLETED", Some("SUCCESSFUL"))
        ]))
        .expect("page");
        assert_eq!(
            kinds(&pipelines(&mut cursor, REPO, &page, at(9))),
            vec!["pipeline:{p2}:fixed", "pipeline:{p3}:stopped"]
        );
        assert!(!cursor.pipelines_running());
    }

    #[test]
    fn issues_are_created_commented_or_updated() {
        let mut cursor = baselined();
        let page: Vec<Issue> = serde_json::from_value(json!([
            {"id": 2, "title": "New", "created_on": time(3), "updated_on": time(3)},
            {"id": 1, "title": "Old", "created_on": time(-100), "updated_on": time(4)},
            {"id": 9, "title": "Stale", "created_on": time(-100), "updated_on": time(0)}
        ]))
        .expect("issues");
        let changes = issues(&mut cursor, REPO, &page);
        assert_eq!(kinds(&changes.activities), vec!["issue:2:created"]);
        assert_eq!(changes.changed.len(), 1);
        assert_eq!(cursor.issues.since, Some(at(4)));
        let comments: Vec<IssueComment> = serde_json::from_value(
            json!([{"id": 7, "content": {"raw": "me too"}, "created_on": time(4)}]),
        )
        .expect("comments");
        let old = &changes.changed[0];
        assert_eq!(
            kinds(&issue_comments(REPO, old, &comments, changes.since)),
            vec!["issue:1:comment:7"]
        );
        assert_eq!(
            kinds(&issue_comments(REPO, old, &[], changes.since)),
            vec![format!("issue:1:updated:{}", at(4))]
        );
    }

    #[test]
    fn the_first_sweep_records_and_later_ones_flag_changes() {
        let repos = |minute: i64| -> Vec<RepositoryInfo> {
            serde_json::from_value(json!([
                {"full_name": "Acme/API", "updated_on": time(minute)},
                {"full_name": "acme/web", "updated_on": time(0)}
            ]))
            .expect("repos")
        };
        let mut cursor = SweepCursor::default();
        assert!(sweep(&mut cursor, &repos(0)).is_empty());
        assert_eq!(sweep_since(&cursor), Some(at(-2)));
        assert!(sweep(&mut cursor, &repos(0)).is_empty());
        assert_eq!(sweep(&mut cursor, &repos(5)), vec!["acme/api"]);
    }
}
