//! The supervisor: runs each long-lived component (delivery, router, poller, upgrade
//! driver, access checks, admin socket, HTTP server, housekeeping, ...) as a named task,
//! restarts one that panics or ends on its own with backoff, counts and logs every
//! failure, shows each component's state (for `/readyz` and `bitbucket-slack status`),
//! and asks the daemon to stop with an error when one keeps failing, so that systemd
//! restarts the whole process. At shutdown it joins every task within a deadline.
//!
//! Owns the component tasks' lifecycle only; what a component does is its own. Never
//! blocks: waits are tokio sleeps bounded by the backoff and by cancellation.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

use crate::metrics::{ComponentLabel, Metrics};

/// Where a component stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Running,
    /// It failed and waits for its next start.
    Restarting,
    /// It failed too often: the daemon is stopping.
    Failed,
    Stopped,
}

/// A component as `/readyz` and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub state: ComponentState,
    pub restarts: u32,
    pub last_failure: Option<String>,
}

/// Every supervised component's status, shared with the HTTP server and the admin socket.
#[derive(Debug, Clone, Default)]
pub struct Components(Arc<Mutex<BTreeMap<String, ComponentStatus>>>);

impl Components {
    pub fn snapshot(&self) -> BTreeMap<String, ComponentStatus> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The components that are not running (for readiness).
    pub fn unhealthy(&self) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|(_, status)| {
                matches!(
                    status.state,
                    ComponentState::Restarting | ComponentState::Failed
                )
            })
            .map(|(name, status)| {
                format!(
                    "component {name} is {}{}",
                    match status.state {
                        ComponentState::Failed => "failing",
                        _ => "restarting",
                    },
                    status
                        .last_failure
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ComponentStatus)) {
        let mut all = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let status = all.entry(name.to_string()).or_insert(ComponentStatus {
            state: ComponentState::Running,
            restarts: 0,
            last_failure: None,
        });
        change(status);
    }
}

/// When to restart and when to give up.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// This many failures within `window` and the daemon stops with an error.
    pub max_failures: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_failures: 5,
            window: Duration::from_secs(600),
        }
    }
}

/// Runs and restarts the components.
pub struct Supervisor {
    components: Components,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// The intake's tasks (the Slack sockets): stopped by their own token and joined
    /// first, before the other components are asked to stop.
    intake: Vec<(&'static str, JoinHandle<()>)>,
    stop: CancellationToken,
    failed: CancellationToken,
    metrics: Metrics,
    policy: RestartPolicy,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("components", &self.components.snapshot())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// `stop` ends every component; `failed` is cancelled when one keeps failing.
    pub fn new(
        stop: CancellationToken,
        failed: CancellationToken,
        metrics: Metrics,
        policy: RestartPolicy,
    ) -> Self {
        Supervisor {
            components: Components::default(),
            tasks: Vec::new(),
            intake: Vec::new(),
            stop,
            failed,
            metrics,
            policy,
        }
    }

    pub fn components(&self) -> Components {
        self.components.clone()
    }

    /// Runs the component `name`: `start` makes a fresh run of it from its parts each
    /// time (a restart starts clean). A run that ends before `stop`, or panics, is a
    /// failure.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = self.supervise(name, self.stop.clone(), start);
        self.tasks.push((name, task));
    }

    /// Runs the intake component `name` like [`Supervisor::spawn`], but stopped by `stop`
    /// (the daemon's shutdown) instead of the supervisor's token, and joined by
    /// [`Supervisor::join_intake`] before the others are stopped.
    pub fn spawn_intake<F, Fut>(&mut self, name: &'static str, stop: CancellationToken, start: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = self.supervise(name, stop, start);
        self.intake.push((name, task));
    }

