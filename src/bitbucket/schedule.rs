//! Pure: which repository to poll next, for what, and when; adaptive and fair.
//!
//! Owns the cadences. Each watched repository has lanes with their own due times: the
//! pull request feed (every `base` while active, `4·base` with open pull requests,
//! `16·base` when quiet), branch heads (with the feed, or every `30·base` once the
//! workspace sweep has proved it reports pushes), pipelines (every `base` while hot: after
//! a push or while one runs; `60·base` otherwise, only where pipelines exist), issues
//! (`15·base`, only with an issue tracker) and approvals (`15·base`, only while an
//! approval could be withdrawn). A workspace with two or more watched repositories is
//! swept every `base`: one request that flags repositories whose `updated_on` moved.
//!
//! Fairness: among due work, sweeps go first, then flagged or hot repositories, then
//! routine polls, each class oldest-due first, so a busy repository cannot starve a quiet
//! one. Under a tight budget every due time slips by the same wait, which stretches all
//! intervals evenly. Failures back off per repository; a broken one is retried rarely.
//!
//! Time is passed in (tokio's `Instant`, real or simulated); the benchmark drives this
//! same code in simulated time. Must never do I/O, sleep or read a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The lanes of one poll of a repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lanes {
    pub feed: bool,
    pub heads: bool,
    pub pipelines: bool,
    pub issues: bool,
    pub approvals: bool,
}

impl Lanes {
    pub fn any(&self) -> bool {
        self.feed || self.heads || self.pipelines || self.issues || self.approvals
    }
}

/// One unit of work: a workspace sweep, or a poll of one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Sweep { workspace: String },
    Repository { name: String, lanes: Lanes },
}

/// How a poll of a repository ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A 5xx, timeout or broken answer: retried later, with backoff.
    Failed,
    /// A 429: the budget pauses everything; the lanes stay due.
    RateLimited,
    /// 404 or 403: retried rarely until it works again.
    Broken,
    /// No longer watched.
    Gone,
}

/// What a poll of a repository found, for the next cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepoReport {
    pub outcome: Outcome,
    /// Lanes that completed (a failed poll may have completed some).
    pub done: Lanes,
    pub activities: usize,
    /// A branch was created or moved.
    pub pushed: bool,
    pub pipelines_running: bool,
    pub pipelines_exist: bool,
    pub open_pull_requests: bool,
    pub approvals_tracked: bool,
    pub has_issues: bool,
    /// What the poll found, by the kinds the workspace sweep is checked against.
    pub found: Found,
}

/// Activities one poll found, counted by the kinds the workspace sweep is checked
/// against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// Pull request activities read from the feed.
    pub pull_requests: u32,
    /// Pushes and new branches on branches without an open pull request. A push to a
    /// pull request's branch also moves that pull request, so it proves nothing about
    /// whether pushes move the repository's `updated_on`: it is not counted.
    pub pushes: u32,
}

impl RepoReport {
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            done: Lanes::default(),
            activities: 0,
            pushed: false,
            pipelines_running: false,
            pipelines_exist: false,
            open_pull_requests: false,
            approvals_tracked: false,
            has_issues: false,
            found: Found::default(),
        }
    }
}

/// Cadences, as multiples of the base interval.
const ACTIVE_WINDOW: u32 = 30;
const FEED_WITH_OPEN_PULL_REQUESTS: u32 = 4;
const FEED_QUIET: u32 = 16;
const HEADS_WHEN_SWEEP_TRUSTED: u32 = 30;
const PIPELINES_ROUTINE: u32 = 60;
const PIPELINES_HOT_MAX: u32 = 120;
const ISSUES: u32 = 15;
const APPROVALS: u32 = 15;
const BROKEN_RETRY: u32 = 360;
const FAILURE_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// A workspace with at least this many watched repositories is swept.
const SWEEP_MIN_REPOSITORIES: usize = 2;

