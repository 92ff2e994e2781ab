//! Poller simulation: requests per hour and detection latency, in simulated time.
//!
//! Drives the real [`Scheduler`] and [`Budget`] (the code the poller runs) with a virtual
//! clock against a simulated Bitbucket: 100 and 1,000 repositories, a realistic activity
//! rate (per 100 repositories per hour: 10 pull request events and 5 pushes, each push
//! followed by a 3-10 minute pipeline in 70 % of repositories), a budget of 1,000
//! requests an hour (80 % spent). Two activity models: `clustered` (pull request
//! lifecycles: push, create, reviews over hours, merge; busy repositories busier, Zipf)
//! and `uniform` (every event on a random repository, independent: the worst case for
//! adaptive intervals). And three sweep models, as the evidence says: pull request
//! activity moves a repository's `updated_on` within milliseconds (recorded responses),
//! pushes may or may not (undocumented): the sweep sees pull request activity and pushes,
//! pull request activity only, or nothing ("blind"). The scheduler measures the sweep's
//! coverage per kind and lets it decide only where it holds, so the blind rows show the
//! fall-back. The naive poll (pull requests + commits + pipelines per repository per
//! minute) is simulated on the same events. Requests are sequential with 250 ms each.
//!
//! Run: `cargo bench --bench poller` (a few seconds once built). Prints the details, then
//! a markdown table of latencies and one of request cost per repository-hour by lane.
//! Under `cargo test` only a smoke run of one scenario happens.

use std::collections::BTreeMap;
use std::time::Duration;

use bitbucket_slack::bitbucket::budget::Budget;
use bitbucket_slack::bitbucket::schedule::{
    CoverageRow, Found, Lanes, Outcome, RepoReport, Scheduler, Work,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const BASE: Duration = Duration::from_secs(60);
const REQUEST_TIME: f64 = 0.25;
/// Hours before measuring: at least two, and until every repository's first poll (its
/// baseline, about five requests, sharing the budget with the polls of the repositories
/// already baselined) is done, so the rows show the steady state.
fn warm_up_h(repositories: usize) -> f64 {
    let allowance = f64::from(LIMIT * PERCENT / 100);
    (repositories as f64 * 10.0 / allowance).max(2.0)
}
const MEASURE_H: f64 = 8.0;
const LIMIT: u32 = 1000;
const PERCENT: u32 = 80;
const FEED_PAGE: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PullRequest,
    Push,
    Pipeline,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::PullRequest => "PR events",
            Kind::Push => "pushes",
            Kind::Pipeline => "pipelines",
        }
    }
}

/// Something that happens in a simulated repository, at `at` seconds.
#[derive(Debug, Clone)]
struct Event {
    at: f64,
    kind: Kind,
    /// For pipelines: when the run ends (its "started" is `at`).
    until: f64,
    detected: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Repo {
    events: Vec<Event>,
    /// Open pull requests as (created, closed) intervals.
    open: Vec<(f64, f64)>,
    has_pipelines: bool,
}

impl Repo {
    fn open_at(&self, t: f64) -> bool {
        self.open.iter().any(|(from, to)| *from <= t && t < *to)
    }
}

/// What the simulated workspace sweep sees move `updated_on`.
#[derive(Clone, Copy)]
struct SweepModel {
    pull_requests: bool,
    pushes: bool,
}

impl SweepModel {
    const ALL: [(SweepModel, &'static str); 3] = [
        (
            SweepModel {
                pull_requests: true,
                pushes: true,
            },
            "sees PRs and pushes",
        ),
        (
            SweepModel {
                pull_requests: true,
                pushes: false,
            },
            "sees PRs, not pushes",
        ),
        (
            SweepModel {
                pull_requests: false,
                pushes: false,
            },
            "blind",
        ),
    ];

    fn sees(self, kind: Kind) -> bool {
        match kind {
            Kind::PullRequest => self.pull_requests,
            Kind::Push => self.pushes,
            Kind::Pipeline => false,
        }
    }
}

/// The lanes whose requests are counted, for the cost per repository-hour.
const LANES: [&str; 6] = ["sweep", "baseline", "feed", "heads", "commits", "pipelines"];

#[derive(Clone, Copy)]
enum Model {
    Clustered,
    Uniform,
}

fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        x -= w;
        if x <= 0.0 {
            return i;
        }
    }
    weights.len() - 1
}

