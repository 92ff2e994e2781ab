//! The `[upgrade]` section: the permission-upgrade campaign's dates and extra admins
//! ([`UpgradeConfig`]), and the checks that span its dates (announce before available,
//! deadline after available).
//!
//! Owns every message about an `upgrade.*` key. Must never decide anything about the
//! campaign itself (`upgrade::campaign` does) and never read another section's keys.

use super::ConfigProblem;
use super::raw::Reader;

/// The permission-upgrade campaign's dates (`[upgrade]`).
#[derive(Debug, Clone)]
pub struct UpgradeConfig {
    pub schedule: crate::upgrade::campaign::CampaignSchedule,
    /// Slack user ids told about upgrades besides the workspace's admins and installer.
    pub admins: Vec<String>,
}

/// Reads the `upgrade.*` keys, in a fixed order so problems are listed in a stable order.
pub(super) fn read(reader: &mut Reader) -> UpgradeConfig {
    UpgradeConfig {
        schedule: crate::upgrade::campaign::CampaignSchedule {
            announce_at: reader.optional_timestamp("upgrade.announce_at"),
            available_at: reader.optional_timestamp("upgrade.available_at"),
            deadline: reader.optional_timestamp("upgrade.deadline"),
            reminder_interval: jiff::SignedDuration::from_secs(reader.integer(
                "upgrade.reminder_interval_secs",
                60,
                30 * 24 * 3600,
            ) as i64),
        },
        admins: user_ids(reader, "upgrade.admins"),
    }
}

/// The checks that need two `upgrade.*` dates at once.
pub(super) fn check(upgrade: &UpgradeConfig) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let dates = &upgrade.schedule;
    match (dates.announce_at, dates.available_at) {
        (Some(_), None) => problems.push(ConfigProblem::new(
            "upgrade.announce_at",
            "needs upgrade.available_at: the announcement says when the update becomes available",
        )),
        (Some(announce), Some(available)) if announce > available => {
            problems.push(ConfigProblem::new(
                "upgrade.announce_at",
                "must not be later than upgrade.available_at",
            ))
        }
        _ => {}
    }
    if let (Some(available), Some(deadline)) = (dates.available_at, dates.deadline) {
        if deadline <= available {
            problems.push(ConfigProblem::new(
                "upgrade.deadline",
                "must be later than upgrade.available_at, or admins could never update in time",
            ));
        }
    }
    problems
}

/// A comma-separated list of Slack user ids (`U123,W456`), possibly empty.
fn user_ids(reader: &mut Reader, key: &str) -> Vec<String> {
    let Some(raw) = reader.take(key) else {
        return Vec::new();
    };
    let ids: Vec<String> = raw
        .text
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = ids.iter().find(|id| {
        !id.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    }) {
        reader.problem(
            key,
            format!(
                "`{bad}` is not a Slack user id such as U0123ABCD (from {})",
                raw.origin
            ),
        );
        return Vec::new();
    }
    ids
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{APP, env, problems};

    #[test]
    fn upgrade_dates_and_admins() {
        let config = Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__UPGRADE__DEADLINE", "2026-12-11T00:00:00Z"),
                ("BITBUCKET_SLACK__UPGRADE__ADMINS", "U1, U2"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.upgrade.admins, vec!["U1", "U2"]);
        assert_eq!(
            config.upgrade.schedule.deadline.map(|d| d.as_second()),
            Some(1_796_947_200)
        );
        assert!(config.upgrade.schedule.available_at.is_none());
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                ("BITBUCKET_SLACK__UPGRADE__AVAILABLE_AT", "next tuesday"),
                ("BITBUCKET_SLACK__UPGRADE__ADMINS", "u1"),
            ]),
        ));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("upgrade.available_at: `next tuesday` is not an RFC 3339 time")
        );
        assert!(lines[1].starts_with("upgrade.admins: `u1` is not a Slack user id"));
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                (
                    "BITBUCKET_SLACK__UPGRADE__ANNOUNCE_AT",
                    "2026-12-20T00:00:00Z",
                ),
                (
                    "BITBUCKET_SLACK__UPGRADE__AVAILABLE_AT",
                    "2026-12-10T00:00:00Z",
                ),
                ("BITBUCKET_SLACK__UPGRADE__DEADLINE", "2026-12-01T00:00:00Z"),
            ]),
        ));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("upgrade.announce_at: must not be later than upgrade.available_at")
        );
        assert!(lines[1].starts_with("upgrade.deadline: must be later than upgrade.available_at"));
        let lines = problems(Config::load(
            None,
            &env(&[
                APP,
                (
                    "BITBUCKET_SLACK__UPGRADE__ANNOUNCE_AT",
                    "2026-12-20T00:00:00Z",
                ),
            ]),
        ));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("upgrade.announce_at: needs upgrade.available_at"));
    }
}
