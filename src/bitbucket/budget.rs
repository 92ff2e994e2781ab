//! The request budget of one credential: a sliding-hour log, smooth pacing, and the
//! pause after a 429.
//!
//! Owns the rule "never more than `budget_percent` of the hourly limit in any rolling
//! hour": every request takes a slot from [`Budget::try_acquire`] before it is sent,
//! including retries. Pacing (a token bucket holding 5 % of the hour) spreads requests
//! so a burst at startup cannot spend the hour in a minute. `X-RateLimit-Limit` replaces
//! the configured limit; while `X-RateLimit-NearLimit` is true the pace halves. A 429
//! pauses every request, backing off from 60 s to 15 min with jitter, or for
//! `Retry-After` when Bitbucket sends one.
//!
//! [`Budget`] is pure (time is passed in, jitter too) so the benchmark can drive it in
//! simulated time; [`BudgetGate`] is the async wrapper the client waits on. Must never
//! sleep while holding its lock, or read the wall clock (it uses tokio's monotonic time).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

/// The first pause after a 429.
pub const RATE_LIMIT_BACKOFF_INITIAL: Duration = Duration::from_secs(60);
/// The longest pause after repeated 429s.
pub const RATE_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// The longest any `Retry-After` from Bitbucket is obeyed: a larger (or absurd) one is cut
/// to this, so a single header can never stop polling for longer than an hour.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// The pure budget state. Time comes in as `now`.
#[derive(Debug, Clone)]
pub struct Budget {
    limit_per_hour: u32,
    percent: u32,
    log: VecDeque<Instant>,
    tokens: f64,
    refilled_at: Instant,
    near_limit: bool,
    paused_until: Option<Instant>,
    rate_limited_streak: u32,
    /// Off for a small share spent in bursts (link previews): only the hourly count holds.
    paced: bool,
}

impl Budget {
    pub fn new(limit_per_hour: u32, percent: u32, now: Instant) -> Self {
        let mut budget = Self {
            limit_per_hour: limit_per_hour.max(1),
            percent: percent.clamp(1, 100),
            log: VecDeque::new(),
            tokens: 0.0,
            refilled_at: now,
            near_limit: false,
            paused_until: None,
            rate_limited_streak: 0,
            paced: true,
        };
        budget.tokens = budget.burst();
        budget
    }

    /// A budget without pacing: up to its whole hourly allowance may be spent at once.
    pub fn unpaced(limit_per_hour: u32, percent: u32, now: Instant) -> Self {
        Self {
            paced: false,
            ..Self::new(limit_per_hour, percent, now)
        }
    }

    /// Requests allowed in any rolling hour.
    pub fn allowance(&self) -> usize {
        ((u64::from(self.limit_per_hour) * u64::from(self.percent) / 100).max(1)) as usize
    }

    fn burst(&self) -> f64 {
        (self.allowance() as f64 / 20.0).max(1.0)
    }

    fn rate_per_second(&self) -> f64 {
        let rate = self.allowance() as f64 / HOUR.as_secs_f64();
        if self.near_limit { rate / 2.0 } else { rate }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_second()).min(self.burst());
        self.refilled_at = now;
    }

    fn forget_older_than_an_hour(&mut self, now: Instant) {
        while self
            .log
            .front()
            .is_some_and(|sent| now.saturating_duration_since(*sent) >= HOUR)
        {
            self.log.pop_front();
        }
    }

    /// Takes a slot for one request at `now`, or says when to ask again.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until);
            }
            self.paused_until = None;
        }
        self.forget_older_than_an_hour(now);
        if self.log.len() >= self.allowance() {
            let oldest = *self.log.front().expect("the log is not empty when full");
            return Err(oldest + HOUR);
        }
        self.refill(now);
        if !self.paced {
            self.log.push_back(now);
            return Ok(());
        }
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.rate_per_second();
            return Err(now + Duration::from_secs_f64(wait.max(0.001)));
        }
        self.tokens -= 1.0;
        self.log.push_back(now);
        Ok(())
    }

    /// Requests sent in the hour before `now`.
    pub fn used_in_last_hour(&mut self, now: Instant) -> usize {
        self.forget_older_than_an_hour(now);
        self.log.len()
    }

    /// What an answer's rate-limit headers said (sent only to access tokens).
    pub fn observe(&mut self, now: Instant, limit: Option<u32>, near_limit: Option<bool>) {
        self.refill(now);
        if let Some(limit) = limit.filter(|limit| *limit > 0) {
            self.limit_per_hour = limit;
        }
        if let Some(near) = near_limit {
            self.near_limit = near;
        }
    }

    /// A request was answered without a 429: the next 429 starts the backoff afresh.
    pub fn succeeded(&mut self) {
        self.rate_limited_streak = 0;
    }

    /// A 429 arrived at `now`: pauses every request and returns the pause. `jitter` in
    /// `[0, 1)` stretches the exponential delay by up to a quarter.
    pub fn rate_limited(
        &mut self,
        now: Instant,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        let doubling = 2u32.saturating_pow(self.rate_limited_streak.min(10));
        let base = RATE_LIMIT_BACKOFF_INITIAL
            .saturating_mul(doubling)
            .min(RATE_LIMIT_BACKOFF_MAX);
        let jittered = base
            .mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 4.0)
            .min(RATE_LIMIT_BACKOFF_MAX.max(base));
        let pause = retry_after
            .map_or(jittered, |asked| asked.max(Duration::from_secs(1)))
            .min(RETRY_AFTER_MAX);
        self.rate_limited_streak = self.rate_limited_streak.saturating_add(1);
        let until = now.checked_add(pause).unwrap_or(now);
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        pause
    }

    /// When requests may go again after a 429, if they are paused at `now`.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }
}

