//! Pure: the build lane (commit statuses that other CI systems report, read with the
//! pipelines, only for repositories whose subscribers want builds). Heads the poller
//! learns (a push to a wanted branch, a pull request's new head) are watched for a
//! bounded time; each watched head's statuses against the remembered ones give builds
//! started, succeeded, failed, stopped and fixed (a success after a failure of the same
//! status key on the same branch).
//!
//! Owns the build cursor. The bound: a head is watched at most [`BUILD_WATCH_MAX`] after
//! it was learned, let go [`BUILD_WATCH_SETTLED`] after it was learned once every status
//! it has is finished, and at most [`MAX_WATCHED_HEADS`] are watched at once (the oldest
//! go first). Statuses that Bitbucket Pipelines writes itself are skipped: the pipeline
//! lane reports those. Must never do I/O, read the clock (`now` is passed in) or spawn.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{RepoCursor, TrackedPullRequest, activity};
use crate::bitbucket::activity::{Activity, ActivityKind, BuildRef, PullRequestRef};
use crate::bitbucket::model::{CommitStatus, same_commit};

/// A head's statuses are watched at most this long after it was learned.
pub const BUILD_WATCH_MAX: SignedDuration = SignedDuration::from_hours(2);
/// A head whose statuses are all finished is let go this long after it was learned
/// (another CI system may still report on it until then).
pub const BUILD_WATCH_SETTLED: SignedDuration = SignedDuration::from_mins(15);
/// A head without any status yet keeps the pipelines lane hot this long: CI systems
/// report INPROGRESS when they pick a commit up.
pub const BUILD_FIRST_STATUS_WAIT: SignedDuration = SignedDuration::from_mins(5);
/// Heads watched at once per repository.
pub const MAX_WATCHED_HEADS: usize = 10;

/// What the build lane remembers. Stored in the repository's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCursor {
    /// Heads whose statuses are watched, by commit hash.
    pub watched: BTreeMap<String, WatchedHead>,
    /// Each open pull request's head as last considered, by pull request id.
    pub pull_request_heads: BTreeMap<u64, String>,
    /// Whether the pull request heads were recorded once: the first time is history.
    pub started: bool,
    /// The last finished state (SUCCESSFUL or FAILED) per branch, then status key.
    pub last_result: BTreeMap<String, BTreeMap<String, String>>,
}

/// A head whose statuses are watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedHead {
    /// The branch it was pushed to (a pull request's source branch).
    pub branch: Option<String>,
    /// The pull request whose head it is.
    pub pull_request: Option<PullRequestRef>,
    /// When it was learned.
    pub since: Timestamp,
    /// Status key to the state last seen.
    pub statuses: BTreeMap<String, String>,
}

impl BuildCursor {
    /// The heads to read statuses of, oldest first.
    pub fn watched_heads(&self) -> Vec<String> {
        let mut heads: Vec<(&Timestamp, &String)> = self
            .watched
            .iter()
            .map(|(hash, w)| (&w.since, hash))
            .collect();
        heads.sort();
        heads.into_iter().map(|(_, hash)| hash.clone()).collect()
    }

    /// Whether a build may still report soon: a watched status is INPROGRESS, or a head
    /// learned less than [`BUILD_FIRST_STATUS_WAIT`] ago has no status yet.
    pub fn pending(&self, now: Timestamp) -> bool {
        self.watched.values().any(|head| {
            head.statuses.values().any(|state| state == "INPROGRESS")
                || (head.statuses.is_empty() && now < head.since + BUILD_FIRST_STATUS_WAIT)
        })
    }

    fn watch(&mut self, hash: &str, head: WatchedHead) {
        match self.watched.get_mut(hash) {
            Some(known) => {
                known.branch = known.branch.take().or(head.branch);
                known.pull_request = head.pull_request.or(known.pull_request.take());
            }
            None => {
                self.watched.insert(hash.to_string(), head);
            }
        }
        while self.watched.len() > MAX_WATCHED_HEADS {
            let Some(oldest) = self.watched_heads().into_iter().next() else {
                break;
            };
            self.watched.remove(&oldest);
        }
    }
}

/// Watches the head `hash` just pushed to `branch`.
pub fn watch_pushed_head(cursor: &mut RepoCursor, branch: &str, hash: &str, now: Timestamp) {
    cursor.builds.watch(
        hash,
        WatchedHead {
            branch: Some(branch.to_string()),
            pull_request: None,
            since: now,
            statuses: BTreeMap::new(),
        },
    );
}

fn pull_request_ref(id: u64, tracked: &TrackedPullRequest) -> PullRequestRef {
    PullRequestRef {
        id,
        title: tracked.title.clone().unwrap_or_default(),
        link: None,
        author: tracked.author.clone(),
        source_branch: tracked.source_branch.clone(),
        destination_branch: tracked.destination_branch.clone(),
        reviewers: tracked
            .reviewers
            .as_ref()
            .map(|uuids| uuids.iter().cloned().collect())
            .unwrap_or_default(),
    }
}

