//! The `/bitbucket status` reply, from plain facts gathered by the caller.
//!
//! Pure: a [`StatusView`] in, a [`Message`] out.

use super::Message;
use crate::upgrade::{FEATURES, PermissionLevel, scope_reason};

/// What `/bitbucket status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    pub team_name: String,
    pub team_id: String,
    pub level: PermissionLevel,
    /// "configured bot token" or "installed through Slack".
    pub installed_by: String,
    pub sockets_connected: usize,
    pub sockets_total: usize,
    pub subscriptions: usize,
    pub paused_subscriptions: usize,
    /// Notifications for this workspace that failed for good.
    pub dead_letters: usize,
    /// Where the permission update stands, for an installation that needs one.
    pub upgrade: Option<String>,
    /// Who may bring private repositories into channels, and which workspaces.
    pub access: String,
}

pub fn status_reply(view: &StatusView) -> Message {
    let mut sections = vec![format!(
        "*Bitbucket for Slack in {}* (`{}`), {}.",
        crate::message::escape_inline_code(&view.team_name, 80),
        view.team_id,
        view.installed_by
    )];
    sections.push(permissions_section(&view.level));
    if let Some(upgrade) = &view.upgrade {
        sections.push(format!("*Permission update:* {upgrade}"));
    }
    sections.push(format!(
        "*Connection:* {} of {} Slack sockets connected.",
        view.sockets_connected, view.sockets_total
    ));
    let mut notifications = format!("*Subscriptions:* {}", view.subscriptions);
    if view.paused_subscriptions > 0 {
        notifications.push_str(&format!(
            ", {} paused (see `/bitbucket subscriptions` in their channels)",
            view.paused_subscriptions
        ));
    }
    if view.dead_letters > 0 {
        notifications.push_str(&format!(
            "; {} notifications could not be delivered (an operator can retry them with `bitbucket-slack outbox retry --all-dead`)",
            view.dead_letters
        ));
    }
    notifications.push('.');
    sections.push(notifications);
    sections.push(view.access.clone());
    Message {
        text: format!(
            "Status: permissions {}, {} of {} sockets connected",
            view.level.name(),
            view.sockets_connected,
            view.sockets_total
        ),
        sections,
        buttons: Vec::new(),
    }
}

fn permissions_section(level: &PermissionLevel) -> String {
    match level {
        PermissionLevel::Current => {
            "*Permissions:* current. Every feature of this version is available.".into()
        }
        PermissionLevel::Classic { missing } => format!(
            "*Permissions:* classic (a legacy bot install). An admin needs to reinstall the app \
             to grant the new granular permissions:\n{}",
            missing_lines(missing)
        ),
        PermissionLevel::Outdated { missing, blocked } => {
            let features: Vec<String> = FEATURES
                .iter()
                .filter(|spec| blocked.contains(&spec.feature))
                .map(|spec| format!("{} ({})", spec.name, spec.description))
                .collect();
            format!(
                "*Permissions:* outdated. Missing:\n{}\nThey would unlock: {}.",
                missing_lines(missing),
                features.join("; ")
            )
        }
    }
}

fn missing_lines(missing: &[&str]) -> String {
    missing
        .iter()
        .map(|scope| format!("• `{scope}`: {}", scope_reason(scope).unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upgrade::permission_level;

    fn view(scopes: &str) -> StatusView {
        StatusView {
            team_name: "Acme <ops>".into(),
            team_id: "T1".into(),
            level: permission_level(&crate::upgrade::parse_scope_list(scopes)),
            installed_by: "installed through Slack".into(),
            sockets_connected: 1,
            sockets_total: 2,
            subscriptions: 3,
            paused_subscriptions: 1,
            dead_letters: 0,
            upgrade: None,
            access: "*Access:* private repositories need the subscriber's own account.".into(),
        }
    }

    #[test]
    fn current_installation() {
        let reply = status_reply(&view(&crate::upgrade::required_scopes().join(",")));
        assert_eq!(
            reply.sections,
            vec![
                "*Bitbucket for Slack in Acme &lt;ops&gt;* (`T1`), installed through Slack."
                    .to_string(),
                "*Permissions:* current. Every feature of this version is available.".to_string(),
                "*Connection:* 1 of 2 Slack sockets connected.".to_string(),
                "*Subscriptions:* 3, 1 paused (see `/bitbucket subscriptions` in their channels)."
                    .to_string(),
                "*Access:* private repositories need the subscriber's own account.".to_string(),
            ]
        );
    }

    #[test]
    fn outdated_installation_lists_missing_scopes_and_what_they_unlock() {
        let scopes = crate::upgrade::required_scopes()
            .into_iter()
            .filter(|scope| !scope.starts_with("links:"))
            .collect::<Vec<_>>()
            .join(",");
        let reply = status_reply(&view(&scopes));
        assert_eq!(
            reply.sections[1],
            "*Permissions:* outdated. Missing:\n\
             • `links:read`: See when someone shares a bitbucket.org link, to show a preview.\n\
             • `links:write`: Show previews (unfurls) of shared Bitbucket links.\n\
             They would unlock: link previews (previews of shared bitbucket.org links)."
        );
    }

    #[test]
    fn classic_installation_says_reinstall() {
        let reply = status_reply(&view("bot,commands"));
        assert!(
            reply.sections[1].starts_with("*Permissions:* classic"),
            "{}",
            reply.sections[1]
        );
    }
}
