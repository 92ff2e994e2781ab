//! The poller: spends one credential's budget to turn changes in the watched repositories
//! into activities in the outbox, exactly once.
//!
//! Owns the loop that asks the [`Scheduler`] for due work, runs up to `concurrency`
//! polls at a time, and commits each repository's poll (its activities and its advanced
//! cursor) in one store transaction. The first poll of a repository is its baseline: it
//! records the present and emits nothing. A poll that fails part-way commits the lanes
//! that finished; one that is cancelled (shutdown, a crash) commits nothing and is redone.
//! 404/403 marks a repository broken once (one warning, then a retry every few hours);
//! other failures back off per repository and never stop the loop.
//!
//! The workspace sweep is checked as it is used: the [`Scheduler`] counts, per workspace
//! and kind, how much of what direct polls found the sweep had flagged first; the poller
//! logs each change of who decides (a fall-back once, at warn) and publishes the coverage
//! as `sweep_coverage` in the metrics, which `status` shows too.
//!
//! Storage is what [`PollStore`] says the poller needs (the watched names, each one's
//! cursor and [`PollWants`], `commit_poll`, the broken marks, pruning old ids); the store
//! implements it, so
//! this module never imports `store`. After a commit that appended activities the poller
//! rings its commit bell ([`Poller::ring_on_commit`]), so whoever routes the outbox does
//! not wait for its own tick.
//!
//! Must never hold Bitbucket JSON outside `diff/`, log a secret, or write an activity
//! except through `commit_poll`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::clock::Clock;

use super::activity::{Activity, ActivityKind, MAX_COMMITS, PollWants};
use super::client::{BitbucketClient, BitbucketError};
use super::diff::{self, RepoCursor, SweepCursor};
use super::schedule::{Found, Lanes, ModeChange, Outcome, RepoReport, Scheduler, Work};
use super::sweep_coverage::{SweepMode, THRESHOLD_PERCENT};
use crate::metrics::{Metrics, SweepCoverage};

/// Feed pages one poll reads at most (50 entries each).
const MAX_FEED_PAGES: usize = 10;
/// Pull requests whose reviewers one poll reads at most (newest first).
const MAX_REVIEWER_CHECKS: usize = 5;
/// How long activity ids are remembered after the activity happened.
const ID_RETENTION: SignedDuration = SignedDuration::from_hours(24 * 30);
const ID_PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How the poller runs.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// The shortest interval at which any repository is polled.
    pub base_interval: Duration,
    /// Polls in flight at once (they share the one budget).
    pub concurrency: usize,
    /// How often the watched list is re-read from the store.
    pub sync_interval: Duration,
}

/// What [`PollStore::commit_poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollCommit {
    /// The cursor advanced; this many activities were new and appended (the others were
    /// already in the outbox's history).
    Committed { appended: usize },
    /// The repository was unwatched meanwhile: nothing was written.
    Unwatched,
}

/// What the poller needs from storage. A cursor is opaque to the storage: it is kept as
/// it serializes, per repository.
pub trait PollStore: Send + Sync + 'static {
    type Error: Display + Send;

    /// The names of the watched repositories.
    fn watched_names(&self) -> Result<Vec<String>, Self::Error>;

    /// The repository's cursor, or `None` before its baseline.
    fn cursor<C: DeserializeOwned>(&self, repository: &str) -> Result<Option<C>, Self::Error>;

    /// What the active subscriptions covering the repository want polled beyond the
    /// lanes every watched repository has (tags, builds, deployments).
    fn wants(&self, repository: &str) -> Result<PollWants, Self::Error>;

    /// In one durable transaction: appends those of `activities` whose id was never
    /// appended, and stores `cursor` as the repository's cursor; nothing when the
    /// repository is no longer watched.
    fn commit_poll<C: Serialize + Sync>(
        &self,
        repository: &str,
        cursor: &C,
        activities: &[Activity],
    ) -> impl Future<Output = Result<PollCommit, Self::Error>> + Send;

    /// Forgets the ids of activities that happened before `cutoff`; returns how many.
    fn prune_ids(&self, cutoff: Timestamp) -> Result<usize, Self::Error>;

    /// Marks the repository unreachable; `true` the first time.
    fn mark_broken(
        &self,
        repository: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, Self::Error>;

    /// Clears the mark; `true` when there was one.
    fn clear_broken(&self, repository: &str) -> Result<bool, Self::Error>;
}