/// Watches the new heads of open pull requests (the feed lane keeps them in the cursor).
/// The first call records them without watching: they are history.
pub fn watch_pull_request_heads(cursor: &mut RepoCursor, now: Timestamp) {
    let heads: BTreeMap<u64, String> = cursor
        .pull_requests
        .iter()
        .filter_map(|(id, pr)| Some((*id, pr.head.clone()?)))
        .collect();
    if cursor.builds.started {
        for (id, head) in &heads {
            if cursor.builds.pull_request_heads.get(id) == Some(head) {
                continue;
            }
            let tracked = &cursor.pull_requests[id];
            let watched = WatchedHead {
                branch: tracked.source_branch.clone(),
                pull_request: Some(pull_request_ref(*id, tracked)),
                since: now,
                statuses: BTreeMap::new(),
            };
            cursor.builds.watch(head, watched);
        }
    }
    cursor.builds.pull_request_heads = heads;
    cursor.builds.started = true;
}

/// Whether Bitbucket Pipelines wrote this status (the pipeline lane reports those).
fn written_by_pipelines(status: &CommitStatus) -> bool {
    status
        .url
        .as_deref()
        .is_some_and(|url| url.contains("/pipelines/results/") || url.contains("/addon/pipelines/"))
}

/// The statuses of the watched head `hash`: changes become activities.
pub fn builds(
    cursor: &mut RepoCursor,
    repo: &str,
    hash: &str,
    statuses: &[CommitStatus],
    now: Timestamp,
) -> Vec<Activity> {
    let state = &mut cursor.builds;
    let Some(head) = state.watched.get_mut(hash) else {
        return Vec::new();
    };
    let mut activities = Vec::new();
    let mut ordered: Vec<&CommitStatus> = statuses
        .iter()
        .filter(|status| !written_by_pipelines(status))
        .collect();
    ordered.sort_by_key(|status| (status.updated_on.or(status.created_on), &status.key));
    for status in ordered {
        let Some(current) = status.state.as_deref() else {
            continue;
        };
        if head.statuses.get(&status.key).map(String::as_str) == Some(current) {
            continue;
        }
        head.statuses
            .insert(status.key.clone(), current.to_string());
        let branch = head.branch.clone().or_else(|| status.refname.clone());
        let failed_before = branch
            .as_ref()
            .and_then(|b| state.last_result.get(b))
            .and_then(|keys| keys.get(&status.key))
            .is_some_and(|r| r == "FAILED");
        if let (Some(branch), "SUCCESSFUL" | "FAILED") = (&branch, current) {
            state
                .last_result
                .entry(branch.clone())
                .or_default()
                .insert(status.key.clone(), current.to_string());
        }
        let build = BuildRef {
            key: status.key.clone(),
            name: status.name.clone(),
            commit: status
                .commit
                .as_ref()
                .and_then(|c| c.hash.clone())
                .filter(|full| same_commit(full, hash))
                .unwrap_or_else(|| hash.to_string()),
            branch,
            url: status.url.clone(),
            pull_request: head.pull_request.clone(),
        };
        let (suffix, kind) = match current {
            "INPROGRESS" => ("started", ActivityKind::BuildStarted { build }),
            "SUCCESSFUL" if failed_before => ("fixed", ActivityKind::BuildFixed { build }),
            "SUCCESSFUL" => ("succeeded", ActivityKind::BuildSucceeded { build }),
            "FAILED" => ("failed", ActivityKind::BuildFailed { build }),
            "STOPPED" => ("stopped", ActivityKind::BuildStopped { build }),
            _ => continue,
        };
        let when = status.updated_on.or(status.created_on);
        let at = when.map(|t| format!(":{t}")).unwrap_or_default();
        activities.push(activity(
            format!("{repo}:build:{hash}:{}:{suffix}{at}", status.key),
            repo,
            when.unwrap_or(now),
            None,
            status.url.clone(),
            kind,
        ));
    }
    activities
}

/// Lets go of heads watched long enough (see the module's bound).
pub fn retire_builds(cursor: &mut RepoCursor, now: Timestamp) {
    cursor.builds.watched.retain(|_, head| {
        let settled = !head.statuses.is_empty()
            && head.statuses.values().all(|state| state != "INPROGRESS")
            && now >= head.since + BUILD_WATCH_SETTLED;
        let expired = now >= head.since + BUILD_WATCH_MAX;
        !settled && !expired
    });
}

