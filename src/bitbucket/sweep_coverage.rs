//! Pure: how well a workspace's sweep covers each kind of activity, measured at run time,
//! and whether the sweep may therefore decide when that kind is polled.
//!
//! The sweep (one request per workspace per interval) flags repositories whose
//! `updated_on` moved. Pull request activity moves it within milliseconds in recorded
//! responses; whether a plain push does is not documented. So the assumption is measured
//! instead of trusted: every activity a direct poll finds is a sample, *covered* when the
//! sweep had flagged that repository first, *missed* when it had not. The scheduler
//! decides which samples are decided (see `schedule.rs`); this module keeps the last
//! [`WINDOW`] decided samples per workspace and kind, and turns them into a
//! [`SweepMode`]:
//!
//! - `Measuring` until [`MIN_SAMPLES`] samples are decided: polled per repository as
//!   before (the adaptive cadences), while the samples come in;
//! - `Driving` while at least [`THRESHOLD_PERCENT`] % of the window is covered: the sweep
//!   decides, and direct polls of unflagged repositories become a slow safety net;
//! - `Fallback` once coverage falls below that: polled per repository again, until the
//!   window is back at the threshold.
//!
//! Must never do I/O, read a clock or spawn; it knows nothing of repositories or time.

use std::collections::VecDeque;

/// Decided samples kept per workspace and kind (the newest).
pub const WINDOW: usize = 100;
/// Decided samples needed before the sweep may decide, or be refused.
pub const MIN_SAMPLES: usize = 10;
/// The share of samples the sweep must have flagged first.
pub const THRESHOLD_PERCENT: usize = 95;

/// The kinds of activity the sweep is checked against, each on its own lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SweepKind {
    /// The pull request feed.
    PullRequests,
    /// Branch heads, for pushes outside pull requests.
    Pushes,
}

impl SweepKind {
    pub const ALL: [SweepKind; 2] = [SweepKind::PullRequests, SweepKind::Pushes];

    /// The metric label and the word in `status`.
    pub fn label(self) -> &'static str {
        match self {
            SweepKind::PullRequests => "pull_requests",
            SweepKind::Pushes => "pushes",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            SweepKind::PullRequests => 0,
            SweepKind::Pushes => 1,
        }
    }
}

/// Who decides when a kind is polled in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepMode {
    /// Too few decided samples yet: polled per repository.
    Measuring,
    /// The sweep covers this kind: it decides; unflagged repositories are polled rarely.
    Driving,
    /// The sweep missed too much of this kind: polled per repository.
    Fallback,
}

impl SweepMode {
    pub fn label(self) -> &'static str {
        match self {
            SweepMode::Measuring => "measuring",
            SweepMode::Driving => "sweep",
            SweepMode::Fallback => "fallback",
        }
    }
}

/// The coverage of one kind in one workspace.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// The newest decided samples, oldest first: `true` when covered.
    samples: VecDeque<bool>,
    covered: usize,
    mode: SweepMode,
}

impl Default for Coverage {
    fn default() -> Self {
        Self {
            samples: VecDeque::with_capacity(WINDOW),
            covered: 0,
            mode: SweepMode::Measuring,
        }
    }
}

impl Coverage {
    /// Records `count` decided samples, all covered or all missed. Returns the new mode
    /// when it changed.
    pub fn record(&mut self, covered: bool, count: u32) -> Option<SweepMode> {
        for _ in 0..count.min(WINDOW as u32) {
            if self.samples.len() == WINDOW && self.samples.pop_front() == Some(true) {
                self.covered -= 1;
            }
            self.samples.push_back(covered);
            if covered {
                self.covered += 1;
            }
        }
        let mode = self.judge();
        (mode != self.mode).then(|| {
            self.mode = mode;
            mode
        })
    }

    fn judge(&self) -> SweepMode {
        let decided = self.samples.len();
        if decided < MIN_SAMPLES {
            return self.mode;
        }
        if self.covered * 100 >= THRESHOLD_PERCENT * decided {
            SweepMode::Driving
        } else {
            SweepMode::Fallback
        }
    }

    pub fn mode(&self) -> SweepMode {
        self.mode
    }

    /// Decided samples in the window, and how many of them were covered.
    pub fn counts(&self) -> (usize, usize) {
        (self.samples.len(), self.covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_decides_only_after_enough_covered_samples() {
        let mut coverage = Coverage::default();
        assert_eq!(coverage.record(true, 9), None);
        assert_eq!(coverage.mode(), SweepMode::Measuring);
        assert_eq!(coverage.record(true, 1), Some(SweepMode::Driving));
        assert_eq!(coverage.counts(), (10, 10));
        assert_eq!(coverage.record(true, 5), None);
    }

    #[test]
    fn coverage_below_the_threshold_falls_back_and_recovers_at_it() {
        let mut coverage = Coverage::default();
        assert_eq!(coverage.record(true, 19), Some(SweepMode::Driving));
        // 19 of 20 is exactly 95 %: still driving.
        assert_eq!(coverage.record(false, 1), None);
        assert_eq!(coverage.mode(), SweepMode::Driving);
        // 19 of 21 is below.
        assert_eq!(coverage.record(false, 1), Some(SweepMode::Fallback));
        // 37 of 39 is still below; 38 of 40 is back at 95 %.
        assert_eq!(coverage.record(true, 18), None);
        assert_eq!(coverage.record(true, 1), Some(SweepMode::Driving));
        assert_eq!(coverage.counts(), (40, 38));
    }

    #[test]
    fn a_blind_sweep_is_refused_at_the_minimum_sample() {
        let mut coverage = Coverage::default();
        assert_eq!(coverage.record(false, 9), None);
        assert_eq!(coverage.record(false, 1), Some(SweepMode::Fallback));
        assert_eq!(coverage.counts(), (10, 0));
    }

    #[test]
    fn the_window_keeps_the_newest_samples() {
        let mut coverage = Coverage::default();
        coverage.record(false, 50);
        coverage.record(true, 500);
        assert_eq!(coverage.counts(), (WINDOW, WINDOW));
        assert_eq!(coverage.mode(), SweepMode::Driving);
    }
}
