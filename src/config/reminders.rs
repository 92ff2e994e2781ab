//! The `[reminders]` section: review reminders and the personal digest
//! ([`RemindersConfig`]): how late a missed slot may still be sent (`reminders.grace_secs`).
//!
//! Owns every message about a `reminders.*` key. Must never decide what is due (that is
//! `notify::reminders`) and never read another section's keys.

use jiff::SignedDuration;

use super::raw::Reader;

/// The longest grace window: beyond it, a reminder is no longer "this morning's".
pub const MAX_GRACE: SignedDuration = SignedDuration::from_hours(12);

/// Review reminders (`[reminders]`).
#[derive(Debug, Clone)]
pub struct RemindersConfig {
    /// A slot missed (the daemon was down) is still sent when at most this old; older
    /// ones are skipped and logged.
    pub grace: SignedDuration,
}

impl Default for RemindersConfig {
    fn default() -> Self {
        RemindersConfig {
            grace: SignedDuration::from_hours(2),
        }
    }
}

/// Reads the `reminders.*` keys.
pub(super) fn read(reader: &mut Reader) -> RemindersConfig {
    let seconds = reader.integer("reminders.grace_secs", 0, MAX_GRACE.as_secs() as u64);
    RemindersConfig {
        grace: SignedDuration::from_secs(seconds as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::test_support::{APP, env, problems};

    #[test]
    fn the_grace_window_defaults_to_two_hours_and_is_checked() {
        let config = Config::load(None, &env(&[APP])).expect("valid");
        assert_eq!(config.reminders.grace, jiff::SignedDuration::from_hours(2));
        let config = Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__REMINDERS__GRACE_SECS", "5400")]),
        )
        .expect("valid");
        assert_eq!(config.reminders.grace, jiff::SignedDuration::from_mins(90));
        for bad in ["soon", "43201", "-1"] {
            let found = problems(Config::load(
                None,
                &env(&[APP, ("BITBUCKET_SLACK__REMINDERS__GRACE_SECS", bad)]),
            ));
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with("reminders.grace_secs: ")),
                "{bad}: {found:?}"
            );
        }
    }
}
