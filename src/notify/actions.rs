//! Actions from Slack, the pure part: the buttons a pull-request or pipeline message
//! carries, what their values say (only the pull request's or pipeline's reference,
//! `workspace/repo#N`), reading a reference a person typed (`workspace/repo#N` or a
//! pull request's URL), the line a message gets when someone acted from it, and the
//! "echo" key that lets the router drop the poller's later activity for an action
//! already shown.
//!
//! Pure: no I/O, no clock, no Slack types. Never decides who acts (that is always the
//! clicking user of the envelope, read in `app::actions`) and never puts anything but a
//! reference in a button's value.

use crate::bitbucket::{Activity, ActivityKind, RepositoryName};
use crate::message::{Button, Message, escape};

use super::Notification;

pub const APPROVE: &str = "bitbucket_pr_approve";
pub const UNAPPROVE: &str = "bitbucket_pr_unapprove";
pub const REQUEST_CHANGES: &str = "bitbucket_pr_request_changes";
pub const COMMENT: &str = "bitbucket_pr_comment";
pub const MERGE: &str = "bitbucket_pr_merge";
pub const DECLINE: &str = "bitbucket_pr_decline";
pub const RERUN: &str = "bitbucket_pipeline_rerun";
/// A link button (the pipeline's log): Slack reports its click, nothing handles it.
pub const VIEW_LOG: &str = "bitbucket_pipeline_log";

/// Every action id a click may carry that `app::actions` handles.
pub const ACTION_IDS: &[&str] = &[
    APPROVE,
    UNAPPROVE,
    REQUEST_CHANGES,
    COMMENT,
    MERGE,
    DECLINE,
    RERUN,
];

/// The modals' callback ids.
pub const COMMENT_VIEW: &str = "bitbucket_pr_comment_view";
pub const MERGE_VIEW: &str = "bitbucket_pr_merge_view";
pub const DECLINE_VIEW: &str = "bitbucket_pr_decline_view";

/// What marks the line a message gets when someone acted from it.
pub const ACTED_MARK: &str = "_From Slack:_ ";

/// A pull request by repository (`workspace/repo`, lower case) and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestKey {
    pub repository: String,
    pub id: u64,
}

impl PullRequestKey {
    /// The button value and the canonical form: `workspace/repo#N`.
    pub fn value(&self) -> String {
        format!("{}#{}", self.repository, self.id)
    }
}

/// A pipeline by repository and uuid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineKey {
    pub repository: String,
    pub uuid: String,
}

impl PipelineKey {
    /// The button value: `workspace/repo pipeline {uuid}`.
    pub fn value(&self) -> String {
        format!("{} pipeline {}", self.repository, self.uuid)
    }

    pub fn parse(value: &str) -> Option<PipelineKey> {
        let (repository, uuid) = value.split_once(" pipeline ")?;
        let repository: RepositoryName = repository.parse().ok()?;
        let uuid = uuid.trim();
        let plain = uuid
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "{}-".contains(ch));
        (plain && !uuid.is_empty()).then(|| PipelineKey {
            repository: repository.as_str().to_lowercase(),
            uuid: uuid.to_string(),
        })
    }
}

/// What `/bitbucket approve|merge|decline` and a button expect.
pub const EXPECTED_REFERENCE: &str = "`workspace/repository#N` or the pull request's URL (`https://bitbucket.org/workspace/repository/pull-requests/N`)";