/// The hourly count of one credential kept where several replicas see it (the shared
/// store): every request also takes a slot there.
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Takes a slot if fewer than `per_hour` were taken in the rolling hour.
    fn spend(&self, per_hour: u64) -> bool;
}

/// How long a request waits before asking the shared budget again after a refusal.
pub const SHARED_BUDGET_RETRY: Duration = Duration::from_secs(15);

/// The budget shared by every request of one credential.
#[derive(Debug)]
pub struct BudgetGate {
    budget: Mutex<Budget>,
    /// Set with several replicas: the count they share.
    shared: Mutex<Option<std::sync::Arc<dyn SharedBudget>>>,
}

impl BudgetGate {
    pub fn new(limit_per_hour: u32, percent: u32) -> Self {
        Self {
            budget: Mutex::new(Budget::new(limit_per_hour, percent, Instant::now())),
            shared: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Budget) -> T) -> T {
        let mut budget = self
            .budget
            .lock()
            .expect("the budget lock is never held across a panic");
        f(&mut budget)
    }

    /// A gate over [`Budget::unpaced`]: for a share that must answer at once or not at
    /// all (link previews).
    pub fn unpaced(limit_per_hour: u32, percent: u32) -> Self {
        Self {
            budget: Mutex::new(Budget::unpaced(limit_per_hour, percent, Instant::now())),
            shared: Mutex::new(None),
        }
    }

    /// Counts every request also in `shared` (several replicas with one credential), so
    /// together they never exceed the hour. Set once, at start.
    pub fn share(&self, shared: std::sync::Arc<dyn SharedBudget>) {
        *self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(shared);
    }

    /// The shared count's answer for one more request (yes when there is none).
    fn shared_grants(&self) -> bool {
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match shared {
            Some(shared) => shared.spend(self.allowance() as u64),
            None => true,
        }
    }

    /// Takes a slot now, or says `false` without waiting.
    pub fn try_acquire(&self) -> bool {
        self.with(|budget| budget.try_acquire(Instant::now()).is_ok()) && self.shared_grants()
    }

    /// Waits for a slot for one request: this replica's pace first, then the count the
    /// replicas share (refused, it asks again after [`SHARED_BUDGET_RETRY`]).
    pub async fn acquire(&self) {
        loop {
            match self.with(|budget| budget.try_acquire(Instant::now())) {
                Ok(()) if self.shared_grants() => return,
                Ok(()) => tokio::time::sleep(SHARED_BUDGET_RETRY).await,
                Err(at) => tokio::time::sleep_until(at).await,
            }
        }
    }

    pub fn observe(&self, limit: Option<u32>, near_limit: Option<bool>) {
        self.with(|budget| budget.observe(Instant::now(), limit, near_limit));
    }

    pub fn succeeded(&self) {
        self.with(Budget::succeeded);
    }

    /// Pauses every request after a 429; returns how long.
    pub fn rate_limited(&self, retry_after: Option<Duration>) -> Duration {
        let jitter = rand::rng().random_range(0.0..1.0);
        self.with(|budget| budget.rate_limited(Instant::now(), retry_after, jitter))
    }

    pub fn used_in_last_hour(&self) -> usize {
        self.with(|budget| budget.used_in_last_hour(Instant::now()))
    }

    pub fn allowance(&self) -> usize {
        self.with(|budget| budget.allowance())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, secs: f64) -> Instant {
        start + Duration::from_secs_f64(secs)
    }

    /// Takes every slot the budget grants, asking again exactly when told, for `hours`.
    fn granted_times(budget: &mut Budget, start: Instant, hours: u64) -> Vec<Instant> {
        let end = start + HOUR * hours as u32;
        let mut now = start;
        let mut granted = Vec::new();
        while now < end {
            match budget.try_acquire(now) {
                Ok(()) => granted.push(now),
                Err(next) => now = next,
            }
        }
        granted
    }

