//! Several replicas on one PostgreSQL store: which of them polls which repository,
//! delivers to which channel, and runs the singletons.
//!
//! Owns [`Leases`] (what this replica holds now, shared with the loops that honour it)
//! and the `leases` component ([`LeaseKeeper`]): every sixth of the lease time-to-live it
//! says this replica is alive, renews what it holds, takes its fair share of the free or
//! expired leases (repositories and channels with queued messages, spread evenly over the
//! live replicas), lets go of what is beyond that share so a replica that joins gets work,
//! and claims `leader`. [`while_leader`] runs a singleton only while this replica leads.
//! On sled there is one replica and it holds everything; no keeper runs.
//!
//! Must never do the work it assigns: the poller, the delivery loop and the singletons
//! only ask [`Leases`].

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::metrics::{KindLabel, Metrics};
use crate::store::coordination::{LEADER, fair_share};
use crate::store::{ChannelKey, Store, StoreError};

/// What this replica holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Everything: the only replica (sled).
    pub everything: bool,
    pub repositories: BTreeSet<String>,
    pub channels: BTreeSet<ChannelKey>,
    pub leader: bool,
}

/// This replica's leases, as the loops that honour them see them. Cheap to clone.
#[derive(Clone)]
pub struct Leases {
    held: watch::Receiver<Held>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("held", &*self.held.borrow())
            .finish()
    }
}

impl Leases {
    /// The only replica: it holds everything, always.
    pub fn everything() -> Leases {
        let (sender, held) = watch::channel(Held {
            everything: true,
            leader: true,
            ..Held::default()
        });
        // Nothing will ever change: the receiver keeps the last value.
        drop(sender);
        Leases { held }
    }

    /// Nothing yet; the returned sender is the keeper's.
    pub fn empty() -> (Arc<watch::Sender<Held>>, Leases) {
        let (sender, held) = watch::channel(Held::default());
        (Arc::new(sender), Leases { held })
    }

    pub fn holds_repository(&self, name: &str) -> bool {
        let held = self.held.borrow();
        held.everything || held.repositories.contains(name)
    }

    pub fn holds_channel(&self, channel: &ChannelKey) -> bool {
        let held = self.held.borrow();
        held.everything || held.channels.contains(channel)
    }

    pub fn is_leader(&self) -> bool {
        self.held.borrow().leader
    }

    /// The channels held (none listed when everything is).
    pub fn channels(&self) -> Vec<ChannelKey> {
        self.held.borrow().channels.iter().cloned().collect()
    }