/// Nobody wants builds (any more): forget everything, so turning them on again starts
/// from the present.
pub fn forget_builds(cursor: &mut RepoCursor) {
    cursor.builds = BuildCursor::default();
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    fn status(key: &str, state: &str, minute: i64) -> Value {
        json!({"key": key, "name": format!("{key} build"), "state": state, "refname": "main",
               "url": format!("https://ci.example/{key}/{minute}"),
               "created_on": time(minute - 1), "updated_on": time(minute)})
    }

    fn statuses(values: Value) -> Vec<CommitStatus> {
        serde_json::from_value(values).expect("statuses")
    }

    #[test]
    fn a_pushed_head_fails_then_the_next_one_is_fixed() {
        let mut cursor = baselined();
        watch_pushed_head(&mut cursor, "main", "c1", at(2));
        assert!(cursor.builds.pending(at(3)), "waiting for a first status");
        assert!(!cursor.builds.pending(at(8)));
        let read = statuses(json!([status("jenkins", "INPROGRESS", 3)]));
        assert_eq!(
            kinds(&builds(&mut cursor, REPO, "c1", &read, at(3))),
            vec![format!("build:c1:jenkins:started:{}", at(3))]
        );
        assert!(cursor.builds.pending(at(30)), "INPROGRESS keeps it pending");
        // The same answer again (a redo, a restart): nothing.
        assert!(builds(&mut cursor, REPO, "c1", &read, at(4)).is_empty());
        let read = statuses(json!([status("jenkins", "FAILED", 6)]));
        let failed = builds(&mut cursor, REPO, "c1", &read, at(6));
        assert_eq!(failed[0].kind.name(), "build_failed");
        let ActivityKind::BuildFailed { build } = &failed[0].kind else {
            panic!("{failed:?}");
        };
        assert_eq!(build.branch.as_deref(), Some("main"));
        assert_eq!(build.url.as_deref(), Some("https://ci.example/jenkins/6"));
        assert!(build.pull_request.is_none());

        watch_pushed_head(&mut cursor, "main", "c2", at(10));
        let read = statuses(json!([
            status("jenkins", "SUCCESSFUL", 14),
            status("lint", "SUCCESSFUL", 12)
        ]));
        let found = builds(&mut cursor, REPO, "c2", &read, at(14));
        let names: Vec<&str> = found.iter().map(|a| a.kind.name()).collect();
        assert_eq!(names, vec!["build_succeeded", "build_fixed"]);
        // Settled heads are let go after the bound; unsettled ones after the maximum.
        retire_builds(&mut cursor, at(20));
        assert_eq!(cursor.builds.watched_heads(), vec!["c2"]);
        retire_builds(&mut cursor, at(26));
        assert!(cursor.builds.watched.is_empty());
        watch_pushed_head(&mut cursor, "main", "c3", at(30));
        retire_builds(&mut cursor, at(30 + 119));
        assert_eq!(cursor.builds.watched.len(), 1);
        retire_builds(&mut cursor, at(30 + 120));
        assert!(cursor.builds.watched.is_empty());
    }

    #[test]
    fn pull_request_heads_are_history_first_then_watched_and_named() {
        let mut cursor = baselined();
        watch_pull_request_heads(&mut cursor, at(1));
        assert!(
            cursor.builds.watched.is_empty(),
            "the first heads are history"
        );
        cursor.pull_requests.get_mut(&3).expect("PR 3").head = Some("h2".into());
        cursor
            .pull_requests
            .get_mut(&3)
            .expect("PR 3")
            .source_branch = Some("feature".into());
        watch_pull_request_heads(&mut cursor, at(2));
        watch_pull_request_heads(&mut cursor, at(3));
        assert_eq!(cursor.builds.watched_heads(), vec!["h2"]);
        let read = statuses(json!([
            status("jenkins", "FAILED", 4),
            {"key": "{pipeline}", "state": "FAILED", "url": "https://bitbucket.org/acme/api/pipelines/results/7"}
        ]));
        let found = builds(&mut cursor, REPO, "h2", &read, at(4));
        assert_eq!(
            found.len(),
            1,
            "Pipelines' own status is the pipeline lane's"
        );
        let ActivityKind::BuildFailed { build } = &found[0].kind else {
            panic!("{found:?}");
        };
        let pull_request = build.pull_request.as_ref().expect("names the PR");
        assert_eq!(pull_request.id, 3);
        assert_eq!(build.branch.as_deref(), Some("feature"));
        // An unwatched head reads nothing.
        assert!(builds(&mut cursor, REPO, "elsewhere", &read, at(5)).is_empty());
    }

    #[test]
    fn at_most_a_bounded_number_of_heads_is_watched() {
        let mut cursor = baselined();
        for n in 0..(MAX_WATCHED_HEADS as i64 + 3) {
            watch_pushed_head(&mut cursor, "main", &format!("c{n:02}"), at(n));
        }
        assert_eq!(cursor.builds.watched.len(), MAX_WATCHED_HEADS);
        assert_eq!(
            cursor.builds.watched_heads()[0],
            "c03",
            "the oldest went first"
        );
        forget_builds(&mut cursor);
        assert_eq!(cursor.builds, BuildCursor::default());
    }
}