    fn supervise<F, Fut>(
        &self,
        name: &'static str,
        stop: CancellationToken,
        mut start: F,
    ) -> JoinHandle<()>
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let components = self.components.clone();
        let failed = self.failed.clone();
        let metrics = self.metrics.clone();
        let policy = self.policy;
        components.update(name, |_| {});
        tokio::spawn(
            async move {
                let mut failures: Vec<Instant> = Vec::new();
                let mut backoff = policy.first_backoff;
                loop {
                    components.update(name, |status| status.state = ComponentState::Running);
                    let run = AssertUnwindSafe(start(stop.clone())).catch_unwind().await;
                    if stop.is_cancelled() {
                        components.update(name, |status| status.state = ComponentState::Stopped);
                        return;
                    }
                    let why = match run {
                        Ok(()) => "it stopped on its own".to_string(),
                        Err(panic) => format!("it panicked: {}", panic_message(&*panic)),
                    };
                    metrics
                        .component_failures
                        .get_or_create(&ComponentLabel {
                            component: name.to_string(),
                        })
                        .inc();
                    let now = Instant::now();
                    failures.retain(|at| now.saturating_duration_since(*at) < policy.window);
                    failures.push(now);
                    if failures.len() >= policy.max_failures {
                        error!(component = name, %why, failures = failures.len(), "a component keeps failing: stopping the daemon so that it is restarted");
                        components.update(name, |status| {
                            status.state = ComponentState::Failed;
                            status.last_failure = Some(why);
                        });
                        failed.cancel();
                        return;
                    }
                    error!(component = name, %why, restart_in_ms = backoff.as_millis() as u64, "a component failed; restarting it");
                    components.update(name, |status| {
                        status.state = ComponentState::Restarting;
                        status.restarts += 1;
                        status.last_failure = Some(why);
                    });
                    tokio::select! {
                        _ = stop.cancelled() => {
                            components.update(name, |status| status.state = ComponentState::Stopped);
                            return;
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = backoff.saturating_mul(2).min(policy.max_backoff);
                }
            }
            .instrument(info_span!("component", name)),
        )
    }

    /// Waits for the intake components to end (after their stop token), at most
    /// `deadline`; the ones still running then are aborted and named in the log.
    pub async fn join_intake(&mut self, deadline: Duration) {
        join_all(std::mem::take(&mut self.intake), deadline).await;
    }

    /// Waits for every component to end (after `stop`), at most `deadline`; the ones
    /// still running then are aborted and named in the log.
    pub async fn join(mut self, deadline: Duration) {
        let mut tasks = std::mem::take(&mut self.intake);
        tasks.append(&mut self.tasks);
        join_all(tasks, deadline).await;
    }
}

/// Joins `tasks` within one `deadline`, aborting (and naming) the ones still running.
async fn join_all(tasks: Vec<(&'static str, JoinHandle<()>)>, deadline: Duration) {
    let end = Instant::now() + deadline;
    for (name, mut task) in tasks {
        match tokio::time::timeout_at(end, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(component = name, %error, "a component's task failed at shutdown")
            }
            Err(_) => {
                warn!(
                    component = name,
                    "a component did not stop within the shutdown deadline; aborted"
                );
                task.abort();
            }
        }
    }
}

/// The text of a panic's payload (a `&str` or `String`), else a placeholder.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RestartPolicy {
        RestartPolicy {
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            max_failures: 4,
            window: Duration::from_secs(600),
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_component_is_restarted_with_backoff_and_counted() {
        let stop = CancellationToken::new();
        let failed = CancellationToken::new();
        let metrics = Metrics::default();
        let mut supervisor =
            Supervisor::new(stop.clone(), failed.clone(), metrics.clone(), policy());
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        supervisor.spawn("delivery", move |stop| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 2 {
                    panic!("an overflow in run {run}");
                }
                stop.cancelled().await;
            }
        });
        let components = supervisor.components();
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        let status = components.snapshot()["delivery"].clone();
        assert_eq!(status.state, ComponentState::Restarting);
        assert_eq!(
            status.last_failure.as_deref(),
            Some("it panicked: an overflow in run 0")
        );
        assert_eq!(components.unhealthy().len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted after 1 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "the second backoff is 2 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        let status = components.snapshot()["delivery"].clone();
        assert_eq!(status.state, ComponentState::Running);
        assert_eq!(status.restarts, 2);
        assert!(components.unhealthy().is_empty());
        assert!(!failed.is_cancelled());
        let text = metrics.render();
        assert!(
            text.contains("component_failures_total{component=\"delivery\"} 2"),
            "{text}"
        );
        stop.cancel();
        supervisor.join(Duration::from_secs(5)).await;
        assert_eq!(
            components.snapshot()["delivery"].state,
            ComponentState::Stopped
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_that_keeps_failing_stops_the_daemon() {
        let stop = CancellationToken::new();
        let failed = CancellationToken::new();
        let mut supervisor =
            Supervisor::new(stop.clone(), failed.clone(), Metrics::default(), policy());
        // Returning before stop counts as a failure too.
        supervisor.spawn("router", |_stop| async {});
        let components = supervisor.components();
        tokio::time::timeout(Duration::from_secs(60), failed.cancelled())
            .await
            .expect("the daemon is told to stop");
        let status = components.snapshot()["router"].clone();
        assert_eq!(status.state, ComponentState::Failed);
        assert_eq!(status.restarts, 3);
        assert_eq!(
            status.last_failure.as_deref(),
            Some("it stopped on its own")
        );
        stop.cancel();
        supervisor.join(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn join_aborts_a_component_that_ignores_stop() {
        let stop = CancellationToken::new();
        let mut supervisor = Supervisor::new(
            stop.clone(),
            CancellationToken::new(),
            Metrics::default(),
            policy(),
        );
        supervisor.spawn("stubborn", |_stop| std::future::pending::<()>());
        stop.cancel();
        let started = Instant::now();
        supervisor.join(Duration::from_secs(3)).await;
        assert_eq!(Instant::now() - started, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_intake_stops_and_is_joined_before_the_others_are_asked_to() {
        let intake_stop = CancellationToken::new();
        let background = CancellationToken::new();
        let mut supervisor = Supervisor::new(
            background.clone(),
            CancellationToken::new(),
            Metrics::default(),
            policy(),
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let seen = order.clone();
        supervisor.spawn_intake("sockets", intake_stop.clone(), move |stop| {
            let seen = seen.clone();
            async move {
                stop.cancelled().await;
                seen.lock().expect("lock").push("sockets stopped");
            }
        });
        let seen = order.clone();
        supervisor.spawn("delivery", move |stop| {
            let seen = seen.clone();
            async move {
                stop.cancelled().await;
                seen.lock().expect("lock").push("delivery stopped");
            }
        });
        let components = supervisor.components();
        intake_stop.cancel();
        supervisor.join_intake(Duration::from_secs(1)).await;
        assert_eq!(*order.lock().expect("lock"), ["sockets stopped"]);
        assert_eq!(
            components.snapshot()["sockets"].state,
            ComponentState::Stopped
        );
        assert_eq!(
            components.snapshot()["delivery"].state,
            ComponentState::Running
        );
        background.cancel();
        supervisor.join(Duration::from_secs(1)).await;
        assert_eq!(
            *order.lock().expect("lock"),
            ["sockets stopped", "delivery stopped"]
        );
    }
}