fn push(repo: &mut Repo, rng: &mut StdRng, at: f64) {
    repo.events.push(Event {
        at,
        kind: Kind::Push,
        until: at,
        detected: None,
    });
    if repo.has_pipelines {
        let start = at + 20.0;
        repo.events.push(Event {
            at: start,
            kind: Kind::Pipeline,
            until: start + rng.random_range(180.0..600.0),
            detected: None,
        });
    }
}

fn pr_event(repo: &mut Repo, at: f64) {
    repo.events.push(Event {
        at,
        kind: Kind::PullRequest,
        until: at,
        detected: None,
    });
}

/// The simulated world: `n` repositories over `hours`, with per-100-repository rates.
fn world(n: usize, model: Model, seed: u64) -> Vec<Repo> {
    let mut rng = StdRng::seed_from_u64(seed);
    let horizon = (warm_up_h(n) + MEASURE_H) * 3600.0;
    let mut repos: Vec<Repo> = (0..n)
        .map(|_| Repo {
            has_pipelines: rng.random_bool(0.7),
            ..Repo::default()
        })
        .collect();
    let scale = n as f64 / 100.0;
    match model {
        Model::Clustered => {
            let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / (rank as f64).powf(1.1)).collect();
            // Two pull requests an hour per 100 repositories, five events each.
            let mut t = -6.0 * 3600.0;
            while t < horizon {
                t += exp(&mut rng, 3600.0 / (2.0 * scale));
                let repo = &mut repos[pick(&mut rng, &weights)];
                push(repo, &mut rng, t);
                let created = t + rng.random_range(60.0..600.0);
                pr_event(repo, created);
                let mut reviews: Vec<f64> =
                    (0..3).map(|_| created + exp(&mut rng, 5400.0)).collect();
                reviews.sort_by(f64::total_cmp);
                for review in &reviews {
                    pr_event(repo, *review);
                }
                let merged = reviews[2] + rng.random_range(300.0..3600.0);
                pr_event(repo, merged);
                push(repo, &mut rng, merged);
                repo.open.push((created, merged));
            }
            // One more push an hour per 100 repositories, outside pull requests.
            let mut t = 0.0;
            while t < horizon {
                t += exp(&mut rng, 3600.0 / scale);
                let i = pick(&mut rng, &weights);
                push(&mut repos[i], &mut rng, t);
            }
        }
        Model::Uniform => {
            let mut t = 0.0;
            while t < horizon {
                t += exp(&mut rng, 3600.0 / (15.0 * scale));
                let i = rng.random_range(0..n);
                if rng.random_bool(10.0 / 15.0) {
                    pr_event(&mut repos[i], t);
                    repos[i].open.push((t - 3600.0, t + 3600.0));
                } else {
                    push(&mut repos[i], &mut rng, t);
                }
            }
        }
    }
    for repo in &mut repos {
        repo.events.retain(|e| e.at >= 0.0 && e.at < horizon);
        repo.events.sort_by(|a, b| a.at.total_cmp(&b.at));
    }
    repos
}

fn name(i: usize) -> String {
    format!("acme/repo-{i:04}")
}

/// The simulation state around the real scheduler and budget.
struct Sim {
    t0: Instant,
    now: f64,
    budget: Budget,
    scheduler: Scheduler,
    repos: Vec<Repo>,
    baselined: Vec<bool>,
    pipelines_seen: Vec<bool>,
    last_sweep: f64,
    sweep_model: SweepModel,
    requests: Vec<(f64, &'static str)>,
}

impl Sim {
    fn instant(&self, t: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(t)
    }