/// What the poll loop has done so far; for tests and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Repository polls and sweeps finished, successfully or not.
    pub polls: u64,
    /// Activities appended to the outbox.
    pub appended: u64,
}

/// Everything a single poll needs; shared by the concurrent polls.
struct PollContext<S> {
    client: BitbucketClient,
    store: S,
    clock: Arc<dyn Clock>,
    /// Set once a 401 was logged, until a request succeeds again.
    unauthorized_reported: AtomicBool,
}

/// The Bitbucket poller of one credential, over the storage `S`.
pub struct Poller<S> {
    context: Arc<PollContext<S>>,
    settings: PollerSettings,
    progress: watch::Sender<Progress>,
    /// Rung after a commit that appended activities.
    on_commit: Option<Arc<Notify>>,
    /// Where the sweep's coverage is published.
    metrics: Option<Metrics>,
}

impl<S> std::fmt::Debug for Poller<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A finished unit of work, handed back to the loop.
enum Finished {
    Sweep {
        workspace: String,
        result: Option<(SweepCursor, Vec<String>)>,
    },
    Repository {
        name: String,
        report: RepoReport,
        appended: usize,
    },
}

impl<S: PollStore> Poller<S> {
    pub fn new(
        client: BitbucketClient,
        store: S,
        clock: Arc<dyn Clock>,
        settings: PollerSettings,
    ) -> Self {
        Self {
            context: Arc::new(PollContext {
                client,
                store,
                clock,
                unauthorized_reported: AtomicBool::new(false),
            }),
            settings,
            progress: watch::channel(Progress::default()).0,
            on_commit: None,
            metrics: None,
        }
    }

    /// Publishes the workspace sweep's coverage into `metrics` (`sweep_coverage`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Rings `bell` each time a poll's commit appended activities.
    pub fn ring_on_commit(mut self, bell: Arc<Notify>) -> Self {
        self.on_commit = Some(bell);
        self
    }