    #[test]
    fn an_unpaced_share_spends_its_hour_at_once_and_then_refuses() {
        let start = Instant::now();
        let mut budget = Budget::unpaced(1000, 5, start);
        for _ in 0..50 {
            assert!(budget.try_acquire(start).is_ok());
        }
        assert_eq!(budget.try_acquire(start), Err(start + HOUR));
        assert!(budget.try_acquire(at(start, 3600.0)).is_ok());
    }

    #[test]
    fn no_rolling_hour_exceeds_the_allowance() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, 80, start);
        let granted = granted_times(&mut budget, start, 3);
        for (i, first) in granted.iter().enumerate() {
            let in_hour = granted[i..]
                .iter()
                .take_while(|t| **t < *first + HOUR)
                .count();
            assert!(
                in_hour <= 800,
                "{in_hour} requests in the hour from request {i}"
            );
        }
        // Paced, not bursty: the first ten minutes get the burst plus a sixth of the hour.
        let early = granted.iter().filter(|t| **t < at(start, 600.0)).count();
        assert!((130..=180).contains(&early), "{early}");
        assert!(granted.len() >= 2390, "{}", granted.len());
    }

    #[test]
    fn a_learned_limit_and_near_limit_change_the_pace() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, 80, start);
        budget.observe(start, Some(2500), Some(false));
        assert_eq!(budget.allowance(), 2000);
        budget.observe(start, None, Some(true));
        let granted = granted_times(&mut budget, start, 1);
        // Half pace: about 1000 an hour plus the burst.
        assert!((1000..=1150).contains(&granted.len()), "{}", granted.len());
    }

    #[test]
    fn rate_limits_back_off_from_a_minute_to_fifteen_with_jitter() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, 80, start);
        let pauses: Vec<u64> = (0..6)
            .map(|_| budget.rate_limited(start, None, 0.0).as_secs())
            .collect();
        assert_eq!(pauses, vec![60, 120, 240, 480, 900, 900]);
        let jittered = budget.rate_limited(start, None, 0.99);
        assert_eq!(jittered, RATE_LIMIT_BACKOFF_MAX);
        budget.succeeded();
        let fresh = budget.rate_limited(start, None, 0.99).as_secs_f64();
        assert!((60.0..=75.0).contains(&fresh), "{fresh}");
        // Pauses never shorten one already running.
        assert_eq!(budget.try_acquire(at(start, 10.0)), Err(at(start, 900.0)));
    }

    #[test]
    fn retry_after_is_honoured() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, 80, start);
        let pause = budget.rate_limited(start, Some(Duration::from_secs(7)), 0.5);
        assert_eq!(pause, Duration::from_secs(7));
        assert_eq!(budget.try_acquire(at(start, 1.0)), Err(at(start, 7.0)));
        assert_eq!(budget.try_acquire(at(start, 7.0)), Ok(()));
    }

    #[test]
    fn an_enormous_retry_after_is_cut_to_an_hour_without_overflow() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, 80, start);
        let pause = budget.rate_limited(start, Some(Duration::MAX), 0.0);
        assert_eq!(pause, RETRY_AFTER_MAX);
        assert_eq!(budget.try_acquire(at(start, 10.0)), Err(at(start, 3600.0)));
        assert_eq!(budget.try_acquire(at(start, 3600.0)), Ok(()));
    }

    /// A count two replicas share, as the store keeps it: a log of when each slot was
    /// taken, on tokio's (paused) clock.
    #[derive(Debug, Default)]
    struct SharedLog {
        taken: Mutex<Vec<Instant>>,
    }

    impl SharedBudget for SharedLog {
        fn spend(&self, per_hour: u64) -> bool {
            let now = Instant::now();
            let mut taken = self.taken.lock().expect("not poisoned");
            let in_hour = taken
                .iter()
                .filter(|at| now.duration_since(**at) < HOUR)
                .count();
            if in_hour as u64 >= per_hour {
                return false;
            }
            taken.push(now);
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn two_replicas_sharing_a_budget_never_exceed_it_in_any_rolling_hour() {
        let shared = std::sync::Arc::new(SharedLog::default());
        let start = Instant::now();
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let gate = std::sync::Arc::new(BudgetGate::new(1000, 10));
            gate.share(shared.clone());
            replicas.push(gate);
        }
        // Each replica asks as fast as it is let through, for three simulated hours.
        let tasks: Vec<_> = replicas
            .iter()
            .map(|gate| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    while Instant::now() < start + Duration::from_secs(3 * 3600) {
                        gate.acquire().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let taken = shared.taken.lock().expect("not poisoned").clone();
        for (index, at) in taken.iter().enumerate() {
            let in_hour = taken[index..]
                .iter()
                .take_while(|later| later.duration_since(*at) < HOUR)
                .count();
            assert!(in_hour <= 100, "{in_hour} requests in the hour from {at:?}");
        }
        assert!(
            taken.len() >= 290,
            "the shared hour is used, not starved: {}",
            taken.len()
        );
    }
}