#[derive(Debug, Clone)]
struct RepoState {
    workspace: String,
    feed: Instant,
    heads: Instant,
    pipelines: Option<Instant>,
    issues: Option<Instant>,
    approvals: Option<Instant>,
    active_until: Option<Instant>,
    hot_since: Option<Instant>,
    hot_polls: u32,
    open_pull_requests: bool,
    pipelines_exist: bool,
    flagged: bool,
    in_flight: bool,
    not_before: Option<Instant>,
    failures: u32,
    broken: bool,
}

#[derive(Debug, Clone)]
struct WorkspaceState {
    due: Instant,
    in_flight: bool,
    failures: u32,
    /// A flagged repository turned out to have a push to a branch without an open pull
    /// request: `updated_on` reports pushes.
    trusted_for_pushes: bool,
}

/// The scheduler of one credential's polling.
#[derive(Debug, Clone)]
pub struct Scheduler {
    base: Duration,
    repos: BTreeMap<String, RepoState>,
    workspaces: BTreeMap<String, WorkspaceState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Urgent,
    Routine,
}

impl Scheduler {
    pub fn new(base: Duration) -> Self {
        Self {
            base: base.max(Duration::from_millis(1)),
            repos: BTreeMap::new(),
            workspaces: BTreeMap::new(),
        }
    }

