//! The words of the permission-upgrade campaign: every DM, edit and ephemeral answer it
//! sends, as plain [`Message`] values that `slack/` turns into Block Kit.
//!
//! Pure: facts in, text out. No I/O, no clock, no Slack types, no decisions about *when*
//! a message is due (that is [`super::campaign`]). Dates are shown with Slack's date
//! token, so each reader sees their own time zone; the plain-text fallback says UTC.

use jiff::Timestamp;

use crate::message::{Button, Message};
use crate::upgrade::scope_reason;

/// The **Update permissions** button in every campaign DM.
pub const UPDATE_PERMISSIONS_ACTION_ID: &str = "upgrade_update_permissions";
/// The **Allow** button of an admin's answer (OAuth installs); its url is set by the
/// driver with [`with_install_url`].
pub const ALLOW_ACTION_ID: &str = "upgrade_allow";
/// The **Check again** button of an admin's answer (configured-token installs): the
/// driver re-reads the token's scopes with auth.test.
pub const CHECK_AGAIN_ACTION_ID: &str = "upgrade_check_again";

/// Two weeks ahead: "you will need to update soon".
pub fn announcement(
    missing: &[String],
    available_at: Option<Timestamp>,
    deadline: Option<Timestamp>,
) -> Message {
    let when =
        available_at.map_or_else(|| "soon".to_string(), |at| format!("on {}", slack_date(at)));
    let mut sections = vec![format!(
        "*Bitbucket for Slack will need updated permissions soon.* A new version of the app \
         needs permissions that this workspace has not granted yet. As a workspace admin, you \
         will be able to update them in a few clicks {when}: you will get a message with an \
         *Update permissions* button then."
    )];
    if let Some(deadline) = deadline {
        sections.push(deadline_warning(deadline));
    }
    sections.push(permission_list(missing));
    Message {
        text: "Bitbucket for Slack will need updated permissions soon".into(),
        sections,
        buttons: Vec::new(),
    }
}

/// On the availability date: the first message with the button.
pub fn update_available(deadline: Option<Timestamp>) -> Message {
    let mut sections = vec![
        "*Bitbucket for Slack needs updated permissions.* A new version of the app needs \
         permissions that this workspace has not granted yet. As a workspace admin, you can \
         update them now: click *Update permissions*, review the list and approve it."
            .to_string(),
        "Until then, people who have not connected their Bitbucket account yet cannot log in, \
         and features that need the new permissions are unavailable. Everything that already \
         works keeps working."
            .to_string(),
    ];
    if let Some(deadline) = deadline {
        sections.push(deadline_warning(deadline));
    }
    with_update_button(Message {
        text: "Bitbucket for Slack: please update the app's permissions".into(),
        sections,
        buttons: Vec::new(),
    })
}

/// A reminder before the deadline.
pub fn reminder(deadline: Option<Timestamp>) -> Message {
    let mut sections = vec![
        "*Reminder: Bitbucket for Slack needs updated permissions.* A workspace admin still \
         needs to approve the app's new permissions. Click *Update permissions* to review them; \
         it takes a minute."
            .to_string(),
    ];
    if let Some(deadline) = deadline {
        sections.push(deadline_warning(deadline));
    }
    with_update_button(Message {
        text: "Reminder: Bitbucket for Slack needs updated permissions".into(),
        sections,
        buttons: Vec::new(),
    })
}

/// The nudge an admin gets when someone could not log in because the permissions are
/// outdated (at most one campaign DM per reminder interval, so never a flood).
pub fn login_nudge(user_id: &str, deadline: Option<Timestamp>) -> Message {
    let mut sections = vec![format!(
        "*<@{user_id}> tried to connect their Bitbucket account, but new users cannot log in \
         until a workspace admin updates this app's permissions.* Click *Update permissions* \
         to review them; it takes a minute."
    )];
    if let Some(deadline) = deadline {
        sections.push(deadline_warning(deadline));
    }
    with_update_button(Message {
        text: "Someone is waiting for Bitbucket for Slack's updated permissions".into(),
        sections,
        buttons: Vec::new(),
    })
}

/// On the deadline: the app is paused.
pub fn deadline_passed() -> Message {
    with_update_button(Message {
        text: "Bitbucket for Slack is paused until its permissions are updated".into(),
        sections: vec![
            "*Bitbucket for Slack is paused until its permissions are updated.* The deadline \
             for updating the app's permissions has passed. Until an admin updates them, \
             `/bitbucket` commands are refused and channel notifications are held (none are \
             lost)."
                .into(),
            HOW_TO_RESUME.into(),
        ],
        buttons: Vec::new(),
    })
}