    /// Follows the loop's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Polls until `stop` is cancelled. Polls in flight then are abandoned uncommitted
    /// (they are redone on the next start).
    pub async fn run(self, stop: CancellationToken) {
        let mut scheduler = Scheduler::new(self.settings.base_interval);
        let mut sweeps: HashMap<String, SweepCursor> = HashMap::new();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut in_flight: BTreeMap<tokio::task::Id, Work> = BTreeMap::new();
        let mut next_sync = Instant::now();
        let mut next_prune = Instant::now() + ID_PRUNE_EVERY;
        info!(
            base_interval_secs = self.settings.base_interval.as_secs_f64(),
            hourly_budget = self.context.client.budget().allowance(),
            "Bitbucket poller started"
        );
        loop {
            let now = Instant::now();
            if now >= next_sync {
                self.sync(&mut scheduler, now);
                next_sync = now + self.settings.sync_interval;
            }
            if now >= next_prune {
                self.prune_ids();
                next_prune = now + ID_PRUNE_EVERY;
            }
            while tasks.len() < self.settings.concurrency.max(1) {
                let Some(work) = scheduler.next_work(now) else {
                    break;
                };
                let handle = self.spawn(&mut tasks, &work, &sweeps);
                in_flight.insert(handle, work);
            }
            let wake = scheduler
                .next_due()
                .map_or(next_sync, |due| due.min(next_sync))
                .min(next_prune)
                .max(now + Duration::from_millis(1));
            let room = tasks.len() < self.settings.concurrency.max(1);
            tokio::select! {
                _ = stop.cancelled() => break,
                joined = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let finished = match joined {
                        Some(Ok((id, finished))) => {
                            in_flight.remove(&id);
                            Some(finished)
                        }
                        Some(Err(failure)) => {
                            let work = in_flight.remove(&failure.id());
                            error!(?work, %failure, "a poll task failed");
                            work.map(failed_work)
                        }
                        None => None,
                    };
                    if let Some(finished) = finished {
                        self.finish(&mut scheduler, &mut sweeps, finished);
                    }
                }
                _ = tokio::time::sleep_until(wake), if room => {}
            }
        }
        tasks.shutdown().await;
        info!("Bitbucket poller stopped");
    }

    fn sync(&self, scheduler: &mut Scheduler, now: Instant) {
        let allowance = self.context.client.budget().allowance();
        scheduler.set_request_budget(u32::try_from(allowance).unwrap_or(u32::MAX));
        match self.context.store.watched_names() {
            Ok(names) => {
                let before = scheduler.len();
                scheduler.sync(&names, now);
                if scheduler.len() != before {
                    info!(
                        repositories = scheduler.len(),
                        "watched repositories changed"
                    );
                }
            }
            Err(error) => warn!(%error, "cannot read the watched repositories; will retry"),
        }
    }

    fn prune_ids(&self) {
        let Ok(cutoff) = self.context.clock.now().checked_sub(ID_RETENTION) else {
            return;
        };
        match self.context.store.prune_ids(cutoff) {
            Ok(0) => {}
            Ok(removed) => info!(removed, "forgot the ids of old activities"),
            Err(error) => warn!(%error, "cannot prune old activity ids; will retry"),
        }
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<Finished>,
        work: &Work,
        sweeps: &HashMap<String, SweepCursor>,
    ) -> tokio::task::Id {
        let context = self.context.clone();
        match work.clone() {
            Work::Sweep { workspace } => {
                let cursor = sweeps.get(&workspace).cloned().unwrap_or_default();
                let span = info_span!("sweep", workspace = %workspace);
                tasks
                    .spawn(
                        async move {
                            let result = sweep(&context, &workspace, cursor).await;
                            Finished::Sweep { workspace, result }
                        }
                        .instrument(span),
                    )
                    .id()
            }
            Work::Repository { name, lanes } => {
                let span = info_span!("poll", repository = %name);
                tasks
                    .spawn(
                        async move {
                            let (report, appended) = poll_repository(&context, &name, lanes).await;
                            Finished::Repository {
                                name,
                                report,
                                appended,
                            }
                        }
                        .instrument(span),
                    )
                    .id()
            }
        }
    }

    fn finish(
        &self,
        scheduler: &mut Scheduler,
        sweeps: &mut HashMap<String, SweepCursor>,
        finished: Finished,
    ) {
        let now = Instant::now();
        let appended = match finished {
            Finished::Sweep { workspace, result } => {
                let changed = result.map(|(cursor, changed)| {
                    sweeps.insert(workspace.clone(), cursor);
                    changed
                });
                scheduler.sweep_done(&workspace, changed.as_deref(), now);
                0
            }
            Finished::Repository {
                name,
                report,
                appended,
            } => {
                scheduler.repo_done(&name, &report, now);
                appended
            }
        };
        for change in scheduler.take_mode_changes() {
            log_mode_change(&change);
        }
        if let Some(metrics) = &self.metrics {
            metrics.record_sweep_coverage(
                scheduler
                    .coverage()
                    .into_iter()
                    .map(|row| SweepCoverage {
                        workspace: row.workspace,
                        kind: row.kind.label().to_string(),
                        decided: row.decided,
                        covered: row.covered,
                        pending: row.pending,
                        mode: row.mode.label().to_string(),
                    })
                    .collect(),
            );
        }
        if appended > 0 {
            if let Some(bell) = &self.on_commit {
                bell.notify_one();
            }
        }
        self.progress.send_modify(|progress| {
            progress.polls += 1;
            progress.appended += appended as u64;
        });
    }
}

/// Says who now decides when a kind is polled in a workspace, and why.
fn log_mode_change(change: &ModeChange) {
    let ModeChange {
        workspace,
        kind,
        mode,
        decided,
        covered,
    } = change;
    let kind = kind.label();
    match mode {
        SweepMode::Fallback => warn!(
            workspace,
            kind,
            covered,
            decided,
            "the workspace sweep had flagged only {covered} of the last {decided} {kind} \
             activities that direct polls found (below {THRESHOLD_PERCENT} %): {kind} are \
             polled per repository again in this workspace"
        ),
        SweepMode::Driving => info!(
            workspace,
            kind,
            covered,
            decided,
            "the workspace sweep had flagged {covered} of the last {decided} {kind} \
             activities first: it now decides when {kind} are polled in this workspace, \
             with an hourly safety net per repository"
        ),
        SweepMode::Measuring => {}
    }
}