    /// One request of `lane`: waits for the budget, then takes `REQUEST_TIME`. Returns
    /// its time.
    fn request(&mut self, lane: &'static str) -> f64 {
        loop {
            match self.budget.try_acquire(self.instant(self.now)) {
                Ok(()) => break,
                Err(at) => self.now = (at - self.t0).as_secs_f64(),
            }
        }
        let at = self.now;
        self.requests.push((at, lane));
        self.now += REQUEST_TIME;
        at
    }

    /// Marks events of `kind` up to `t` detected (at the end of this poll, `self.now`
    /// once the poll is over); returns how many.
    fn detect(&mut self, repo: usize, kind: Kind, t: f64) -> Vec<usize> {
        self.repos[repo]
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == kind && e.detected.is_none() && e.at <= t)
            .map(|(i, _)| i)
            .collect()
    }

    fn poll(&mut self, repo: usize, lanes: Lanes) -> RepoReport {
        let mut found = Vec::new();
        if !self.baselined[repo] {
            for _ in 0..4 {
                self.request("baseline");
            }
            let at = self.now;
            // History is not reported: mark everything so far as seen.
            for kind in [Kind::PullRequest, Kind::Push, Kind::Pipeline] {
                for i in self.detect(repo, kind, at) {
                    self.repos[repo].events[i].detected = Some(f64::NAN);
                }
            }
            self.baselined[repo] = true;
            return self.report(
                repo,
                Lanes {
                    feed: true,
                    heads: true,
                    ..Lanes::default()
                },
                0,
                false,
            );
        }
        let mut pushed = false;
        let mut sightings = Found::default();
        if lanes.feed {
            let at = self.request("feed");
            let new = self.detect(repo, Kind::PullRequest, at);
            for _ in 1..new.len().div_ceil(FEED_PAGE) {
                self.request("feed");
            }
            sightings.pull_requests = new.len() as u32;
            found.extend(new);
        }
        if lanes.heads {
            let at = self.request("heads");
            let new = self.detect(repo, Kind::Push, at);
            pushed = !new.is_empty();
            // Every simulated push is outside pull requests (a branch's first push
            // precedes its pull request; merges land on the destination).
            sightings.pushes = new.len() as u32;
            for _ in &new {
                self.request("commits");
            }
            found.extend(new);
        }
        let mut running = false;
        if lanes.pipelines {
            let at = self.request("pipelines");
            let new = self.detect(repo, Kind::Pipeline, at);
            running = self.repos[repo]
                .events
                .iter()
                .any(|e| e.kind == Kind::Pipeline && e.at <= at && e.until > at);
            self.pipelines_seen[repo] |= !new.is_empty() || running;
            found.extend(new);
        }
        let done = self.now;
        for i in &found {
            self.repos[repo].events[*i].detected = Some(done);
        }
        let mut report = self.report(repo, lanes, found.len(), pushed);
        report.pipelines_running = running;
        report.found = sightings;
        report
    }

    fn report(&self, repo: usize, done: Lanes, activities: usize, pushed: bool) -> RepoReport {
        RepoReport {
            done,
            activities,
            pushed,
            pipelines_exist: self.pipelines_seen[repo],
            open_pull_requests: self.repos[repo].open_at(self.now),
            ..RepoReport::new(Outcome::Done)
        }
    }

    /// The repositories whose `updated_on` moved since the last sweep, as far as the
    /// sweep model lets it move.
    fn sweep(&mut self) -> Vec<String> {
        let at = self.request("sweep");
        let since = self.last_sweep;
        self.last_sweep = at;
        let model = self.sweep_model;
        (0..self.repos.len())
            .filter(|i| {
                self.repos[*i]
                    .events
                    .iter()
                    .any(|e| model.sees(e.kind) && e.at > since && e.at <= at)
            })
            .map(name)
            .collect()
    }

