//! Pure: which repository to poll next, for what, and when; adaptive and fair.
//!
//! Owns the cadences. Each watched repository has lanes with their own due times: the
//! pull request feed (every `base` while active, `4·base` with open pull requests,
//! `16·base` when quiet), branch heads (with the feed), pipelines (while hot, after a push
//! or while one runs: twice at `base`, then every `2·base`; `60·base` otherwise, or slower
//! where that would take more than a tenth of the budget, only where pipelines exist),
//! issues (`15·base`, only with an issue tracker) and approvals (`15·base`, only while an
//! approval could be withdrawn). A workspace with two or more watched repositories is
//! swept every `base`: one request that flags repositories whose `updated_on` moved; a
//! flagged repository's feed and heads are due at once.
//!
//! The sweep is checked, not trusted (`sweep_coverage.rs` keeps the verdicts). For every
//! activity a poll's feed or heads lane finds, the sample is *covered* when the sweep had
//! flagged the repository before the poll ended, *missed* when the first sweep to start
//! after the poll does not flag it either, and left out when no sweep could have seen it
//! (the lane's previous poll began before the workspace's first sweep ended, as after a
//! restart). Where a kind's coverage holds, the sweep decides: that lane of an unflagged
//! repository is polled only every `60·base`, a safety net that also finds what the sweep
//! misses. Elsewhere (measuring, fallen back, or while the sweep fails) the adaptive
//! cadences above apply.
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

use super::sweep_coverage::Coverage;
pub use super::sweep_coverage::{SweepKind, SweepMode};

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
/// A lane the sweep decides, for an unflagged repository: the safety net, at least this
/// often apart ...
const SWEEP_SAFETY_NET: u32 = 60;
/// ... and slower where the safety nets of every watched repository (two lanes each)
/// would take more than this share of the request budget.
const SAFETY_NET_BUDGET_SHARE: f64 = 0.1;
/// Samples waiting for a sweep's verdict, per workspace, at most.
const MAX_PENDING: usize = 1000;
const PIPELINES_ROUTINE: u32 = 60;
const PIPELINES_HOT_MAX: u32 = 120;
/// Polls of a hot repository's pipelines at `base` before they slow to `2·base`.
const HOT_POLLS_AT_BASE: u32 = 2;
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
    /// When a sweep flagged the repository, per [`SweepKind`] lane; cleared by a poll of
    /// that lane that began after it.
    flagged: [Option<Instant>; 2],
    /// When the lane's last completed poll began, per [`SweepKind`].
    lane_polled: [Option<Instant>; 2],
    /// When the poll in flight began.
    poll_started: Option<Instant>,
    in_flight: bool,
    not_before: Option<Instant>,
    failures: u32,
    broken: bool,
}

#[derive(Debug, Clone, Default)]
struct WorkspaceState {
    due: Option<Instant>,
    in_flight: bool,
    failures: u32,
    /// When the sweep in flight began.
    started: Option<Instant>,
    /// When the first successful sweep ended: it only records, later ones compare.
    first_swept: Option<Instant>,
    /// The coverage per [`SweepKind`].
    coverage: [Coverage; 2],
    /// Samples found by polls of unflagged repositories, waiting for the next sweep.
    pending: Vec<Pending>,
}

impl WorkspaceState {
    fn drives(&self, kind: SweepKind) -> bool {
        self.failures == 0 && self.coverage[kind.index()].mode() == SweepMode::Driving
    }
}

/// Activities a poll of an unflagged repository found: the first sweep to start after
/// `found_at` gives the verdict.
#[derive(Debug, Clone)]
struct Pending {
    repository: String,
    kind: SweepKind,
    count: u32,
    found_at: Instant,
}

/// The sweep's coverage of one kind in one workspace, for metrics and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageRow {
    pub workspace: String,
    pub kind: SweepKind,
    /// Decided samples in the window, and how many the sweep had flagged first.
    pub decided: usize,
    pub covered: usize,
    /// Samples waiting for the next sweep's verdict.
    pub pending: u32,
    pub mode: SweepMode,
}

/// A kind's mode changed in a workspace; the poller says so in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    pub workspace: String,
    pub kind: SweepKind,
    pub mode: SweepMode,
    pub decided: usize,
    pub covered: usize,
}