/// `workspace/repo#N`, or a pull request's bitbucket.org URL.
pub fn parse_pull_request(text: &str) -> Result<PullRequestKey, String> {
    let text = text.trim().trim_start_matches('<').trim_end_matches('>');
    let text = text.split('|').next().unwrap_or(text);
    let (repository, number) = if let Some(rest) = text
        .strip_prefix("https://bitbucket.org/")
        .or_else(|| text.strip_prefix("http://bitbucket.org/"))
    {
        let parts: Vec<&str> = rest.split(['/', '?', '#']).collect();
        match parts.as_slice() {
            [workspace, repo, "pull-requests", number, ..] => {
                (format!("{workspace}/{repo}"), number.to_string())
            }
            _ => return Err("that link is not a pull request's".into()),
        }
    } else {
        match text.split_once('#') {
            Some((repository, number)) => (repository.to_string(), number.to_string()),
            None => return Err("name the pull request's number after `#`".into()),
        }
    };
    let name: RepositoryName = repository
        .parse()
        .map_err(|error: crate::bitbucket::InvalidRepositoryName| error.to_string())?;
    let id: u64 = number
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| "a pull request's number is a positive whole number".to_string())?;
    Ok(PullRequestKey {
        repository: name.as_str().to_lowercase(),
        id,
    })
}

fn action(text: &str, action_id: &str, value: &str, primary: bool) -> Button {
    Button {
        text: text.into(),
        action_id: action_id.into(),
        value: Some(value.into()),
        url: None,
        primary,
    }
}

/// The buttons of an open pull request's message. `approved`: the message shows an
/// approval made from Slack, so it offers to withdraw one too.
pub fn pull_request_buttons(key: &PullRequestKey, approved: bool) -> Vec<Button> {
    let value = key.value();
    let mut buttons = vec![action("Approve", APPROVE, &value, true)];
    if approved {
        buttons.push(action("Unapprove", UNAPPROVE, &value, false));
    }
    buttons.extend([
        action("Request changes", REQUEST_CHANGES, &value, false),
        action("Comment", COMMENT, &value, false),
        action("Merge", MERGE, &value, false),
        action("Decline", DECLINE, &value, false),
    ]);
    buttons
}

/// A failed pipeline's buttons: Rerun, and the log when there is a link to it.
pub fn pipeline_buttons(key: &PipelineKey, log: Option<&str>) -> Vec<Button> {
    let mut buttons = vec![action("Rerun", RERUN, &key.value(), true)];
    if let Some(log) = log {
        let mut link = Button::link("View log", VIEW_LOG, log);
        link.primary = false;
        buttons.push(link);
    }
    buttons
}

/// The pull request an activity is about, while it is open.
fn open_pull_request(activity: &Activity) -> Option<PullRequestKey> {
    let id = match &activity.kind {
        ActivityKind::PullRequestCreated { pull_request }
        | ActivityKind::PullRequestDraftCreated { pull_request }
        | ActivityKind::PullRequestReadyForReview { pull_request }
        | ActivityKind::PullRequestReviewRequested { pull_request, .. }
        | ActivityKind::PullRequestUpdated { pull_request, .. }
        | ActivityKind::PullRequestApproved { pull_request }
        | ActivityKind::PullRequestUnapproved { pull_request }
        | ActivityKind::PullRequestChangesRequested { pull_request }
        | ActivityKind::PullRequestCommented { pull_request, .. } => pull_request.id,
        _ => return None,
    };
    Some(PullRequestKey {
        repository: activity.repository.to_lowercase(),
        id,
    })
}

/// The action buttons `activity`'s message gets: an open pull request's, or a failed
/// pipeline's; none for anything else.
pub fn buttons_for(activity: &Activity) -> Vec<Button> {
    if let Some(key) = open_pull_request(activity) {
        return pull_request_buttons(&key, false);
    }
    match &activity.kind {
        ActivityKind::PipelineFailed { pipeline } if !pipeline.uuid.is_empty() => pipeline_buttons(
            &PipelineKey {
                repository: activity.repository.to_lowercase(),
                uuid: pipeline.uuid.clone(),
            },
            activity.link.as_deref(),
        ),
        _ => Vec::new(),
    }
}

/// Adds the action buttons to a rendered notification (its message, not the thread
/// parent's state update).
pub fn add_buttons(notification: &mut Notification, activity: &Activity) {
    notification.message.buttons.extend(buttons_for(activity));
}

