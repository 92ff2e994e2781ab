//! Permissions: which Slack scopes each feature needs, and what an installation's granted
//! scopes allow (its [`PermissionLevel`]). The permission-upgrade campaign builds on this.
//!
//! Pure: no I/O, no clock. Handlers ask [`is_available`] ("may this workspace use feature
//! X now?") and never look at scopes themselves.

pub mod campaign;
pub mod messages;
pub mod scopes;

pub use scopes::{FEATURES, Feature, FeatureSpec, ScopeSpec, required_scopes, scope_reason};

/// The legacy umbrella scope of a classic (pre-granular) Slack app.
pub const CLASSIC_BOT_SCOPE: &str = "bot";

/// How an installation's granted scopes compare with what this version needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermissionLevel {
    /// A classic app install (the legacy `bot` scope): every granular scope is missing.
    Classic { missing: Vec<&'static str> },
    /// Granular, but some scopes this version needs were not granted.
    Outdated {
        missing: Vec<&'static str>,
        blocked: Vec<Feature>,
    },
    /// Everything this version needs is granted.
    Current,
}

impl PermissionLevel {
    pub fn name(&self) -> &'static str {
        match self {
            PermissionLevel::Classic { .. } => "classic",
            PermissionLevel::Outdated { .. } => "outdated",
            PermissionLevel::Current => "current",
        }
    }

    pub fn missing(&self) -> &[&'static str] {
        match self {
            PermissionLevel::Classic { missing } | PermissionLevel::Outdated { missing, .. } => {
                missing
            }
            PermissionLevel::Current => &[],
        }
    }
}

/// Computes the permission level from the granted scopes.
pub fn permission_level(granted: &[String]) -> PermissionLevel {
    let missing: Vec<&'static str> = required_scopes()
        .into_iter()
        .filter(|scope| !granted.iter().any(|g| g == scope))
        .collect();
    if granted.iter().any(|g| g == CLASSIC_BOT_SCOPE) {
        return PermissionLevel::Classic { missing };
    }
    if missing.is_empty() {
        return PermissionLevel::Current;
    }
    let blocked = FEATURES
        .iter()
        .filter(|spec| !is_available(spec.feature, granted))
        .map(|spec| spec.feature)
        .collect();
    PermissionLevel::Outdated { missing, blocked }
}

/// Whether `feature` may be used by an installation that granted `granted`.
pub fn is_available(feature: Feature, granted: &[String]) -> bool {
    feature
        .spec()
        .scopes
        .iter()
        .all(|scope| granted.iter().any(|g| g == scope.name))
}

/// The features an installation that granted `granted` may use, in table order.
pub fn available_features(granted: &[String]) -> Vec<Feature> {
    FEATURES
        .iter()
        .map(|spec| spec.feature)
        .filter(|feature| is_available(*feature, granted))
        .collect()
}

/// The scopes of `feature` that `granted` lacks, in the table's order.
pub fn missing_for(feature: Feature, granted: &[String]) -> Vec<String> {
    feature
        .spec()
        .scopes
        .iter()
        .filter(|scope| !granted.iter().any(|g| g == scope.name))
        .map(|scope| scope.name.to_string())
        .collect()
}

/// What an installation may do now, by its scopes and the campaign's dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Everything this version has that the scopes allow.
    Open,
    /// The update is available: people not yet linked cannot log in.
    LoginRefused,
    /// The deadline passed: only `help` and `status` answer.
    CommandsRefused,
}

/// The one answer to "may this workspace do that now?" for the upgrade story.
pub fn gate(
    granted: &[String],
    schedule: &campaign::CampaignSchedule,
    now: jiff::Timestamp,
) -> Gate {
    if permission_level(granted) == PermissionLevel::Current {
        return Gate::Open;
    }
    match schedule.phase_at(now) {
        campaign::Phase::Overdue => Gate::CommandsRefused,
        campaign::Phase::Available => Gate::LoginRefused,
        _ => Gate::Open,
    }
}