    /// Makes the watched set `watched` (full names): new repositories are due at once
    /// (their first poll is the baseline, or a catch-up after a restart).
    pub fn sync(&mut self, watched: &[String], now: Instant) {
        self.repos.retain(|name, _| watched.contains(name));
        for name in watched {
            if self.repos.contains_key(name) {
                continue;
            }
            let workspace = name.split('/').next().unwrap_or(name).to_string();
            self.repos.insert(name.clone(), new_repo(workspace, now));
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for repo in self.repos.values() {
            *counts.entry(repo.workspace.as_str()).or_default() += 1;
        }
        self.workspaces.retain(|ws, _| {
            counts
                .get(ws.as_str())
                .is_some_and(|n| *n >= SWEEP_MIN_REPOSITORIES)
        });
        for (ws, count) in counts {
            if count >= SWEEP_MIN_REPOSITORIES && !self.workspaces.contains_key(ws) {
                self.workspaces.insert(
                    ws.to_string(),
                    WorkspaceState {
                        due: now,
                        in_flight: false,
                        failures: 0,
                        trusted_for_pushes: false,
                    },
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.repos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty()
    }

    /// Whether the sweep of `workspace` proved that it reports pushes.
    pub fn sweep_trusted(&self, workspace: &str) -> bool {
        self.workspaces
            .get(workspace)
            .is_some_and(|ws| ws.trusted_for_pushes)
    }

    fn due_lanes(repo: &RepoState, now: Instant) -> Lanes {
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        Lanes {
            feed: repo.feed <= now,
            heads: repo.heads <= now,
            pipelines: due(repo.pipelines),
            issues: due(repo.issues),
            approvals: due(repo.approvals),
        }
    }

    fn earliest(repo: &RepoState) -> Instant {
        let due = [repo.pipelines, repo.issues, repo.approvals]
            .into_iter()
            .flatten()
            .fold(repo.feed.min(repo.heads), Instant::min);
        repo.not_before
            .map_or(due, |not_before| due.max(not_before))
    }

    fn class(repo: &RepoState, now: Instant) -> Class {
        let hot = repo.hot_since.is_some() && repo.pipelines.is_some_and(|at| at <= now);
        if repo.flagged || hot {
            Class::Urgent
        } else {
            Class::Routine
        }
    }

    /// The most urgent work due at `now`, marked in flight; `None` when nothing is due.
    pub fn next_work(&mut self, now: Instant) -> Option<Work> {
        let sweep = self
            .workspaces
            .iter()
            .filter(|(_, ws)| !ws.in_flight && ws.due <= now)
            .min_by_key(|(_, ws)| ws.due)
            .map(|(name, _)| name.clone());
        if let Some(workspace) = sweep {
            if let Some(ws) = self.workspaces.get_mut(&workspace) {
                ws.in_flight = true;
            }
            return Some(Work::Sweep { workspace });
        }
        let (name, lanes) = self
            .repos
            .iter()
            .filter(|(_, repo)| !repo.in_flight && repo.not_before.is_none_or(|at| at <= now))
            .map(|(name, repo)| (name, repo, Self::due_lanes(repo, now)))
            .filter(|(_, _, lanes)| lanes.any())
            .min_by_key(|(_, repo, _)| (Self::class(repo, now), Self::earliest(repo)))
            .map(|(name, _, lanes)| (name.clone(), lanes))?;
        if let Some(repo) = self.repos.get_mut(&name) {
            repo.in_flight = true;
        }
        Some(Work::Repository { name, lanes })
    }

    /// When the next work falls due (work in flight is not counted).
    pub fn next_due(&self) -> Option<Instant> {
        let sweeps = self
            .workspaces
            .values()
            .filter(|ws| !ws.in_flight)
            .map(|ws| ws.due);
        let repos = self
            .repos
            .values()
            .filter(|repo| !repo.in_flight)
            .map(Self::earliest);
        sweeps.chain(repos).min()
    }

    /// A sweep of `workspace` ended: `changed` lists watched repositories whose
    /// `updated_on` moved (`None` when the sweep failed).
    pub fn sweep_done(&mut self, workspace: &str, changed: Option<&[String]>, now: Instant) {
        let base = self.base;
        let Some(ws) = self.workspaces.get_mut(workspace) else {
            return;
        };
        ws.in_flight = false;
        match changed {
            Some(changed) => {
                ws.failures = 0;
                ws.due = now + base;
                for name in changed {
                    if let Some(repo) = self.repos.get_mut(name) {
                        repo.flagged = true;
                        repo.heads = repo.heads.min(now);
                        repo.feed = repo.feed.min(now);
                    }
                }
            }
            None => {
                ws.failures = ws.failures.saturating_add(1);
                ws.due = now + backoff(base, ws.failures);
            }
        }
    }

    /// A poll of `name` ended with `report`.
    pub fn repo_done(&mut self, name: &str, report: &RepoReport, now: Instant) {
        let base = self.base;
        let Some(repo) = self.repos.get_mut(name) else {
            return;
        };
        repo.in_flight = false;
        match report.outcome {
            Outcome::Gone => {
                self.repos.remove(name);
                return;
            }
            Outcome::RateLimited => return,
            Outcome::Broken => {
                repo.broken = true;
                repo.not_before = Some(now + base.saturating_mul(BROKEN_RETRY));
                return;
            }
            Outcome::Failed => {
                repo.failures = repo.failures.saturating_add(1);
                repo.not_before = Some(now + backoff(base, repo.failures));
            }
            Outcome::Done => {
                repo.failures = 0;
                repo.broken = false;
                repo.not_before = None;
            }
        }
        // Only a push outside pull requests proves it: one to a pull request's branch
        // moved the pull request, and that alone moves `updated_on`.
        let confirmed = report.done.heads && repo.flagged && report.found.pushes > 0;
        if report.done.heads {
            repo.flagged = false;
        }
        if confirmed {
            if let Some(ws) = self.workspaces.get_mut(&repo.workspace) {
                ws.trusted_for_pushes = true;
            }
        }
        self.reschedule(name, report, now);
    }

    fn reschedule(&mut self, name: &str, report: &RepoReport, now: Instant) {
        let trusted = self
            .repos
            .get(name)
            .is_some_and(|repo| self.sweep_trusted(&repo.workspace));
        let base = self.base;
        let times = |n: u32| base.saturating_mul(n);
        let Some(repo) = self.repos.get_mut(name) else {
            return;
        };
        repo.open_pull_requests = report.open_pull_requests;
        repo.pipelines_exist = report.pipelines_exist;
        if report.activities > 0 || report.pushed {
            repo.active_until = Some(now + times(ACTIVE_WINDOW));
        }
        let active = repo.active_until.is_some_and(|until| until > now);
        let feed_every = if active {
            base
        } else if repo.open_pull_requests {
            times(FEED_WITH_OPEN_PULL_REQUESTS)
        } else {
            times(FEED_QUIET)
        };
        if report.done.feed {
            repo.feed = now + feed_every;
        }
        if report.done.heads {
            let heads_every = if trusted {
                times(HEADS_WHEN_SWEEP_TRUSTED)
            } else {
                feed_every
            };
            repo.heads = now + heads_every;
        }
        if report.pushed {
            // A pull request often follows a push, and so does a pipeline.
            repo.feed = repo.feed.min(now + base);
            repo.hot_since = Some(now);
            repo.hot_polls = 0;
            repo.pipelines = Some(now + base);
        }
        if report.done.pipelines {
            repo.hot_polls = repo.hot_polls.saturating_add(1);
        }
        if let Some(since) = repo.hot_since {
            let too_long = now.saturating_duration_since(since) >= times(PIPELINES_HOT_MAX);
            let settled = repo.hot_polls >= 2 && !report.pipelines_running;
            if report.done.pipelines && (too_long || settled) {
                repo.hot_since = None;
            } else if report.done.pipelines {
                repo.pipelines = Some(now + base);
            }
        }
        if repo.hot_since.is_none() && (report.done.pipelines || repo.pipelines.is_none()) {
            repo.pipelines = repo.pipelines_exist.then(|| now + times(PIPELINES_ROUTINE));
        }
        repo.issues = match (report.has_issues, repo.issues) {
            (false, _) => None,
            (true, Some(due)) if !report.done.issues => Some(due),
            (true, _) => Some(now + times(ISSUES)),
        };
        repo.approvals = match (report.approvals_tracked, repo.approvals) {
            (false, _) => None,
            (true, Some(due)) if !report.done.approvals => Some(due),
            (true, _) => Some(now + times(APPROVALS)),
        };
    }
}

fn new_repo(workspace: String, now: Instant) -> RepoState {
    RepoState {
        workspace,
        feed: now,
        heads: now,
        pipelines: None,
        issues: None,
        approvals: None,
        active_until: None,
        hot_since: None,
        hot_polls: 0,
        open_pull_requests: false,
        pipelines_exist: false,
        flagged: false,
        in_flight: false,
        not_before: None,
        failures: 0,
        broken: false,
    }
}

/// `base` doubling per failure, at least 5 s, at most 15 minutes.
fn backoff(base: Duration, failures: u32) -> Duration {
    base.max(Duration::from_secs(5))
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(FAILURE_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(60);

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn done(lanes: Lanes) -> RepoReport {
        RepoReport {
            done: lanes,
            ..RepoReport::new(Outcome::Done)
        }
    }

    fn all() -> Lanes {
        Lanes {
            feed: true,
            heads: true,
            pipelines: true,
            issues: true,
            approvals: true,
        }
    }

    #[test]
    fn new_repositories_are_due_now_and_sweeps_come_first() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["a/one", "a/two", "b/solo"]), now);
        assert_eq!(
            scheduler.next_work(now),
            Some(Work::Sweep {
                workspace: "a".into()
            })
        );
        let mut polled = Vec::new();
        while let Some(Work::Repository { name, lanes }) = scheduler.next_work(now) {
            assert!(lanes.feed && lanes.heads && !lanes.pipelines);
            polled.push(name);
        }
        assert_eq!(polled, names(&["a/one", "a/two", "b/solo"]));
        assert_eq!(scheduler.next_work(now), None);
    }

    #[test]
    fn quiet_repositories_slow_down_and_active_ones_speed_up() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["b/solo"]), now);
        scheduler.next_work(now);
        scheduler.repo_done("b/solo", &done(all()), now);
        assert_eq!(scheduler.next_due(), Some(now + BASE * FEED_QUIET));
        let later = now + BASE * FEED_QUIET;
        scheduler.next_work(later);
        let busy = RepoReport {
            activities: 2,
            open_pull_requests: true,
            ..done(all())
        };
        scheduler.repo_done("b/solo", &busy, later);
        assert_eq!(scheduler.next_due(), Some(later + BASE));
    }

    #[test]
    fn a_push_makes_pipelines_hot_until_they_settle() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["b/solo"]), now);
        scheduler.next_work(now);
        let pushed = RepoReport {
            pushed: true,
            ..done(Lanes {
                feed: true,
                heads: true,
                ..Lanes::default()
            })
        };
        scheduler.repo_done("b/solo", &pushed, now);
        let mut t = now;
        let mut pipeline_polls = 0;
        for running in [true, true, false] {
            t += BASE;
            let Some(Work::Repository { lanes, .. }) = scheduler.next_work(t) else {
                panic!("due");
            };
            assert!(lanes.pipelines);
            pipeline_polls += 1;
            let report = RepoReport {
                pipelines_running: running,
                pipelines_exist: true,
                ..done(lanes)
            };
            scheduler.repo_done("b/solo", &report, t);
        }
        assert_eq!(pipeline_polls, 3);
        // Settled: the next pipeline poll is the routine one.
        let Some(Work::Repository { lanes, .. }) = scheduler.next_work(t + BASE) else {
            panic!("due");
        };
        assert!(!lanes.pipelines);
    }

    #[test]
    fn a_sweep_flag_is_urgent_and_a_confirmed_push_trusts_the_sweep() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["a/one", "a/two"]), now);
        scheduler.next_work(now);
        scheduler.sweep_done("a", Some(&[]), now);
        for name in ["a/one", "a/two"] {
            assert!(matches!(
                scheduler.next_work(now),
                Some(Work::Repository { .. })
            ));
            scheduler.repo_done(name, &done(all()), now);
        }
        let t = now + BASE;
        assert!(matches!(scheduler.next_work(t), Some(Work::Sweep { .. })));
        scheduler.sweep_done("a", Some(&names(&["a/two"])), t);
        let Some(Work::Repository { name, lanes }) = scheduler.next_work(t) else {
            panic!("flagged repository due");
        };
        assert_eq!(name, "a/two");
        assert!(lanes.heads && lanes.feed);
        assert!(!scheduler.sweep_trusted("a"));
        let pushed = RepoReport {
            pushed: true,
            found: Found {
                pushes: 1,
                ..Found::default()
            },
            ..done(lanes)
        };
        scheduler.repo_done("a/two", &pushed, t);
        assert!(scheduler.sweep_trusted("a"));
    }

    #[test]
    fn a_push_to_a_pull_request_branch_does_not_trust_the_sweep() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["a/one", "a/two"]), now);
        scheduler.next_work(now);
        scheduler.sweep_done("a", Some(&[]), now);
        for name in ["a/one", "a/two"] {
            scheduler.next_work(now);
            scheduler.repo_done(name, &done(all()), now);
        }
        let t = now + BASE;
        scheduler.next_work(t);
        scheduler.sweep_done("a", Some(&names(&["a/two"])), t);
        let Some(Work::Repository { lanes, .. }) = scheduler.next_work(t) else {
            panic!("flagged repository due");
        };
        // The branch moved, but it is a pull request's: `found.pushes` stays 0.
        let pushed_to_pull_request = RepoReport {
            pushed: true,
            found: Found {
                pull_requests: 1,
                pushes: 0,
            },
            ..done(lanes)
        };
        scheduler.repo_done("a/two", &pushed_to_pull_request, t);
        assert!(!scheduler.sweep_trusted("a"));
    }

    #[test]
    fn failures_back_off_and_broken_repositories_wait_long() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["b/solo", "c/broken"]), now);
        scheduler.next_work(now);
        scheduler.next_work(now);
        scheduler.repo_done("b/solo", &RepoReport::new(Outcome::Failed), now);
        scheduler.repo_done("c/broken", &RepoReport::new(Outcome::Broken), now);
        assert_eq!(scheduler.next_work(now + BASE / 2), None);
        let Some(Work::Repository { name, .. }) = scheduler.next_work(now + BASE) else {
            panic!("retry due");
        };
        assert_eq!(name, "b/solo");
        scheduler.repo_done("b/solo", &RepoReport::new(Outcome::Failed), now + BASE);
        assert_eq!(scheduler.next_due(), Some(now + BASE * 3));
        assert_eq!(backoff(BASE, 10), FAILURE_BACKOFF_MAX);
    }
}