/// A reminder after the deadline.
pub fn overdue_reminder(deadline: Option<Timestamp>) -> Message {
    let since = deadline.map_or_else(String::new, |at| format!("Since {}, ", slack_date(at)));
    with_update_button(Message {
        text: "Reminder: Bitbucket for Slack is paused until its permissions are updated".into(),
        sections: vec![
            format!(
                "*Reminder: Bitbucket for Slack is paused until its permissions are updated.* \
                 {since}`/bitbucket` commands are refused and channel notifications are held."
            ),
            HOW_TO_RESUME.into(),
        ],
        buttons: Vec::new(),
    })
}

const HOW_TO_RESUME: &str = "Click *Update permissions* and approve the new permissions: \
    everything works again at once, and the held notifications are delivered as one digest per \
    channel.";

/// What every earlier campaign message is edited into once the upgrade is done.
pub fn up_to_date() -> Message {
    Message {
        text: "Bitbucket for Slack is up to date".into(),
        sections: vec![
            "*Bitbucket for Slack is up to date.* An admin updated the app's permissions and \
             everything works. You can disregard the earlier update messages."
                .into(),
        ],
        buttons: Vec::new(),
    }
}

/// The answer to a click on **Update permissions** when nothing is missing.
pub fn nothing_to_update() -> Message {
    Message::text("Bitbucket for Slack is up to date: there are no permissions to update.")
}

/// The answer to a non-admin's click: only admins can, and who they are.
pub fn only_admins_can_update(admins: &[String]) -> Message {
    let ask = match admins.first() {
        Some(admin) => format!("Please ask <@{admin}> to do it."),
        None => "Please ask a workspace admin or owner to do it.".into(),
    };
    Message {
        text: "Only admins can update the app's permissions".into(),
        sections: vec![format!(
            "Only workspace admins can update Bitbucket for Slack's permissions. {ask}"
        )],
        buttons: Vec::new(),
    }
}

/// The answer to an admin's click, for an app installed through Slack: the permissions
/// with their reasons and an **Allow** button (url set by the driver).
pub fn allow_through_slack(missing: &[String]) -> Message {
    Message {
        text: "Update Bitbucket for Slack's permissions".into(),
        sections: vec![
            permission_list(missing),
            "Click *Allow* to open Slack's permission screen and approve them. The update takes \
             effect at once; subscriptions and linked accounts are kept."
                .into(),
        ],
        buttons: vec![Button {
            text: "Allow".into(),
            action_id: ALLOW_ACTION_ID.into(),
            value: None,
            url: None,
            primary: true,
        }],
    }
}

/// The answer to an admin's click, for an app run with a configured bot token: how to
/// reinstall it from the manifest, and **Check again**.
pub fn reinstall_from_manifest(missing: &[String]) -> Message {
    Message {
        text: "Update Bitbucket for Slack's permissions".into(),
        sections: vec![
            permission_list(missing),
            "This app runs with a bot token configured by the person who operates it, so the \
             update is a reinstall: in the app's settings on api.slack.com, add these scopes \
             under *OAuth & Permissions* → *Bot Token Scopes* (or paste the daemon's \
             `config/slack-app-manifest.yml` under *App Manifest*), then click *Reinstall to \
             Workspace* and approve. If Slack shows a new bot token, the operator must put it \
             in the daemon's configuration. Then click *Check again*."
                .into(),
        ],
        buttons: vec![check_again_button()],
    }
}

/// The answer to **Check again** once the scopes were re-read.
pub fn check_again_result(missing: &[String]) -> Message {
    if missing.is_empty() {
        return up_to_date();
    }
    Message {
        text: "Some permissions are still missing".into(),
        sections: vec![
            format!("Still missing: {}.", inline_list(missing)),
            "Reinstall the app with the manifest's scopes, then click *Check again*.".into(),
        ],
        buttons: vec![check_again_button()],
    }
}

/// From the deadline, every command gets this answer.
/// The answer to a command whose feature needs scopes the workspace has not granted.
pub fn feature_unavailable(feature: &str, missing: &[String], admins: &[String]) -> Message {
    Message::text(format!(
        "That needs {feature}, which needs permissions this workspace has not granted yet: {}. \
         A Slack admin can update them with `/bitbucket upgrade`. {}",
        inline_list(missing),
        admins_line(admins)
    ))
}