    fn run(&mut self, horizon: f64) {
        let index: BTreeMap<String, usize> = (0..self.repos.len()).map(|i| (name(i), i)).collect();
        while self.now < horizon {
            let now = self.instant(self.now);
            match self.scheduler.next_work(now) {
                Some(Work::Sweep { workspace }) => {
                    let changed = self.sweep();
                    let end = self.instant(self.now);
                    self.scheduler.sweep_done(&workspace, Some(&changed), end);
                    self.scheduler.take_mode_changes();
                }
                Some(Work::Repository { name, lanes }) => {
                    let repo = index[&name];
                    let report = self.poll(repo, lanes);
                    let end = self.instant(self.now);
                    self.scheduler.repo_done(&name, &report, end);
                    self.scheduler.take_mode_changes();
                }
                None => {
                    let next = self.scheduler.next_due().unwrap_or(now + BASE);
                    self.now = (next - self.t0).as_secs_f64().max(self.now + 0.001);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Stats {
    requests_per_hour: f64,
    /// Requests per repository-hour, by lane.
    lane_cost: BTreeMap<&'static str, f64>,
    /// The sweep's coverage at the end.
    coverage: Vec<CoverageRow>,
    latencies: BTreeMap<Kind, Vec<f64>>,
    missed: BTreeMap<Kind, usize>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn collect(repos: &[Repo], requests: &[(f64, &'static str)]) -> Stats {
    let warm_up = warm_up_h(repos.len());
    let (from, to) = (warm_up * 3600.0, (warm_up + MEASURE_H) * 3600.0);
    let measured = || requests.iter().filter(|(t, _)| *t >= from && *t < to);
    let mut stats = Stats {
        requests_per_hour: measured().count() as f64 / MEASURE_H,
        ..Stats::default()
    };
    for (_, lane) in measured() {
        *stats.lane_cost.entry(lane).or_default() += 1.0 / (MEASURE_H * repos.len().max(1) as f64);
    }
    for event in repos.iter().flat_map(|r| &r.events) {
        if event.at < from || event.at >= to - 1800.0 {
            continue;
        }
        match event.detected {
            Some(at) if !at.is_nan() => stats
                .latencies
                .entry(event.kind)
                .or_default()
                .push(at - event.at),
            _ => *stats.missed.entry(event.kind).or_default() += 1,
        }
    }
    for list in stats.latencies.values_mut() {
        list.sort_by(f64::total_cmp);
    }
    stats
}

fn simulate(n: usize, model: Model, sweep_model: SweepModel) -> Stats {
    let t0 = Instant::now();
    let mut sim = Sim {
        t0,
        now: 0.0,
        budget: Budget::new(LIMIT, PERCENT, t0),
        scheduler: Scheduler::new(BASE).with_request_budget(LIMIT * PERCENT / 100),
        repos: world(n, model, 7),
        baselined: vec![false; n],
        pipelines_seen: vec![false; n],
        last_sweep: 0.0,
        sweep_model,
        requests: Vec::new(),
    };
    let names: Vec<String> = (0..n).map(name).collect();
    sim.scheduler.sync(&names, t0);
    sim.run((warm_up_h(n) + MEASURE_H) * 3600.0);
    let mut stats = collect(&sim.repos, &sim.requests);
    stats.coverage = sim.scheduler.coverage();
    stats
}

/// The naive poll: every repository's pull requests, commits and pipelines every
/// `interval`, round-robin. It sees pull request state changes but neither approvals nor
/// comments; here every pull request event is counted as seen, which flatters it.
fn naive(n: usize, model: Model, interval: f64) -> Stats {
    let mut repos = world(n, model, 7);
    for (i, repo) in repos.iter_mut().enumerate() {
        let phase = interval * i as f64 / n as f64;
        for event in &mut repo.events {
            let polls = ((event.at - phase) / interval).ceil().max(0.0);
            event.detected = Some(phase + polls * interval);
        }
    }
    let mut stats = collect(&repos, &[]);
    stats.requests_per_hour = n as f64 * 3.0 * 3600.0 / interval;
    stats
}

fn fmt_secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: a quick smoke check only.
    if !std::env::args().any(|arg| arg == "--bench") {
        let stats = simulate(100, Model::Clustered, SweepModel::ALL[0].0);
        assert!(stats.requests_per_hour <= f64::from(LIMIT * PERCENT / 100));
        print_stats(
            100,
            "ours, clustered, sweep sees PRs and pushes (smoke run)",
            &stats,
        );
        return;
    }
    let mut rows = Vec::new();
    for n in [100, 1000] {
        for (model, model_name) in [(Model::Clustered, "clustered"), (Model::Uniform, "uniform")] {
            let first = rows.len();
            for (sweep, sweep_name) in SweepModel::ALL {
                let stats = simulate(n, model, sweep);
                let label = format!("ours, {model_name}, sweep {sweep_name}");
                print_stats(n, &label, &stats);
                rows.push((n, label, stats));
            }
            // The naive poll needs an interval matching our p95 on every kind (the sweep
            // seeing pull requests and pushes, the first row).
            let ours = &rows[first].2;
            let equal = [Kind::PullRequest, Kind::Push, Kind::Pipeline]
                .iter()
                .filter_map(|kind| ours.latencies.get(kind))
                .map(|list| percentile(list, 95.0) / 0.95)
                .fold(f64::INFINITY, f64::min)
                .max(60.0);
            for (interval, why) in [(60.0, "every minute"), (equal, "same p95")] {
                let stats = naive(n, model, interval);
                let label = format!("naive, {model_name}, {why} ({})", fmt_secs(interval));
                print_stats(n, &label, &stats);
                rows.push((n, label, stats));
            }
        }
    }
    println!();
    println!(
        "| repos | poller | requests/h | PR events p50 / p95 | pushes p50 / p95 | pipelines p50 / p95 |"
    );
    println!("|---:|---|---:|---|---|---|");
    for (n, label, stats) in &rows {
        let cell = |kind: Kind| {
            let list = stats.latencies.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
            format!(
                "{} / {}",
                fmt_secs(percentile(list, 50.0)),
                fmt_secs(percentile(list, 95.0))
            )
        };
        println!(
            "| {n} | {label} | {:.0} | {} | {} | {} |",
            stats.requests_per_hour,
            cell(Kind::PullRequest),
            cell(Kind::Push),
            cell(Kind::Pipeline)
        );
    }
    println!();
    println!("Requests per repository-hour, by lane (measured hours):");
    println!();
    println!("| repos | poller | sweep | baseline | feed | heads | commits | pipelines | total |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (n, label, stats) in rows
        .iter()
        .filter(|(_, label, _)| label.starts_with("ours"))
    {
        let cells: Vec<String> = LANES
            .iter()
            .map(|lane| format!("{:.3}", stats.lane_cost.get(lane).copied().unwrap_or(0.0)))
            .collect();
        let total: f64 = stats.lane_cost.values().sum();
        println!("| {n} | {label} | {} | {total:.3} |", cells.join(" | "));
    }
}

fn print_stats(n: usize, label: &str, stats: &Stats) {
    println!(
        "{n} repositories, {label}: {:.0} requests/hour",
        stats.requests_per_hour
    );
    for (kind, list) in &stats.latencies {
        println!(
            "  {:<10} n={:<5} p50 {:>9}  p95 {:>9}  undetected after 30 min+: {}",
            kind.label(),
            list.len(),
            fmt_secs(percentile(list, 50.0)),
            fmt_secs(percentile(list, 95.0)),
            stats.missed.get(kind).copied().unwrap_or(0)
        );
    }
    for row in &stats.coverage {
        println!(
            "  sweep coverage, {} {}: {} of {} flagged first, {} pending; mode {:?}",
            row.workspace,
            row.kind.label(),
            row.covered,
            row.decided,
            row.pending,
            row.mode
        );
    }
}