fn failed_work(work: Work) -> Finished {
    match work {
        Work::Sweep { workspace } => Finished::Sweep {
            workspace,
            result: None,
        },
        Work::Repository { name, .. } => Finished::Repository {
            name,
            report: RepoReport::new(Outcome::Failed),
            appended: 0,
        },
    }
}

async fn sweep<S: PollStore>(
    context: &PollContext<S>,
    workspace: &str,
    mut cursor: SweepCursor,
) -> Option<(SweepCursor, Vec<String>)> {
    match context
        .client
        .sweep(workspace, diff::sweep_since(&cursor))
        .await
    {
        Ok(repos) => {
            let changed = diff::sweep(&mut cursor, &repos);
            if !changed.is_empty() {
                debug!(?changed, "sweep flagged repositories");
            }
            Some((cursor, changed))
        }
        Err(error) => {
            debug!(%error, "workspace sweep failed; repositories are still polled");
            None
        }
    }
}

/// One poll of one repository: the baseline, or the due lanes. Returns the report for
/// the scheduler and how many activities were appended.
async fn poll_repository<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    lanes: Lanes,
) -> (RepoReport, usize) {
    let read = context
        .store
        .cursor::<RepoCursor>(name)
        .and_then(|cursor| Ok((cursor, context.store.wants(name)?)));
    let (cursor, wants) = match read {
        Ok(read) => read,
        Err(error) => {
            error!(%error, "cannot read the repository's cursor or subscriptions");
            return (RepoReport::new(Outcome::Failed), 0);
        }
    };
    let mut poll = match cursor {
        None => baseline(context, name, &wants).await,
        Some(cursor) => lanes_poll(context, name, lanes, cursor, &wants).await,
    };
    let appended = match &poll.cursor {
        Some(cursor) if poll.report.done.any() || poll.error.is_none() => {
            match context
                .store
                .commit_poll(name, cursor, &poll.activities)
                .await
            {
                Ok(PollCommit::Committed { appended }) => {
                    poll.report.found = found(cursor, &poll.activities);
                    appended
                }
                Ok(PollCommit::Unwatched) => {
                    poll.report.outcome = Outcome::Gone;
                    0
                }
                Err(error) => {
                    store_failed(&error);
                    poll.report.outcome = Outcome::Failed;
                    0
                }
            }
        }
        _ => 0,
    };
    if let Some(error) = &poll.error {
        poll.report.outcome = classify(context, name, error);
    } else if poll.report.outcome == Outcome::Done {
        recovered(context, name);
    }
    if appended > 0 {
        debug!(appended, "activities appended");
    }
    (poll.report, appended)
}

fn store_failed(error: &impl Display) {
    error!(%error, "cannot commit the poll; it will be redone");
}

/// The result of a poll before it is committed.
struct Poll {
    cursor: Option<RepoCursor>,
    activities: Vec<Activity>,
    report: RepoReport,
    error: Option<BitbucketError>,
}

/// What the scheduler learns from a poll. Builds waiting for a status and deployments in
/// progress keep the pipelines lane hot (they are read with it), and wanted builds or
/// deployments keep its routine read.
fn report_for(
    cursor: &RepoCursor,
    wants: &PollWants,
    now: Timestamp,
    done: Lanes,
    activities: usize,
    pushed: bool,
) -> RepoReport {
    RepoReport {
        done,
        activities,
        pushed,
        pipelines_running: cursor.pipelines_running()
            || cursor.builds.pending(now)
            || cursor.deployments.running(),
        pipelines_exist: cursor.pipelines.seen_any
            || !cursor.builds.watched.is_empty()
            || wants.deployments,
        open_pull_requests: cursor.has_open_pull_requests(),
        approvals_tracked: !cursor.approvals.is_empty(),
        has_issues: cursor.has_issues,
        ..RepoReport::new(Outcome::Done)
    }
}