pub fn commands_refused(admins: &[String]) -> Message {
    Message::text(format!(
        "Bitbucket for Slack is paused: a Slack admin of this workspace must update the app's \
         permissions before it can be used again. Channel notifications are held until then; \
         none are lost. {}",
        admins_line(admins)
    ))
}

/// Before the deadline, `/bitbucket login` by someone not linked yet gets this answer.
pub fn login_refused(admins: &[String]) -> Message {
    Message::text(format!(
        "Your Slack admin needs to update this app's permissions before new users can log in. {}",
        admins_line(admins)
    ))
}

/// The one message per channel that replaces the notifications held while the upgrade
/// was overdue: how many, then each one's plain-text fallback, within Block Kit's limits
/// (sections under 3,000 characters, at most [`DIGEST_MAX_SECTIONS`] of them).
pub fn held_digest(fallbacks: &[String]) -> Message {
    const SECTION_LIMIT: usize = 2_900;
    const LINE_LIMIT: usize = 300;
    let count = fallbacks.len();
    let noun = if count == 1 {
        "notification was"
    } else {
        "notifications were"
    };
    let header = format!("While this app waited for updated permissions, {count} {noun} held:");
    let mut sections = vec![header.clone()];
    let mut current = String::new();
    let mut shown = 0;
    for fallback in fallbacks {
        let mut line: String = fallback.chars().take(LINE_LIMIT).collect();
        if line.len() < fallback.len() {
            line.push('…');
        }
        let line = format!("• {line}");
        if current.len() + line.len() + 1 > SECTION_LIMIT {
            if sections.len() + 1 >= DIGEST_MAX_SECTIONS {
                break;
            }
            sections.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
        shown += 1;
    }
    if !current.is_empty() {
        sections.push(current);
    }
    if shown < count {
        sections.push(format!("…and {} more.", count - shown));
    }
    Message {
        text: header,
        sections,
        buttons: Vec::new(),
    }
}

/// Block Kit allows 50 blocks in a message; a digest stays well under.
pub const DIGEST_MAX_SECTIONS: usize = 40;

/// Sets the url of the **Allow** button to the workspace's install link.
pub fn with_install_url(mut reply: Message, install_url: &str) -> Message {
    for button in &mut reply.buttons {
        if button.action_id == ALLOW_ACTION_ID {
            button.url = Some(install_url.to_string());
        }
    }
    reply
}

/// A date as Slack shows it to each reader in their own time zone, with a UTC fallback.
pub fn slack_date(at: Timestamp) -> String {
    format!(
        "<!date^{}^{{date_long}} at {{time}}|{}>",
        at.as_second(),
        utc_date(at)
    )
}

/// A date in UTC, for plain text (status lines, the CLI).
pub fn utc_date(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

fn deadline_warning(deadline: Timestamp) -> String {
    format!(
        "Please update by {}. From then on, the app stops working until its permissions are \
         updated.",
        slack_date(deadline)
    )
}

/// Each missing scope with the reason from the scope table.
fn permission_list(missing: &[String]) -> String {
    let lines: Vec<String> = missing
        .iter()
        .map(|scope| match scope_reason(scope) {
            Some(reason) => format!("• `{scope}`: {reason}"),
            None => format!("• `{scope}`"),
        })
        .collect();
    format!("*New permissions:*\n{}", lines.join("\n"))
}

fn inline_list(scopes: &[String]) -> String {
    scopes
        .iter()
        .map(|scope| format!("`{scope}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names the admins to ask, at most ten of them.
fn admins_line(admins: &[String]) -> String {
    const MAX_NAMED: usize = 10;
    if admins.is_empty() {
        return "Please ask a workspace admin or owner.".into();
    }
    let named: Vec<String> = admins
        .iter()
        .take(MAX_NAMED)
        .map(|admin| format!("<@{admin}>"))
        .collect();
    let more = admins.len().saturating_sub(MAX_NAMED);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("Admins: {}{tail}.", named.join(", "))
}

fn with_update_button(reply: Message) -> Message {
    reply.with_button(Button {
        text: "Update permissions".into(),
        action_id: UPDATE_PERMISSIONS_ACTION_ID.into(),
        value: None,
        url: None,
        primary: true,
    })
}

fn check_again_button() -> Button {
    Button {
        text: "Check again".into(),
        action_id: CHECK_AGAIN_ACTION_ID.into(),
        value: None,
        url: None,
        primary: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    fn missing() -> Vec<String> {
        vec!["links:read".into(), "links:write".into()]
    }

    #[test]
    fn digests_count_list_and_stay_within_block_kit_limits() {
        let small = held_digest(&["PR #1 opened".into(), "PR #2 merged".into()]);
        assert_eq!(
            small.sections,
            vec![
                "While this app waited for updated permissions, 2 notifications were held:",
                "• PR #1 opened\n• PR #2 merged"
            ]
        );
        let many: Vec<String> = (0..5_000)
            .map(|n| format!("{n} {}", "x".repeat(400)))
            .collect();
        let big = held_digest(&many);
        assert!(big.sections.len() <= DIGEST_MAX_SECTIONS + 1);
        assert!(big.sections.iter().all(|section| section.len() < 3_000));
        assert!(
            big.sections
                .last()
                .is_some_and(|last| last.ends_with("more."))
        );
        assert!(big.sections[0].contains("5000 notifications"));
    }

    const DEADLINE_TOKEN: &str = "<!date^1774861200^{date_long} at {time}|2026-03-30 09:00 UTC>";
    const PERMISSIONS: &str = "*New permissions:*\n\
        • `links:read`: See when someone shares a bitbucket.org link, to show a preview.\n\
        • `links:write`: Show previews (unfurls) of shared Bitbucket links.";

    fn update_button() -> Button {
        Button {
            text: "Update permissions".into(),
            action_id: UPDATE_PERMISSIONS_ACTION_ID.into(),
            value: None,
            url: None,
            primary: true,
        }
    }

    #[test]
    fn dates_show_in_the_readers_time_zone_with_a_utc_fallback() {
        assert_eq!(slack_date(date("2026-03-30T09:00:00Z")), DEADLINE_TOKEN);
        assert_eq!(
            utc_date(date("2026-03-30T09:00:59Z")),
            "2026-03-30 09:00 UTC"
        );
    }

    #[test]
    fn the_announcement_says_when_and_what() {
        let reply = announcement(
            &missing(),
            Some(date("2026-03-16T09:00:00Z")),
            Some(date("2026-03-30T09:00:00Z")),
        );
        assert_eq!(
            reply.text,
            "Bitbucket for Slack will need updated permissions soon"
        );
        assert_eq!(
            reply.sections,
            [
                "*Bitbucket for Slack will need updated permissions soon.* A new version of the \
                 app needs permissions that this workspace has not granted yet. As a workspace \
                 admin, you will be able to update them in a few clicks on \
                 <!date^1773651600^{date_long} at {time}|2026-03-16 09:00 UTC>: you will get a \
                 message with an *Update permissions* button then.",
                &format!(
                    "Please update by {DEADLINE_TOKEN}. From then on, the app stops working \
                     until its permissions are updated."
                ),
                PERMISSIONS,
            ]
        );
        assert!(reply.buttons.is_empty());
    }

    #[test]
    fn the_availability_message_has_the_button() {
        let reply = update_available(None);
        assert_eq!(
            reply.text,
            "Bitbucket for Slack: please update the app's permissions"
        );
        assert_eq!(
            reply.sections,
            [
                "*Bitbucket for Slack needs updated permissions.* A new version of the app needs \
                 permissions that this workspace has not granted yet. As a workspace admin, you \
                 can update them now: click *Update permissions*, review the list and approve \
                 it.",
                "Until then, people who have not connected their Bitbucket account yet cannot \
                 log in, and features that need the new permissions are unavailable. Everything \
                 that already works keeps working.",
            ]
        );
        assert_eq!(reply.buttons, [update_button()]);
        let dated = update_available(Some(date("2026-03-30T09:00:00Z")));
        assert_eq!(dated.sections.len(), 3);
        assert!(dated.sections[2].starts_with(&format!("Please update by {DEADLINE_TOKEN}.")));
    }

    #[test]
    fn reminders_before_and_after_the_deadline() {
        let before = reminder(Some(date("2026-03-30T09:00:00Z")));
        assert_eq!(
            before.sections,
            [
                "*Reminder: Bitbucket for Slack needs updated permissions.* A workspace admin \
                 still needs to approve the app's new permissions. Click *Update permissions* to \
                 review them; it takes a minute.",
                &format!(
                    "Please update by {DEADLINE_TOKEN}. From then on, the app stops working \
                     until its permissions are updated."
                ),
            ]
        );
        assert_eq!(before.buttons, [update_button()]);
        let after = overdue_reminder(Some(date("2026-03-30T09:00:00Z")));
        assert_eq!(
            after.text,
            "Reminder: Bitbucket for Slack is paused until its permissions are updated"
        );
        assert_eq!(
            after.sections,
            [
                &format!(
                    "*Reminder: Bitbucket for Slack is paused until its permissions are \
                     updated.* Since {DEADLINE_TOKEN}, `/bitbucket` commands are refused and \
                     channel notifications are held."
                ),
                "Click *Update permissions* and approve the new permissions: everything works \
                 again at once, and the held notifications are delivered as one digest per \
                 channel.",
            ]
        );
        assert_eq!(after.buttons, [update_button()]);
    }

    #[test]
    fn the_deadline_message_and_the_final_edit() {
        let paused = deadline_passed();
        assert_eq!(
            paused.sections[0],
            "*Bitbucket for Slack is paused until its permissions are updated.* The deadline \
             for updating the app's permissions has passed. Until an admin updates them, \
             `/bitbucket` commands are refused and channel notifications are held (none are \
             lost)."
        );
        assert_eq!(paused.buttons, [update_button()]);
        let done = up_to_date();
        assert_eq!(done.text, "Bitbucket for Slack is up to date");
        assert_eq!(
            done.sections,
            [
                "*Bitbucket for Slack is up to date.* An admin updated the app's permissions and \
              everything works. You can disregard the earlier update messages."
            ]
        );
        assert!(done.buttons.is_empty(), "the edit removes the button");
    }

    #[test]
    fn admins_get_allow_with_the_install_link() {
        let reply = allow_through_slack(&missing());
        assert_eq!(
            reply.sections,
            [
                PERMISSIONS,
                "Click *Allow* to open Slack's permission screen and approve them. The update \
                 takes effect at once; subscriptions and linked accounts are kept.",
            ]
        );
        assert_eq!(reply.buttons[0].url, None);
        let linked = with_install_url(reply, "https://bb.example/slack/install?team=T1");
        assert_eq!(linked.buttons[0].text, "Allow");
        assert_eq!(
            linked.buttons[0].url.as_deref(),
            Some("https://bb.example/slack/install?team=T1")
        );
    }

    #[test]
    fn token_installs_get_reinstall_steps_and_check_again() {
        let reply = reinstall_from_manifest(&missing());
        assert_eq!(reply.sections[0], PERMISSIONS);
        assert!(reply.sections[1].contains("*Reinstall to Workspace*"));
        assert!(reply.sections[1].ends_with("Then click *Check again*."));
        assert_eq!(reply.buttons[0].action_id, CHECK_AGAIN_ACTION_ID);
        let still = check_again_result(&missing());
        assert_eq!(
            still.sections,
            [
                "Still missing: `links:read`, `links:write`.",
                "Reinstall the app with the manifest's scopes, then click *Check again*.",
            ]
        );
        assert_eq!(check_again_result(&[]), up_to_date());
    }

    #[test]
    fn refusals_name_whom_to_ask() {
        assert_eq!(
            only_admins_can_update(&["U1".into(), "U2".into()]).sections,
            [
                "Only workspace admins can update Bitbucket for Slack's permissions. Please ask \
              <@U1> to do it."
            ]
        );
        assert_eq!(
            commands_refused(&[]).text,
            "Bitbucket for Slack is paused: a Slack admin of this workspace must update the \
             app's permissions before it can be used again. Channel notifications are held until \
             then; none are lost. Please ask a workspace admin or owner."
        );
        let many: Vec<String> = (1..=12).map(|n| format!("U{n}")).collect();
        assert!(
            login_refused(&many)
                .text
                .ends_with("Admins: <@U1>, <@U2>, <@U3>, <@U4>, <@U5>, <@U6>, <@U7>, <@U8>, <@U9>, <@U10> and 2 more.")
        );
    }

    #[test]
    fn every_section_fits_in_a_block() {
        let all_scopes: Vec<String> = crate::upgrade::required_scopes()
            .into_iter()
            .map(String::from)
            .collect();
        let deadline = Some(date("2026-03-30T09:00:00Z"));
        let replies = [
            announcement(&all_scopes, deadline, deadline),
            allow_through_slack(&all_scopes),
            reinstall_from_manifest(&all_scopes),
            check_again_result(&all_scopes),
        ];
        for reply in replies {
            for section in reply.sections {
                assert!(section.chars().count() <= 3000);
            }
        }
    }
}