    /// Waits until what is held changes; never returns when it cannot change any more.
    async fn changed(&mut self) {
        if self.held.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl crate::slack::delivery::ChannelClaims for Leases {
    fn holds(&self, channel: &ChannelKey) -> bool {
        self.holds_channel(channel)
    }

    fn held(&self) -> Vec<ChannelKey> {
        self.channels()
    }

    fn exclusive(&self) -> bool {
        self.held.borrow().everything
    }
}

/// Runs `run` only while this replica leads: starts it when it becomes the leader and
/// cancels it (its own stop token) when leadership is lost, then waits to lead again.
pub async fn while_leader<F, Fut>(mut leases: Leases, stop: CancellationToken, mut run: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    if leases.held.borrow().everything {
        // The only replica: it always leads.
        return run(stop).await;
    }
    loop {
        while !leases.is_leader() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = leases.changed() => {}
            }
        }
        let term = stop.child_token();
        let mut watching = leases.clone();
        let lost = async {
            while watching.is_leader() {
                watching.changed().await;
            }
        };
        tokio::select! {
            _ = run(term.clone()) => {}
            _ = lost => {
                info!("no longer the leader: the singletons stop here and run on the new leader");
                term.cancel();
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

/// What to do with one kind of lease this tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held and still wanted: renewed.
    pub renew: Vec<String>,
    /// Free (or expired) and within the share: claimed.
    pub take: Vec<String>,
    /// Held but no longer wanted, or beyond the share: released.
    pub release: Vec<String>,
}

/// Plans one kind: of `all` (the work there is), this replica holds `mine`, the others
/// hold `others`; its share is `share`. Keeps what it holds up to the share, takes free
/// work up to it (in `all`'s order, starting at `offset` so replicas start apart), and
/// releases the rest.
pub fn plan(
    all: &[String],
    mine: &BTreeSet<String>,
    others: &BTreeSet<String>,
    share: usize,
    offset: usize,
) -> Plan {
    let wanted: BTreeSet<&String> = all.iter().collect();
    let mut plan = Plan::default();
    for name in mine {
        if wanted.contains(name) && plan.renew.len() < share {
            plan.renew.push(name.clone());
        } else {
            plan.release.push(name.clone());
        }
    }
    let room = share.saturating_sub(plan.renew.len());
    if room > 0 && !all.is_empty() {
        let start = offset % all.len();
        plan.take = all[start..]
            .iter()
            .chain(&all[..start])
            .filter(|name| !mine.contains(*name) && !others.contains(*name))
            .take(room)
            .cloned()
            .collect();
    }
    plan
}

fn repository_lease(name: &str) -> String {
    format!("repo:{name}")
}

fn channel_lease((team, channel): &ChannelKey) -> String {
    format!("channel:{team}:{channel}")
}

fn channel_of(lease: &str) -> Option<ChannelKey> {
    let rest = lease.strip_prefix("channel:")?;
    let (team, channel) = rest.split_once(':')?;
    Some((team.to_owned(), channel.to_owned()))
}

/// The `leases` component: keeps this replica's leases.
pub struct LeaseKeeper {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub ttl: Duration,
    pub metrics: Metrics,
    pub held: Arc<watch::Sender<Held>>,
}

impl LeaseKeeper {
    pub async fn run(self, stop: CancellationToken) {
        info!(
            replica = self.store.coordination.replica_id(),
            ttl_secs = self.ttl.as_secs(),
            "sharing the work with the other replicas through leases"
        );
        // Every sixth of the TTL: a lease left by a dead replica is taken at most that
        // long after it expires, so a failover takes at most TTL + TTL/6.
        let mut ticks = tokio::time::interval(self.ttl / 6);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let store = self.store.clone();
            let now = self.clock.now();
            let (ttl, current) = (self.ttl, self.held.borrow().clone());
            let tick = tokio::task::spawn_blocking(move || keep(&store, &current, now, ttl))
                .await
                .map_err(|error| error.to_string())
                .and_then(|kept| kept.map_err(|error| error.to_string()));
            match tick {
                Ok((held, takeovers)) => {
                    renewed = tokio::time::Instant::now();
                    if takeovers > 0 {
                        info!(takeovers, "took over leases a stopped replica held");
                        self.metrics.lease_takeovers.inc_by(takeovers as u64);
                    }
                    self.publish(held);
                }
                Err(error) if renewed.elapsed() >= self.ttl * 2 / 3 => {
                    // The leases may expire before the next try: stop the work they
                    // guard rather than risk doing it beside their next holder.
                    warn!(%error, "could not renew leases in time: this replica stops polling and delivering until it can");
                    self.publish(Held::default());
                }
                Err(error) => warn!(%error, "could not renew leases; trying again"),
            }
        }
        // A clean stop hands everything over at once instead of after the TTL.
        let held = self.held.borrow().clone();
        let mut names: Vec<String> = held
            .repositories
            .iter()
            .map(|n| repository_lease(n))
            .collect();
        names.extend(held.channels.iter().map(channel_lease));
        if held.leader {
            names.push(LEADER.to_owned());
        }
        self.held.send_replace(Held::default());
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.coordination.release(&names)).await {
            Ok(Ok(())) => info!("released this replica's leases"),
            Ok(Err(error)) => warn!(%error, "could not release leases; they expire by themselves"),
            Err(error) => warn!(%error, "the lease release task failed"),
        }
    }

    /// Shares what is held with the loops that honour it, and in `/metrics`.
    fn publish(&self, held: Held) {
        self.record(&held);
        self.held.send_if_modified(|current| {
            let changed = *current != held;
            *current = held;
            changed
        });
    }

    fn record(&self, held: &Held) {
        for (kind, count) in [
            ("repo", held.repositories.len()),
            ("channel", held.channels.len()),
            ("leader", usize::from(held.leader)),
        ] {
            self.metrics
                .leases_held
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(count as i64);
        }
    }
}

/// One tick: heartbeat, then renew, take and release each kind. What is held afterwards,
/// and how many leases were taken over.
fn keep(
    store: &Store,
    current: &Held,
    now: jiff::Timestamp,
    ttl: Duration,
) -> Result<(Held, usize), StoreError> {
    let coordination = &store.coordination;
    coordination.heartbeat(now)?;
    // Alive: seen within two thirds of the TTL (four heartbeats), so the share grows to
    // a dead replica's work before its leases expire.
    let live = coordination.live_replicas(now, ttl * 2 / 3)?;
    let others = coordination.held_by_others(now)?;
    // Replicas start their search at different places, so they do not all reach for the
    // same free leases at once.
    let offset = coordination.replica_id().bytes().fold(0usize, |sum, byte| {
        sum.wrapping_mul(31).wrapping_add(byte as usize)
    });
    let mut takeovers = 0;

    let repositories: Vec<String> = store
        .repositories
        .names()?
        .iter()
        .map(|name| repository_lease(name))
        .collect();
    let mine: BTreeSet<String> = current
        .repositories
        .iter()
        .map(|name| repository_lease(name))
        .collect();
    let repos = apply(
        store,
        plan(
            &repositories,
            &mine,
            &others,
            fair_share(repositories.len(), live),
            offset,
        ),
        now,
        ttl,
        &mut takeovers,
    )?;

    let channels: Vec<String> = store
        .deliveries
        .queued_channels()?
        .iter()
        .map(channel_lease)
        .collect();
    let mine: BTreeSet<String> = current.channels.iter().map(channel_lease).collect();
    let channels = apply(
        store,
        plan(
            &channels,
            &mine,
            &others,
            fair_share(channels.len(), live),
            offset,
        ),
        now,
        ttl,
        &mut takeovers,
    )?;

    let leader = coordination.claim(&[LEADER.to_owned()], now, ttl)?;
    takeovers += leader.takeovers;
    Ok((
        Held {
            everything: false,
            repositories: repos
                .iter()
                .filter_map(|lease| lease.strip_prefix("repo:").map(str::to_owned))
                .collect(),
            channels: channels
                .iter()
                .filter_map(|lease| channel_of(lease))
                .collect(),
            leader: leader.held.contains(LEADER),
        },
        takeovers,
    ))
}

/// Carries out a plan: releases first, then claims (renewals and new ones together).
fn apply(
    store: &Store,
    plan: Plan,
    now: jiff::Timestamp,
    ttl: Duration,
    takeovers: &mut usize,
) -> Result<BTreeSet<String>, StoreError> {
    store.coordination.release(&plan.release)?;
    let mut wanted = plan.renew;
    wanted.extend(plan.take);
    let claimed = store.coordination.claim(&wanted, now, ttl)?;
    *takeovers += claimed.takeovers;
    Ok(claimed.held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        names(list).into_iter().collect()
    }

    #[test]
    fn a_replica_takes_free_work_up_to_its_share() {
        let all = names(&["a", "b", "c", "d"]);
        let plan = plan(&all, &set(&[]), &set(&["a"]), 2, 0);
        assert_eq!(plan.take, names(&["b", "c"]));
        assert!(plan.renew.is_empty() && plan.release.is_empty());
    }

    #[test]
    fn a_replica_beyond_its_share_lets_go_so_a_new_one_gets_work() {
        let all = names(&["a", "b", "c", "d"]);
        // Two replicas now: a share of 2; this one held all four.
        let plan = plan(&all, &set(&["a", "b", "c", "d"]), &set(&[]), 2, 0);
        assert_eq!(plan.renew, names(&["a", "b"]));
        assert_eq!(plan.release, names(&["c", "d"]));
        assert!(plan.take.is_empty());
    }

    #[test]
    fn work_that_is_gone_is_released_and_the_offset_spreads_the_search() {
        let all = names(&["a", "b", "c"]);
        let plan = plan(&all, &set(&["x"]), &set(&[]), 2, 2);
        assert_eq!(plan.release, names(&["x"]));
        assert_eq!(plan.take, names(&["c", "a"]));
    }

    #[test]
    fn lease_names_round_trip() {
        let channel = ("T1".to_owned(), "C1".to_owned());
        assert_eq!(channel_of(&channel_lease(&channel)), Some(channel));
        assert_eq!(channel_of("repo:acme/api"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_singleton_runs_only_while_this_replica_leads() {
        let (sender, leases) = Leases::empty();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let task = {
            let (runs, stop) = (runs.clone(), stop.clone());
            tokio::spawn(while_leader(leases, stop, move |term| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    term.cancelled().await;
                }
            }))
        };
        tokio::task::yield_now().await;
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "not the leader"
        );
        sender.send_modify(|held| held.leader = true);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "leading: runs"
        );
        sender.send_modify(|held| held.leader = false);
        tokio::time::sleep(Duration::from_millis(1)).await;
        sender.send_modify(|held| held.leader = true);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "stopped when leadership was lost, started again when regained"
        );
        stop.cancel();
        task.await.expect("ends on stop");
    }
}