/// Parses Slack's scope lists: the `x-oauth-scopes` header and oauth.v2.access's `scope`
/// are comma-separated, sometimes with spaces.
pub fn parse_scope_list(text: &str) -> Vec<String> {
    let mut scopes: Vec<String> = text
        .split([',', ' '])
        .map(str::trim)
        .filter(|scope| !scope.is_empty())
        .map(str::to_string)
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(list: &str) -> Vec<String> {
        parse_scope_list(list)
    }

    #[test]
    fn scope_lists_parse_like_slack_sends_them() {
        assert_eq!(
            parse_scope_list("commands,chat:write, im:write ,,commands"),
            vec!["chat:write", "commands", "im:write"]
        );
        assert!(parse_scope_list("").is_empty());
    }

    #[test]
    fn permission_levels() {
        let all = required_scopes().join(",");
        let cases: Vec<(String, &str, Vec<&str>)> = vec![
            (all.clone(), "current", vec![]),
            (format!("{all},extra:scope"), "current", vec![]),
            (
                "bot,commands".into(),
                "classic",
                required_scopes()
                    .into_iter()
                    .filter(|s| *s != "commands")
                    .collect(),
            ),
            (
                all.replace(",links:write", "").replace("links:write,", ""),
                "outdated",
                vec!["links:write"],
            ),
            (String::new(), "outdated", required_scopes()),
        ];
        for (scopes, level, missing) in cases {
            let computed = permission_level(&granted(&scopes));
            assert_eq!(computed.name(), level, "{scopes}");
            assert_eq!(computed.missing(), &missing[..], "{scopes}");
        }
    }

    #[test]
    fn features_needing_missing_scopes_are_unavailable() {
        let old = granted("commands,chat:write,im:write,users:read,team:read");
        assert_eq!(
            available_features(&old),
            vec![
                Feature::SlashCommands,
                Feature::DirectMessages,
                Feature::UserLookup,
                Feature::WorkspaceInfo,
                Feature::PullRequestActions,
                Feature::ReviewReminders
            ]
        );
        assert_eq!(
            missing_for(Feature::ChannelNotifications, &old),
            vec!["chat:write.public", "channels:read", "groups:read"]
        );
        assert_eq!(
            available_features(&granted(&required_scopes().join(","))).len(),
            FEATURES.len()
        );
    }

    #[test]
    fn gates_follow_the_dates_for_outdated_installations_only() {
        let at = |second: i64| jiff::Timestamp::from_second(second).expect("valid");
        let schedule = campaign::CampaignSchedule {
            announce_at: None,
            available_at: Some(at(1000)),
            deadline: Some(at(2000)),
            reminder_interval: jiff::SignedDuration::from_hours(24),
        };
        let outdated = granted("commands,chat:write");
        let current = granted(&required_scopes().join(","));
        assert_eq!(gate(&outdated, &schedule, at(999)), Gate::Open);
        assert_eq!(gate(&outdated, &schedule, at(1000)), Gate::LoginRefused);
        assert_eq!(gate(&outdated, &schedule, at(2000)), Gate::CommandsRefused);
        assert_eq!(gate(&current, &schedule, at(5000)), Gate::Open);
        assert_eq!(
            gate(&outdated, &campaign::CampaignSchedule::default(), at(0)),
            Gate::LoginRefused,
            "no dates: available at once, no deadline"
        );
    }

    #[test]
    fn outdated_names_the_blocked_features() {
        let scopes = required_scopes()
            .into_iter()
            .filter(|s| *s != "im:write")
            .collect::<Vec<_>>()
            .join(",");
        let PermissionLevel::Outdated { blocked, .. } = permission_level(&granted(&scopes)) else {
            panic!("expected outdated");
        };
        assert_eq!(
            blocked,
            vec![
                Feature::DirectMessages,
                Feature::PullRequestActions,
                Feature::AppHome,
                Feature::ReviewReminders
            ]
        );
        assert!(!is_available(Feature::DirectMessages, &granted(&scopes)));
        assert!(is_available(Feature::SlashCommands, &granted(&scopes)));
    }
}
