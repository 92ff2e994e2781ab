//! The `[reminders]` section: review reminders and the personal digest
//! ([`RemindersConfig`]): how late a missed slot may still be sent (`reminders.grace`).
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
    let key = "reminders.grace";
    let mut config = RemindersConfig::default();
    let Some(raw) = reader.take_defaulted(key) else {
        return config;
    };
    match raw.text.trim().parse::<SignedDuration>() {
        Ok(grace) if grace >= SignedDuration::ZERO && grace <= MAX_GRACE => config.grace = grace,
        Ok(_) => reader.problem(
            key,
            format!(
                "`{}` is out of range: allowed 0m to 12h (from {})",
                raw.text, raw.origin
            ),
        ),
        Err(_) => reader.problem(
            key,
            format!(
                "`{}` is not a duration: say a number and a unit, like \"2h\" or \"90m\" (from {})",
                raw.text, raw.origin
            ),
        ),
    }
    config
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
            &env(&[APP, ("BITBUCKET_SLACK__REMINDERS__GRACE", "90m")]),
        )
        .expect("valid");
        assert_eq!(config.reminders.grace, jiff::SignedDuration::from_mins(90));
        let found = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__REMINDERS__GRACE", "soon")]),
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reminders.grace: `soon` is not a duration")),
            "{found:?}"
        );
        let found = problems(Config::load(
            None,
            &env(&[APP, ("BITBUCKET_SLACK__REMINDERS__GRACE", "13h")]),
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("reminders.grace: `13h` is out of range")),
            "{found:?}"
        );
    }
}