/// What a committed poll found, by the kinds the workspace sweep is checked against
/// (see [`Found`]). A push or new branch counts only where no open pull request has that
/// branch as its source (`cursor` is after the poll, so a pull request opened from the
/// branch in the same poll counts as open).
fn found(cursor: &RepoCursor, activities: &[Activity]) -> Found {
    let pull_request_branch = |branch: &str| {
        cursor
            .pull_requests
            .values()
            .any(|pr| pr.source_branch.as_deref() == Some(branch))
    };
    let mut found = Found::default();
    for activity in activities {
        match &activity.kind {
            // The feed's kinds; an unapproval comes from the approvals lane, which the
            // sweep does not drive.
            ActivityKind::PullRequestCreated { .. }
            | ActivityKind::PullRequestUpdated { .. }
            | ActivityKind::PullRequestApproved { .. }
            | ActivityKind::PullRequestChangesRequested { .. }
            | ActivityKind::PullRequestCommented { .. }
            | ActivityKind::PullRequestMerged { .. }
            | ActivityKind::PullRequestDeclined { .. } => found.pull_requests += 1,
            // A deleted branch has no date of its own: not counted.
            ActivityKind::Push { branch, .. } | ActivityKind::BranchCreated { branch, .. }
                if !pull_request_branch(branch) =>
            {
                found.pushes += 1
            }
            _ => {}
        }
    }
    found
}

/// The first poll: what exists now becomes the cursor; nothing is emitted.
async fn baseline<S: PollStore>(context: &PollContext<S>, name: &str, wants: &PollWants) -> Poll {
    let client = &context.client;
    let read = async {
        let info = client.repository(name).await?;
        let pull_requests = client.recent_pull_requests(name).await?;
        let (feed, _) = client.feed(name, 1, |_| true).await?;
        let (branches, _) = client.branches(name).await?;
        Ok::<_, BitbucketError>(diff::baseline(
            &info,
            &pull_requests,
            &feed,
            &branches,
            context.clock.now(),
        ))
    };
    match read.await {
        Ok(cursor) => {
            info!(
                branches = cursor.branches.len(),
                open_pull_requests = cursor.pull_requests.len(),
                "baseline recorded; activities from now on are reported"
            );
            let all = Lanes {
                feed: true,
                heads: true,
                pipelines: false,
                issues: false,
                approvals: false,
            };
            Poll {
                report: report_for(&cursor, wants, context.clock.now(), all, 0, false),
                cursor: Some(cursor),
                activities: Vec::new(),
                error: None,
            }
        }
        Err(error) => Poll {
            cursor: None,
            activities: Vec::new(),
            report: RepoReport::new(Outcome::Failed),
            error: Some(error),
        },
    }
}

/// The due lanes, one after another. Each lane works on a copy of the cursor that is
/// kept only if the whole lane succeeded.
async fn lanes_poll<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    lanes: Lanes,
    cursor: RepoCursor,
    wants: &PollWants,
) -> Poll {
    let mut cursor = cursor;
    let mut activities = Vec::new();
    let mut done = Lanes::default();
    let mut pushed = false;
    let result = async {
        if lanes.feed {
            let mut next = cursor.clone();
            activities.extend(feed_lane(context, name, &mut next).await?);
            cursor = next;
            done.feed = true;
        }
        if lanes.heads {
            let mut next = cursor.clone();
            let (found, moved) = heads_lane(context, name, &mut next, wants).await?;
            pushed = moved;
            activities.extend(found);
            cursor = next;
            done.heads = true;
        }
        if lanes.pipelines {
            let mut next = cursor.clone();
            activities.extend(pipelines_lane(context, name, &mut next, wants).await?);
            cursor = next;
            done.pipelines = true;
        }
        if lanes.issues {
            let mut next = cursor.clone();
            activities.extend(issues_lane(context, name, &mut next).await?);
            cursor = next;
            done.issues = true;
        }
        if lanes.approvals {
            let mut next = cursor.clone();
            activities.extend(approvals_lane(context, name, &mut next).await?);
            cursor = next;
            done.approvals = true;
        }
        Ok::<_, BitbucketError>(())
    }
    .await;
    let now = context.clock.now();
    let report = report_for(&cursor, wants, now, done, activities.len(), pushed);
    Poll {
        cursor: Some(cursor),
        activities,
        report,
        error: result.err(),
    }
}

