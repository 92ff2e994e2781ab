//! Notifications: which channels an activity goes to (subscriptions and their filters)
//! and what the message looks like.
//!
//! Pure: no I/O, no clock, no Slack types. `slack::delivery` posts what this decides.

pub mod access;
pub mod actions;
pub mod glob;
pub mod personal;
pub mod reminders;
pub mod render;
pub mod subscription;
pub mod unfurl;

use std::collections::BTreeSet;

use crate::bitbucket::Activity;
pub use render::{Notification, render};
pub use subscription::Subscription;

/// The channels (team, channel) that want `activity`: one entry per channel, however
/// many of its subscriptions match.
pub fn route(activity: &Activity, subscriptions: &[Subscription]) -> Vec<(String, String)> {
    let channels: BTreeSet<(String, String)> = subscriptions
        .iter()
        .filter(|subscription| subscription.matches(activity))
        .map(|subscription| {
            (
                subscription.team_id.clone(),
                subscription.channel_id.clone(),
            )
        })
        .collect();
    channels.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitbucket::ActivityKind;
    use crate::bitbucket::Target;
    use crate::notify::subscription::tests::{activity, pull_request};
    use crate::notify::subscription::{Features, Filters};

    fn subscription(team: &str, channel: &str, target: Target) -> Subscription {
        Subscription {
            team_id: team.into(),
            channel_id: channel.into(),
            target,
            features: Features::defaults(),
            filters: Filters::default(),
            main_branch: Some("main".into()),
            created_by: "U1".into(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            paused: None,
            private: None,
            coverage: Default::default(),
        }
    }

    #[test]
    fn one_message_per_channel_and_workspaces_stay_apart() {
        let opened = activity(
            ActivityKind::PullRequestCreated {
                pull_request: pull_request("main"),
            },
            "Ada",
        );
        let subscriptions = vec![
            subscription("T1", "C1", Target::Repository("acme/api".into())),
            subscription("T1", "C1", Target::Workspace("acme".into())),
            subscription("T1", "C2", Target::Repository("acme/other".into())),
            subscription("T2", "C9", Target::Repository("acme/api".into())),
        ];
        assert_eq!(
            route(&opened, &subscriptions),
            vec![
                ("T1".to_string(), "C1".to_string()),
                ("T2".to_string(), "C9".to_string())
            ]
        );
    }
}