/// Something done from Slack that the poller will see again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Approved,
    Unapproved,
    ChangesRequested,
    Commented,
    Merged,
    Declined,
}

impl Done {
    fn word(self) -> &'static str {
        match self {
            Done::Approved => "approved",
            Done::Unapproved => "unapproved",
            Done::ChangesRequested => "changes_requested",
            Done::Commented => "commented",
            Done::Merged => "merged",
            Done::Declined => "declined",
        }
    }
}

/// The key an action done from Slack and the poller's activity for it share.
pub fn echo_key(key: &PullRequestKey, done: Done, bitbucket_uuid: &str) -> String {
    format!(
        "{}#{}:{}:{}",
        key.repository,
        key.id,
        done.word(),
        bitbucket_uuid
    )
}

/// The key of a pipeline started from Slack.
pub fn pipeline_echo_key(repository: &str, uuid: &str) -> String {
    format!("{}@{uuid}:started", repository.to_lowercase())
}

/// The echo key of a poller's activity, when it is one an action from Slack causes.
pub fn echo_of(activity: &Activity) -> Option<String> {
    let repository = activity.repository.to_lowercase();
    if let ActivityKind::PipelineStarted { pipeline } = &activity.kind {
        return Some(pipeline_echo_key(&repository, &pipeline.uuid));
    }
    let (pull_request, done) = match &activity.kind {
        ActivityKind::PullRequestApproved { pull_request } => (pull_request, Done::Approved),
        ActivityKind::PullRequestUnapproved { pull_request } => (pull_request, Done::Unapproved),
        ActivityKind::PullRequestChangesRequested { pull_request } => {
            (pull_request, Done::ChangesRequested)
        }
        ActivityKind::PullRequestCommented { pull_request, .. } => (pull_request, Done::Commented),
        ActivityKind::PullRequestMerged { pull_request } => (pull_request, Done::Merged),
        ActivityKind::PullRequestDeclined { pull_request, .. } => (pull_request, Done::Declined),
        _ => return None,
    };
    let uuid = activity.actor.as_ref()?.uuid.as_deref()?;
    Some(echo_key(
        &PullRequestKey {
            repository,
            id: pull_request.id,
        },
        done,
        uuid,
    ))
}

/// The message shown again with `line` (what someone did from Slack) added to its
/// "From Slack" line, and `buttons` in place of its old ones.
pub fn acted_message(sections: &[String], line: &str, buttons: Vec<Button>) -> Message {
    let mut kept: Vec<String> = Vec::new();
    let mut acted: Vec<String> = Vec::new();
    for section in sections {
        match section.strip_prefix(ACTED_MARK) {
            Some(previous) => acted.extend(previous.split(" · ").map(str::to_string)),
            None => kept.push(section.clone()),
        }
    }
    acted.push(line.to_string());
    // The newest few: the line stays short however often people click.
    let skip = acted.len().saturating_sub(6);
    kept.push(format!("{ACTED_MARK}{}", acted[skip..].join(" · ")));
    let text = kept
        .first()
        .map(|first| crate::message::truncate(first, 300))
        .unwrap_or_default();
    Message {
        text,
        sections: kept,
        buttons,
    }
}

/// How a pull request is named in replies: `` `workspace/repo` #N ``.
pub fn describe(key: &PullRequestKey) -> String {
    format!("{} #{}", crate::message::code(&key.repository), key.id)
}