async fn feed_lane<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
) -> Result<Vec<Activity>, BitbucketError> {
    let (entries, complete) = {
        let seen = &*cursor;
        context
            .client
            .feed(name, MAX_FEED_PAGES, |page| {
                diff::feed_page_is_enough(seen, page)
            })
            .await?
    };
    if !complete && !diff::feed_page_is_enough(cursor, &entries) {
        warn!(
            pages = MAX_FEED_PAGES,
            "the pull request feed had more new entries than one poll reads; older ones are skipped"
        );
    }
    let mut activities = diff::feed(cursor, name, &entries);
    activities.extend(reviewer_checks(context, name, cursor).await?);
    Ok(activities)
}

/// Reads the reviewers of the pull requests whose updates may have added some (the feed
/// does not say who): at most [`MAX_REVIEWER_CHECKS`] per poll, the rest next time.
async fn reviewer_checks<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
) -> Result<Vec<Activity>, BitbucketError> {
    let due: Vec<u64> = cursor
        .reviewer_checks
        .keys()
        .rev()
        .take(MAX_REVIEWER_CHECKS)
        .copied()
        .collect();
    let mut activities = Vec::new();
    for id in due {
        match context.client.pull_request(name, id).await {
            Ok(detail) => activities.extend(diff::reviewers(cursor, name, &detail)),
            Err(error) if error.is_broken_repository() => {
                cursor.reviewer_checks.remove(&id);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(activities)
}

/// Branch heads (pushes, branches created and deleted), and the tags when a subscriber
/// wants them. A head pushed to a branch whose builds are wanted is watched.
async fn heads_lane<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
    wants: &PollWants,
) -> Result<(Vec<Activity>, bool), BitbucketError> {
    let now = context.clock.now();
    let (branches, complete) = context.client.branches(name).await?;
    let changes = diff::branches(cursor, name, &branches, complete, now);
    let pushed = !changes.moved.is_empty() || !changes.activities.is_empty();
    let created = changes.activities.iter().filter_map(|a| match &a.kind {
        ActivityKind::BranchCreated { branch, head } => Some((branch, head)),
        _ => None,
    });
    let moved = changes.moved.iter().map(|m| (&m.name, &m.head));
    let pushed_heads: Vec<(String, String)> = created
        .chain(moved)
        .filter(|(branch, _)| wants.builds_of_branch(branch))
        .map(|(branch, head)| (branch.clone(), head.clone()))
        .collect();
    for (branch, head) in &pushed_heads {
        diff::watch_pushed_head(cursor, branch, head, now);
    }
    let mut activities = changes.activities;
    if wants.tags {
        let (tags, complete) = context.client.tags(name).await?;
        activities.extend(diff::tags(cursor, name, &tags, complete, now));
    } else {
        cursor.tags = None;
    }
    for moved in &changes.moved {
        let listed = context
            .client
            .commits_between(name, &moved.head, &moved.previous_head, MAX_COMMITS)
            .await;
        let (commits, more) = match listed {
            Ok(listed) => listed,
            // The old head may be gone after a force push: report the push unlisted.
            Err(error) if error.is_broken_repository() => (Vec::new(), true),
            Err(error) => return Err(error),
        };
        activities.push(diff::push(name, moved, &commits, more, now));
    }
    Ok((activities, pushed))
}

/// Pipelines, then (when subscribers want them) the watched heads' build statuses and
/// the deployments.
async fn pipelines_lane<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
    wants: &PollWants,
) -> Result<Vec<Activity>, BitbucketError> {
    let page = match context.client.pipelines(name).await {
        Ok(page) => page,
        // Pipelines not enabled: nothing to watch, not a broken repository.
        Err(error) if error.is_broken_repository() => Vec::new(),
        Err(error) => return Err(error),
    };
    let now = context.clock.now();
    let mut activities = diff::pipelines(cursor, name, &page, now);
    let pipelines_moved = !activities.is_empty() || cursor.pipelines_running();
    if wants.builds.is_some() {
        activities.extend(builds_step(context, name, cursor, now).await?);
    } else {
        diff::forget_builds(cursor);
    }
    if !wants.deployments {
        diff::forget_deployments(cursor);
    } else if cursor.deployments.due(pipelines_moved, now) {
        activities.extend(deployments_step(context, name, cursor, now).await?);
    }
    Ok(activities)
}

/// One request per watched head: its statuses. A head Bitbucket no longer has is let go.
async fn builds_step<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
    now: Timestamp,
) -> Result<Vec<Activity>, BitbucketError> {
    diff::watch_pull_request_heads(cursor, now);
    let mut activities = Vec::new();
    for head in cursor.builds.watched_heads() {
        match context.client.commit_statuses(name, &head).await {
            Ok(statuses) => activities.extend(diff::builds(cursor, name, &head, &statuses, now)),
            Err(error) if error.is_broken_repository() => {
                cursor.builds.watched.remove(&head);
            }
            Err(error) => return Err(error),
        }
    }
    diff::retire_builds(cursor, now);
    Ok(activities)
}