/// The scheduler of one credential's polling.
#[derive(Debug, Clone)]
pub struct Scheduler {
    base: Duration,
    /// The budget's requests an hour, when known (it scales the safety net).
    requests_per_hour: Option<u32>,
    repos: BTreeMap<String, RepoState>,
    workspaces: BTreeMap<String, WorkspaceState>,
    mode_changes: Vec<ModeChange>,
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
            requests_per_hour: None,
            repos: BTreeMap::new(),
            workspaces: BTreeMap::new(),
            mode_changes: Vec::new(),
        }
    }

    /// The requests an hour the budget allows, so the sweep's safety net can stay within
    /// [`SAFETY_NET_BUDGET_SHARE`] of it however many repositories are watched.
    pub fn with_request_budget(mut self, requests_per_hour: u32) -> Self {
        self.set_request_budget(requests_per_hour);
        self
    }

    /// A new allowance (Bitbucket announced another limit).
    pub fn set_request_budget(&mut self, requests_per_hour: u32) {
        self.requests_per_hour = Some(requests_per_hour.max(1));
    }

    /// How long a lane the sweep decides waits for its safety-net poll: `60·base`, or
    /// longer where two lanes of every watched repository at that pace would take more
    /// than a tenth of the budget (1,000 repositories on 800 requests an hour: 25 h).
    fn safety_net(&self) -> Duration {
        self.within_share(SWEEP_SAFETY_NET, 2.0)
    }

    /// The routine pipeline poll of a repository that has pipelines, when nothing made it
    /// hot (a pipeline started by hand or on a schedule): `60·base`, or longer where one
    /// poll of every watched repository at that pace would take more than a tenth of the
    /// budget (1,000 repositories on 800 requests an hour: 12.5 h).
    fn pipelines_routine(&self) -> Duration {
        self.within_share(PIPELINES_ROUTINE, 1.0)
    }

    /// `floor·base`, or the round of `lanes` polls of every watched repository that fits
    /// in [`SAFETY_NET_BUDGET_SHARE`] of the budget, whichever is longer.
    fn within_share(&self, floor: u32, lanes: f64) -> Duration {
        let floor = self.base.saturating_mul(floor);
        let Some(per_hour) = self.requests_per_hour else {
            return floor;
        };
        let polls_per_round = lanes * self.repos.len() as f64;
        let hours = polls_per_round / (SAFETY_NET_BUDGET_SHARE * f64::from(per_hour));
        floor.max(Duration::from_secs_f64(hours * 3600.0))
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
                        due: Some(now),
                        ..WorkspaceState::default()
                    },
                );
            }
        }
        let repos = &self.repos;
        for ws in self.workspaces.values_mut() {
            ws.pending.retain(|p| repos.contains_key(&p.repository));
        }
    }

    pub fn len(&self) -> usize {
        self.repos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repos.is_empty()
    }

    /// Whether the sweep of `workspace` decides when `kind` is polled now.
    pub fn sweep_drives(&self, workspace: &str, kind: SweepKind) -> bool {
        self.workspaces
            .get(workspace)
            .is_some_and(|ws| ws.drives(kind))
    }

    /// The sweep's coverage per swept workspace and kind.
    pub fn coverage(&self) -> Vec<CoverageRow> {
        let mut rows = Vec::new();
        for (workspace, ws) in &self.workspaces {
            for kind in SweepKind::ALL {
                let coverage = &ws.coverage[kind.index()];
                let (decided, covered) = coverage.counts();
                rows.push(CoverageRow {
                    workspace: workspace.clone(),
                    kind,
                    decided,
                    covered,
                    pending: ws
                        .pending
                        .iter()
                        .filter(|p| p.kind == kind)
                        .map(|p| p.count)
                        .sum(),
                    mode: coverage.mode(),
                });
            }
        }
        rows
    }

    /// The mode changes since the last call, oldest first.
    pub fn take_mode_changes(&mut self) -> Vec<ModeChange> {
        std::mem::take(&mut self.mode_changes)
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
        if repo.flagged.iter().any(Option::is_some) || hot {
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
            .filter(|(_, ws)| !ws.in_flight && ws.due.is_some_and(|due| due <= now))
            .min_by_key(|(_, ws)| ws.due)
            .map(|(name, _)| name.clone());
        if let Some(workspace) = sweep {
            if let Some(ws) = self.workspaces.get_mut(&workspace) {
                ws.in_flight = true;
                ws.started = Some(now);
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
            repo.poll_started = Some(now);
        }
        Some(Work::Repository { name, lanes })
    }

    /// When the next work falls due (work in flight is not counted).
    pub fn next_due(&self) -> Option<Instant> {
        let sweeps = self
            .workspaces
            .values()
            .filter(|ws| !ws.in_flight)
            .filter_map(|ws| ws.due);
        let repos = self
            .repos
            .values()
            .filter(|repo| !repo.in_flight)
            .map(Self::earliest);
        sweeps.chain(repos).min()
    }

    /// A sweep of `workspace` ended: `changed` lists watched repositories whose
    /// `updated_on` moved (`None` when the sweep failed). Gives the verdict on the samples
    /// found before it began.
    pub fn sweep_done(&mut self, workspace: &str, changed: Option<&[String]>, now: Instant) {
        let base = self.base;
        let Some(ws) = self.workspaces.get_mut(workspace) else {
            return;
        };
        ws.in_flight = false;
        let started = ws.started.take().unwrap_or(now);
        match changed {
            Some(changed) => {
                ws.failures = 0;
                ws.due = Some(now + base);
                if ws.first_swept.is_none() {
                    ws.first_swept = Some(now);
                }
                let (judged, waiting): (Vec<Pending>, Vec<Pending>) =
                    std::mem::take(&mut ws.pending)
                        .into_iter()
                        .partition(|p| p.found_at <= started);
                ws.pending = waiting;
                for sample in judged {
                    let covered = changed.contains(&sample.repository);
                    record(
                        &mut self.mode_changes,
                        workspace,
                        ws,
                        sample.kind,
                        covered,
                        sample.count,
                    );
                }
                for name in changed {
                    if let Some(repo) = self.repos.get_mut(name) {
                        repo.flagged = [Some(now); 2];
                        repo.heads = repo.heads.min(now);
                        repo.feed = repo.feed.min(now);
                    }
                }
            }
            None => {
                let drove = SweepKind::ALL.map(|kind| ws.drives(kind));
                ws.failures = ws.failures.saturating_add(1);
                ws.due = Some(now + backoff(base, ws.failures));
                // Without a sweep nothing is flagged: lanes it drove go back to the
                // adaptive cadence until it works again.
                for repo in self.repos.values_mut() {
                    if repo.workspace != workspace {
                        continue;
                    }
                    let adaptive = now + adaptive_every(repo, base, now);
                    if drove[SweepKind::PullRequests.index()] {
                        repo.feed = repo.feed.min(adaptive);
                    }
                    if drove[SweepKind::Pushes.index()] {
                        repo.heads = repo.heads.min(adaptive);
                    }
                }
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
        let poll_started = repo.poll_started.take().unwrap_or(now);
        let lanes_done = [report.done.feed, report.done.heads];
        let found = [report.found.pull_requests, report.found.pushes];
        let ws = self.workspaces.get_mut(&repo.workspace);
        if let Some(ws) = ws {
            for kind in SweepKind::ALL {
                let i = kind.index();
                if !lanes_done[i] || found[i] == 0 {
                    continue;
                }
                if repo.flagged[i].is_some() {
                    record(
                        &mut self.mode_changes,
                        &repo.workspace,
                        ws,
                        kind,
                        true,
                        found[i],
                    );
                } else if ws
                    .first_swept
                    .is_some_and(|first| repo.lane_polled[i].is_some_and(|at| at >= first))
                {
                    if ws.pending.len() >= MAX_PENDING {
                        ws.pending.remove(0);
                    }
                    ws.pending.push(Pending {
                        repository: name.to_string(),
                        kind,
                        count: found[i],
                        found_at: now,
                    });
                }
            }
        }
        for kind in SweepKind::ALL {
            let i = kind.index();
            if lanes_done[i] {
                // A flag raised while this poll ran may be news it did not read.
                if repo.flagged[i].is_some_and(|at| at <= poll_started) {
                    repo.flagged[i] = None;
                }
                repo.lane_polled[i] = Some(poll_started);
            }
        }
        self.reschedule(name, report, now);
    }

    fn reschedule(&mut self, name: &str, report: &RepoReport, now: Instant) {
        let drives = |kind| {
            self.repos
                .get(name)
                .is_some_and(|repo| self.sweep_drives(&repo.workspace, kind))
        };
        let (pull_requests_driven, pushes_driven) =
            (drives(SweepKind::PullRequests), drives(SweepKind::Pushes));
        let base = self.base;
        let times = |n: u32| base.saturating_mul(n);
        let safety_net = self.safety_net();
        let pipelines_routine = self.pipelines_routine();
        let Some(repo) = self.repos.get_mut(name) else {
            return;
        };
        repo.open_pull_requests = report.open_pull_requests;
        repo.pipelines_exist = report.pipelines_exist;
        if report.activities > 0 || report.pushed {
            repo.active_until = Some(now + times(ACTIVE_WINDOW));
        }
        let adaptive = adaptive_every(repo, base, now);
        let every = |driven: bool| {
            if driven { safety_net } else { adaptive }
        };
        if report.done.feed {
            repo.feed = now + every(pull_requests_driven);
        }
        if report.done.heads {
            repo.heads = now + every(pushes_driven);
        }
        if report.pushed {
            // A pull request often follows a push (the sweep flags it where it decides),
            // and so does a pipeline.
            if !pull_requests_driven {
                repo.feed = repo.feed.min(now + base);
            }
            repo.hot_since = Some(now);
            repo.hot_polls = 0;
            repo.pipelines = Some(now + base);
        }
        if report.done.pipelines {
            repo.hot_polls = repo.hot_polls.saturating_add(1);
        }
        if let Some(since) = repo.hot_since {
            let too_long = now.saturating_duration_since(since) >= times(PIPELINES_HOT_MAX);
            let settled = repo.hot_polls >= HOT_POLLS_AT_BASE && !report.pipelines_running;
            if report.done.pipelines && (too_long || settled) {
                repo.hot_since = None;
            } else if report.done.pipelines {
                // The first polls catch a pipeline starting; a running one is then looked
                // at every other interval (its end is reported at most one interval later,
                // and hot repositories cost half as much).
                let every = if repo.hot_polls >= HOT_POLLS_AT_BASE {
                    times(2)
                } else {
                    base
                };
                repo.pipelines = Some(now + every);
            }
        }
        if repo.hot_since.is_none() && (report.done.pipelines || repo.pipelines.is_none()) {
            repo.pipelines = repo.pipelines_exist.then(|| now + pipelines_routine);
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

/// The feed's adaptive cadence (and the heads' where the sweep does not decide): `base`
/// while active, slower with open pull requests, slowest when quiet.
fn adaptive_every(repo: &RepoState, base: Duration, now: Instant) -> Duration {
    if repo.active_until.is_some_and(|until| until > now) {
        base
    } else if repo.open_pull_requests {
        base.saturating_mul(FEED_WITH_OPEN_PULL_REQUESTS)
    } else {
        base.saturating_mul(FEED_QUIET)
    }
}

/// Records `count` samples of `kind` in `ws`, noting a change of mode.
fn record(
    changes: &mut Vec<ModeChange>,
    workspace: &str,
    ws: &mut WorkspaceState,
    kind: SweepKind,
    covered: bool,
    count: u32,
) {
    let coverage = &mut ws.coverage[kind.index()];
    if let Some(mode) = coverage.record(covered, count) {
        let (decided, covered) = coverage.counts();
        changes.push(ModeChange {
            workspace: workspace.to_string(),
            kind,
            mode,
            decided,
            covered,
        });
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
        flagged: [None; 2],
        lane_polled: [None; 2],
        poll_started: None,
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
    use super::super::sweep_coverage::MIN_SAMPLES;
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
        // Two polls a base interval apart, then every other interval while it runs.
        for (running, after) in [(true, BASE), (true, BASE), (false, BASE * 2)] {
            if after > BASE {
                // One interval in, only the (active) feed and heads are due.
                if let Some(Work::Repository { lanes, .. }) = scheduler.next_work(t + BASE) {
                    assert!(!lanes.pipelines, "a running pipeline waits two intervals");
                    scheduler.repo_done("b/solo", &done(lanes), t + BASE);
                }
            }
            t += after;
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

    /// Two repositories of workspace `a`, baselined after a first sweep at `now`.
    fn swept_pair(now: Instant) -> Scheduler {
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["a/one", "a/two"]), now);
        scheduler.next_work(now);
        scheduler.sweep_done("a", Some(&[]), now);
        for name in ["a/one", "a/two"] {
            scheduler.next_work(now);
            scheduler.repo_done(name, &done(all()), now);
        }
        scheduler
    }

    fn found(pull_requests: u32, pushes: u32) -> Found {
        Found {
            pull_requests,
            pushes,
        }
    }

    /// Every due repository poll at `t`, `a/two`'s finding `found`.
    fn round_polls(scheduler: &mut Scheduler, t: Instant, found: Found) {
        while let Some(Work::Repository { name, lanes }) = scheduler.next_work(t) {
            let ours = name == "a/two";
            let report = RepoReport {
                pushed: ours && found.pushes > 0,
                found: if ours { found } else { Found::default() },
                ..done(lanes)
            };
            scheduler.repo_done(&name, &report, t);
        }
    }

    /// A sweep at `t` flagging `flagged`, then every due poll at `t`.
    fn round(scheduler: &mut Scheduler, t: Instant, flagged: &[&str], found: Found) {
        assert!(matches!(scheduler.next_work(t), Some(Work::Sweep { .. })));
        scheduler.sweep_done("a", Some(&names(flagged)), t);
        round_polls(scheduler, t, found);
    }

    #[test]
    fn a_sweep_flag_is_urgent_and_covered_samples_let_the_sweep_decide() {
        let now = Instant::now();
        let mut scheduler = swept_pair(now);
        let t = now + BASE;
        assert!(matches!(scheduler.next_work(t), Some(Work::Sweep { .. })));
        scheduler.sweep_done("a", Some(&names(&["a/two"])), t);
        let Some(Work::Repository { name, lanes }) = scheduler.next_work(t) else {
            panic!("flagged repository due");
        };
        assert_eq!(name, "a/two");
        assert!(lanes.heads && lanes.feed);
        let report = RepoReport {
            found: found(1, 1),
            ..done(lanes)
        };
        scheduler.repo_done("a/two", &report, t);
        assert!(!scheduler.sweep_drives("a", SweepKind::Pushes));
        let mut t = t;
        for _ in 1..MIN_SAMPLES {
            t += BASE;
            round(&mut scheduler, t, &["a/two"], found(1, 1));
        }
        for kind in SweepKind::ALL {
            assert!(scheduler.sweep_drives("a", kind), "{kind:?}");
        }
        let changes = scheduler.take_mode_changes();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.mode == SweepMode::Driving));
        // The quiet repository's next feed and heads polls are the safety net's.
        t += BASE;
        round(&mut scheduler, t, &["a/one"], Found::default());
        let due_one = scheduler.repos["a/one"].feed;
        assert_eq!(due_one, t + BASE * SWEEP_SAFETY_NET);
        assert_eq!(scheduler.repos["a/one"].heads, due_one);
    }

    #[test]
    fn a_push_to_a_pull_request_branch_does_not_count_for_pushes() {
        let now = Instant::now();
        let mut scheduler = swept_pair(now);
        let mut t = now;
        for _ in 0..2 * MIN_SAMPLES {
            t += BASE;
            // The branch moved, but it is a pull request's: `found.pushes` stays 0.
            round(&mut scheduler, t, &["a/two"], found(1, 0));
        }
        assert!(scheduler.sweep_drives("a", SweepKind::PullRequests));
        assert!(!scheduler.sweep_drives("a", SweepKind::Pushes));
        let pushes = &scheduler.coverage()[1];
        assert_eq!((pushes.kind, pushes.decided), (SweepKind::Pushes, 0));
    }

    #[test]
    fn what_polls_find_unflagged_and_the_next_sweep_misses_falls_back() {
        let now = Instant::now();
        let mut scheduler = swept_pair(now);
        let mut t = now;
        for _ in 0..MIN_SAMPLES {
            // A poll of the unflagged repository finds a push ...
            t += BASE * FEED_QUIET;
            round(&mut scheduler, t, &[], found(0, 1));
            // ... and the sweep that starts after it does not flag it: missed.
            assert_eq!(scheduler.coverage()[1].pending, 1);
        }
        t += BASE;
        assert!(matches!(scheduler.next_work(t), Some(Work::Sweep { .. })));
        scheduler.sweep_done("a", Some(&[]), t);
        let pushes = &scheduler.coverage()[1];
        assert_eq!(
            (pushes.decided, pushes.covered, pushes.mode),
            (MIN_SAMPLES, 0, SweepMode::Fallback)
        );
        assert_eq!(
            scheduler.take_mode_changes(),
            vec![ModeChange {
                workspace: "a".into(),
                kind: SweepKind::Pushes,
                mode: SweepMode::Fallback,
                decided: MIN_SAMPLES,
                covered: 0,
            }]
        );
        // A sweep that flags the repository after such a poll counts it covered.
        t += BASE * FEED_QUIET;
        round(&mut scheduler, t, &[], found(0, 1));
        t += BASE;
        scheduler.next_work(t);
        scheduler.sweep_done("a", Some(&names(&["a/two"])), t);
        assert_eq!(scheduler.coverage()[1].covered, 1);
    }

    #[test]
    fn what_no_sweep_could_have_seen_is_not_a_sample() {
        let now = Instant::now();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&names(&["a/one", "a/two"]), now);
        // The first sweep fails: the catch-up polls after a restart come first.
        scheduler.next_work(now);
        scheduler.sweep_done("a", None, now);
        round_polls(&mut scheduler, now, found(3, 2));
        let t = now + BASE;
        scheduler.next_work(t);
        scheduler.sweep_done("a", Some(&[]), t);
        // Their lanes' previous polls began before any sweep: left out.
        assert!(
            scheduler
                .coverage()
                .iter()
                .all(|row| row.decided == 0 && row.pending == 0)
        );
    }

    #[test]
    fn a_failing_sweep_gives_the_lanes_it_drove_back_to_the_adaptive_cadence() {
        let now = Instant::now();
        let mut scheduler = swept_pair(now);
        let mut t = now;
        for _ in 0..MIN_SAMPLES {
            t += BASE;
            round(&mut scheduler, t, &["a/two"], found(1, 1));
        }
        t += BASE;
        round(&mut scheduler, t, &["a/one"], Found::default());
        assert_eq!(scheduler.repos["a/one"].feed, t + BASE * SWEEP_SAFETY_NET);
        t += BASE;
        assert!(matches!(scheduler.next_work(t), Some(Work::Sweep { .. })));
        scheduler.sweep_done("a", None, t);
        assert!(!scheduler.sweep_drives("a", SweepKind::PullRequests));
        assert_eq!(scheduler.repos["a/one"].feed, t + BASE * FEED_QUIET);
        assert_eq!(scheduler.repos["a/one"].heads, t + BASE * FEED_QUIET);
    }

    #[test]
    fn the_safety_net_and_routine_pipeline_polls_stay_within_a_tenth_of_the_budget() {
        let t = Instant::now();
        let many: Vec<String> = (0..1000).map(|i| format!("acme/r{i}")).collect();
        let mut scheduler = Scheduler::new(BASE);
        scheduler.sync(&many[..100], t);
        assert_eq!(
            scheduler.safety_net(),
            BASE * SWEEP_SAFETY_NET,
            "unknown budget"
        );
        scheduler.set_request_budget(800);
        // 100 repositories, two lanes each, hourly: 200 requests, a quarter of 800; a
        // tenth allows one round every 2.5 hours.
        assert_eq!(scheduler.safety_net(), Duration::from_secs(9000));
        scheduler.sync(&many, t);
        assert_eq!(scheduler.safety_net(), Duration::from_secs(25 * 3600));
        scheduler.set_request_budget(100_000);
        assert_eq!(
            scheduler.safety_net(),
            BASE * SWEEP_SAFETY_NET,
            "never under an hour"
        );
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