/// A title from Bitbucket, safe in mrkdwn.
pub fn title(text: &str) -> String {
    escape(&crate::message::truncate(text, 150))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitbucket::{Actor, PipelineRef};
    use crate::notify::subscription::tests::{activity, pull_request};

    #[test]
    fn references_are_typed_or_linked() {
        let expected = PullRequestKey {
            repository: "acme/api".into(),
            id: 7,
        };
        assert_eq!(parse_pull_request("acme/api#7"), Ok(expected.clone()));
        assert_eq!(parse_pull_request("Acme/API#7"), Ok(expected.clone()));
        assert_eq!(
            parse_pull_request("https://bitbucket.org/acme/api/pull-requests/7/diff"),
            Ok(expected.clone())
        );
        assert_eq!(
            parse_pull_request("<https://bitbucket.org/acme/api/pull-requests/7>"),
            Ok(expected)
        );
        for bad in [
            "acme/api",
            "acme/api#0",
            "acme/api#x",
            "../x#1",
            "https://bitbucket.org/acme/api/src",
            "acme#7",
        ] {
            assert!(parse_pull_request(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_button_value_is_only_the_reference() {
        let key = PullRequestKey {
            repository: "acme/api".into(),
            id: 7,
        };
        let buttons = pull_request_buttons(&key, false);
        assert_eq!(
            buttons
                .iter()
                .map(|b| b.action_id.as_str())
                .collect::<Vec<_>>(),
            vec![APPROVE, REQUEST_CHANGES, COMMENT, MERGE, DECLINE]
        );
        assert!(
            buttons
                .iter()
                .all(|b| b.value.as_deref() == Some("acme/api#7"))
        );
        let pipeline = PipelineKey {
            repository: "acme/api".into(),
            uuid: "{p-1}".into(),
        };
        assert_eq!(PipelineKey::parse(&pipeline.value()), Some(pipeline));
        assert_eq!(PipelineKey::parse("acme/api pipeline ../x"), None);
    }

    #[test]
    fn open_pull_requests_and_failed_pipelines_get_buttons_and_nothing_else_does() {
        let opened = activity(
            ActivityKind::PullRequestCreated {
                pull_request: pull_request("main"),
            },
            "Ada",
        );
        assert_eq!(buttons_for(&opened).len(), 5);
        let merged = activity(
            ActivityKind::PullRequestMerged {
                pull_request: pull_request("main"),
            },
            "Ada",
        );
        assert!(buttons_for(&merged).is_empty());
        let mut failed = activity(
            ActivityKind::PipelineFailed {
                pipeline: PipelineRef {
                    uuid: "{p-1}".into(),
                    build_number: 3,
                    branch: Some("main".into()),
                    commit: None,
                    duration_secs: None,
                    pull_request: None,
                    pull_request_author: None,
                    result: Some("FAILED".into()),
                },
            },
            "Ada",
        );
        failed.link = Some("https://bitbucket.org/acme/api/pipelines/results/3".into());
        let buttons = buttons_for(&failed);
        assert_eq!(buttons[0].action_id, RERUN);
        assert_eq!(buttons[1].url.as_deref(), failed.link.as_deref());
    }

    #[test]
    fn the_pollers_approval_has_the_key_of_the_approval_from_slack() {
        let mut approved = activity(
            ActivityKind::PullRequestApproved {
                pull_request: pull_request("main"),
            },
            "Grace",
        );
        approved.actor = Some(Actor {
            display_name: "Grace".into(),
            uuid: Some("{grace}".into()),
        });
        let key = PullRequestKey {
            repository: approved.repository.to_lowercase(),
            id: 7,
        };
        assert_eq!(
            echo_of(&approved),
            Some(echo_key(&key, Done::Approved, "{grace}"))
        );
        assert_ne!(
            echo_of(&approved),
            Some(echo_key(&key, Done::Approved, "{ada}"))
        );
    }

    #[test]
    fn the_acted_line_is_one_and_keeps_the_newest() {
        let first = acted_message(&["*Ada* opened #7".into()], "<@U1> approved", vec![]);
        assert_eq!(
            first.sections,
            vec!["*Ada* opened #7", "_From Slack:_ <@U1> approved"]
        );
        let second = acted_message(&first.sections, "<@U2> approved", vec![]);
        assert_eq!(
            second.sections,
            vec![
                "*Ada* opened #7",
                "_From Slack:_ <@U1> approved · <@U2> approved"
            ]
        );
    }
}