/// One request for the newest deployments, and one for the environments' names when a
/// deployment names an environment not seen before.
async fn deployments_step<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
    now: Timestamp,
) -> Result<Vec<Activity>, BitbucketError> {
    let page = match context.client.deployments(name).await {
        Ok(page) => page,
        // Pipelines (and so deployments) not enabled.
        Err(error) if error.is_broken_repository() => Vec::new(),
        Err(error) => return Err(error),
    };
    if !cursor.deployments.unnamed_environments(&page).is_empty() {
        match context.client.environments(name).await {
            Ok(environments) => cursor.deployments.name_environments(&environments),
            Err(error) if error.is_broken_repository() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(diff::deployments(cursor, name, &page, now))
}

async fn issues_lane<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
) -> Result<Vec<Activity>, BitbucketError> {
    let since = cursor.issues.since.unwrap_or(context.clock.now());
    let issues = match context.client.issues(name, since).await {
        Ok(issues) => issues,
        // The issue tracker was turned off.
        Err(error) if error.is_broken_repository() => {
            cursor.has_issues = false;
            return Ok(Vec::new());
        }
        Err(error) => return Err(error),
    };
    let changes = diff::issues(cursor, name, &issues);
    let mut activities = changes.activities;
    for issue in &changes.changed {
        let comments = context
            .client
            .issue_comments(name, issue.id, changes.since.unwrap_or(since))
            .await?;
        activities.extend(diff::issue_comments(name, issue, &comments, changes.since));
    }
    Ok(activities)
}

async fn approvals_lane<S: PollStore>(
    context: &PollContext<S>,
    name: &str,
    cursor: &mut RepoCursor,
) -> Result<Vec<Activity>, BitbucketError> {
    let mut activities = Vec::new();
    for id in cursor.approved_pull_requests() {
        match context.client.pull_request(name, id).await {
            Ok(detail) => {
                activities.extend(diff::approvals(cursor, name, &detail, context.clock.now()))
            }
            Err(error) if error.is_broken_repository() => {
                cursor.approvals.remove(&id);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(activities)
}

/// What a failed poll means for the repository, logged once where repeats would flood.
fn classify<S: PollStore>(context: &PollContext<S>, name: &str, error: &BitbucketError) -> Outcome {
    match error {
        BitbucketError::RateLimited { .. } => Outcome::RateLimited,
        error if error.is_broken_repository() => {
            let reason = error.to_string();
            match context
                .store
                .mark_broken(name, &reason, context.clock.now())
            {
                Ok(true) => warn!(
                    %error,
                    "repository unreachable: marked broken, retried every few hours \
                     (check the name and the credential's access)"
                ),
                Ok(false) => debug!(%error, "repository still unreachable"),
                Err(store) => store_failed(&store),
            }
            Outcome::Broken
        }
        BitbucketError::Unauthorized => {
            if !context.unauthorized_reported.swap(true, Ordering::Relaxed) {
                error!(
                    "Bitbucket refuses the credential (401): check bitbucket.token or \
                     bitbucket.oauth.*; polling continues with backoff"
                );
            }
            Outcome::Failed
        }
        error => {
            warn!(%error, "poll failed; will retry with backoff");
            Outcome::Failed
        }
    }
}

fn recovered<S: PollStore>(context: &PollContext<S>, name: &str) {
    context
        .unauthorized_reported
        .store(false, Ordering::Relaxed);
    match context.store.clear_broken(name) {
        Ok(true) => info!("repository reachable again"),
        Ok(false) => {}
        Err(error) => store_failed(&error),
    }
}
