//! Who may see what: the verdicts of the private-repository policy and what they do to a
//! subscription (pause, resume, which private repositories of a workspace it covers).
//!
//! Pure: the facts (is the repository private, can the subscriber read it) are gathered
//! by `app::access`; this module only decides. Must never do I/O or read the clock.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::subscription::{Pause, PauseKind, Subscription};
use crate::bitbucket::Target;

/// Which repositories of a workspace subscription deliver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Coverage {
    /// Everything the target names: a repository subscription (its access is its pause),
    /// or a workspace under the `credential` policy.
    #[default]
    Whole,
    /// Only these repositories: the workspace's public ones plus the private ones the
    /// subscriber can read. Repositories created later join at the next check.
    Only {
        repositories: BTreeSet<String>,
        /// Private repositories left out, and why.
        left_out: BTreeSet<String>,
        reason: Option<Refusal>,
    },
}

impl Coverage {
    pub fn covers(&self, repository: &str) -> bool {
        match self {
            Coverage::Whole => true,
            Coverage::Only { repositories, .. } => repositories.contains(repository),
        }
    }

    pub fn left_out(&self) -> usize {
        match self {
            Coverage::Whole => 0,
            Coverage::Only { left_out, .. } => left_out.len(),
        }
    }
}

/// Why a private repository is not delivered to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The subscriber has no linked Bitbucket account.
    NotLinked,
    /// The subscriber's link no longer works (Bitbucket rejects its tokens).
    LinkStale,
    /// The subscriber's account cannot read the repository.
    CannotRead,
    /// `bitbucket.private_repositories = "deny"`.
    PrivateDenied,
    /// Account linking is not configured, so nobody's access can be checked.
    LinkingOff,
    /// The workspace is not in `bitbucket.workspaces`.
    WorkspaceNotAllowed,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 6] = [
        Refusal::NotLinked,
        Refusal::LinkStale,
        Refusal::CannotRead,
        Refusal::PrivateDenied,
        Refusal::LinkingOff,
        Refusal::WorkspaceNotAllowed,
    ];

    /// The code stored in a pause (`paused: not_linked`).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotLinked => "not_linked",
            Refusal::LinkStale => "link_stale",
            Refusal::CannotRead => "cannot_read",
            Refusal::PrivateDenied => "private_denied",
            Refusal::LinkingOff => "linking_off",
            Refusal::WorkspaceNotAllowed => "workspace_not_allowed",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|refusal| refusal.code() == code)
    }

    /// Why, in words, naming the subscriber.
    pub fn explain(self, subscriber: &str) -> String {
        match self {
            Refusal::NotLinked => format!(
                "<@{subscriber}> has no Bitbucket account linked (`/bitbucket login`)"
            ),
            Refusal::LinkStale => format!(
                "Bitbucket no longer accepts <@{subscriber}>'s link (`/bitbucket login` to connect again)"
            ),
            Refusal::CannotRead => {
                format!("<@{subscriber}>'s Bitbucket account cannot read it")
            }
            Refusal::PrivateDenied => {
                "private repositories are not allowed here (the operator's `bitbucket.private_repositories`)".into()
            }
            Refusal::LinkingOff => {
                "account linking is not set up, so nobody's access can be checked (the operator's `bitbucket.user_oauth`)".into()
            }
            Refusal::WorkspaceNotAllowed => {
                "its workspace is not one this daemon may use (the operator's `bitbucket.workspaces`)".into()
            }
        }
    }

    /// Whether the subscription comes back by itself once the facts change.
    pub fn what_to_do(self) -> &'static str {
        match self {
            Refusal::NotLinked | Refusal::LinkStale => {
                "Run `/bitbucket login` to connect your Bitbucket account; it resumes by itself within the hour once your account can read it."
            }
            Refusal::CannotRead => {
                "Ask for read access on Bitbucket; it resumes by itself within the hour once your account can read it."
            }
            Refusal::PrivateDenied | Refusal::LinkingOff | Refusal::WorkspaceNotAllowed => {
                "Ask the person who runs bitbucket-slack; it resumes by itself if they change the setting."
            }
        }
    }
}

/// What a check found for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The subscription may deliver everything its target names.
    Allowed,
    /// A repository subscription may deliver nothing.
    Refused(Refusal),
    /// A workspace subscription may deliver these repositories.
    Partial {
        repositories: BTreeSet<String>,
        left_out: BTreeSet<String>,
        reason: Option<Refusal>,
    },
    /// The facts could not be gathered (Bitbucket unreachable): change nothing.
    Unknown,
}

/// What applying a verdict changed, for the subscriber's DM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    Paused(Refusal),
    Resumed,
    /// A workspace subscription stopped delivering these private repositories.
    LeftOut {
        repositories: BTreeSet<String>,
        reason: Option<Refusal>,
    },
    /// A workspace subscription delivers these private repositories again (or anew).
    Covered(BTreeSet<String>),
}

/// Applies `verdict` to `subscription`. A channel pause (Slack refused to post) is left
/// alone: it ends when someone subscribes again.
pub fn apply(subscription: &mut Subscription, verdict: Verdict, now: Timestamp) -> Change {
    let channel_paused = subscription
        .paused
        .as_ref()
        .is_some_and(|pause| pause.kind == PauseKind::Channel);
    match verdict {
        Verdict::Unknown => Change::None,
        Verdict::Allowed => {
            let mut change = Change::None;
            if subscription
                .paused
                .as_ref()
                .is_some_and(|pause| pause.kind == PauseKind::Access)
            {
                subscription.paused = None;
                change = Change::Resumed;
            }
            if subscription.coverage != Coverage::Whole {
                subscription.coverage = Coverage::Whole;
            }
            change
        }
        Verdict::Refused(refusal) => {
            if channel_paused {
                return Change::None;
            }
            let same = subscription
                .paused
                .as_ref()
                .is_some_and(|pause| pause.reason == refusal.code());
            if same {
                return Change::None;
            }
            let was_active = subscription.paused.is_none();
            subscription.paused = Some(Pause {
                reason: refusal.code().to_string(),
                since: now,
                notified: true,
                kind: PauseKind::Access,
            });
            if was_active {
                Change::Paused(refusal)
            } else {
                Change::None
            }
        }
        Verdict::Partial {
            repositories,
            left_out,
            reason,
        } => {
            let previous = std::mem::replace(
                &mut subscription.coverage,
                Coverage::Only {
                    repositories: repositories.clone(),
                    left_out: left_out.clone(),
                    reason,
                },
            );
            match previous {
                Coverage::Whole => {
                    // From "everything" (a new record, or the policy changed): whatever is
                    // left out now was delivered until now.
                    if left_out.is_empty() {
                        Change::None
                    } else {
                        Change::LeftOut {
                            repositories: left_out,
                            reason,
                        }
                    }
                }
                Coverage::Only {
                    repositories: before,
                    ..
                } => {
                    let lost: BTreeSet<String> = left_out
                        .iter()
                        .filter(|name| before.contains(*name))
                        .cloned()
                        .collect();
                    let gained: BTreeSet<String> = repositories
                        .iter()
                        .filter(|name| !before.contains(*name))
                        .cloned()
                        .collect();
                    if !lost.is_empty() {
                        Change::LeftOut {
                            repositories: lost,
                            reason,
                        }
                    } else if !gained.is_empty() {
                        Change::Covered(gained)
                    } else {
                        Change::None
                    }
                }
            }
        }
    }
}

/// The verdict for a workspace subscription from its listing: `readable` is `None` when
/// nobody's access counts (every private repository is left out for `reason`).
pub fn workspace_verdict(
    listing: &[(String, bool)],
    readable: Result<&BTreeSet<String>, Refusal>,
) -> Verdict {
    let mut repositories = BTreeSet::new();
    let mut left_out = BTreeSet::new();
    for (name, is_private) in listing {
        let allowed = !is_private || readable.is_ok_and(|set| set.contains(name));
        if allowed {
            repositories.insert(name.clone());
        } else {
            left_out.insert(name.clone());
        }
    }
    let reason = if left_out.is_empty() {
        None
    } else {
        Some(readable.err().unwrap_or(Refusal::CannotRead))
    };
    Verdict::Partial {
        repositories,
        left_out,
        reason,
    }
}

/// Whether `target`'s workspace is allowed by `allowed` (empty: any).
pub fn workspace_allowed(target: &Target, allowed: &[String]) -> bool {
    let workspace = match target {
        Target::Repository(name) => name.split('/').next().unwrap_or(name),
        Target::Workspace(workspace) => workspace,
    };
    allowed.is_empty() || allowed.iter().any(|name| name == workspace)
}

/// The line for the subscriber's DM about one subscription's change; `None` when there is
/// nothing to tell.
pub fn change_line(subscription: &Subscription, change: &Change) -> Option<String> {
    let target = subscription.target.as_str();
    let channel = &subscription.channel_id;
    let subscriber = &subscription.created_by;
    match change {
        Change::None => None,
        Change::Paused(refusal) => Some(format!(
            "• `{target}` in <#{channel}> is *paused*: {}. {}",
            refusal.explain(subscriber),
            refusal.what_to_do()
        )),
        Change::Resumed => Some(format!(
            "• `{target}` in <#{channel}> is *resumed*: access is back."
        )),
        Change::LeftOut {
            repositories,
            reason,
        } => {
            let why = reason
                .map(|refusal| format!(": {}", refusal.explain(subscriber)))
                .unwrap_or_default();
            let what = reason.map(Refusal::what_to_do).unwrap_or("");
            Some(format!(
                "• `{target}` in <#{channel}> no longer includes {} private {}{why}. {what}",
                repositories.len(),
                if repositories.len() == 1 {
                    "repository"
                } else {
                    "repositories"
                },
            ))
        }
        Change::Covered(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::subscription::{Features, Filters};

    fn subscription(target: Target) -> Subscription {
        Subscription {
            team_id: "T1".into(),
            channel_id: "C1".into(),
            target,
            features: Features::defaults(),
            filters: Filters::default(),
            main_branch: None,
            created_by: "U1".into(),
            created_at: Timestamp::UNIX_EPOCH,
            paused: None,
            private: Some(true),
            coverage: Coverage::Whole,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn losing_access_pauses_once_and_regaining_resumes() {
        let mut sub = subscription(Target::Repository("acme/secret".into()));
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            apply(&mut sub, Verdict::Refused(Refusal::CannotRead), now),
            Change::Paused(Refusal::CannotRead)
        );
        assert_eq!(
            sub.paused.as_ref().map(|pause| pause.kind),
            Some(PauseKind::Access)
        );
        assert_eq!(
            apply(&mut sub, Verdict::Refused(Refusal::CannotRead), now),
            Change::None,
            "told once"
        );
        assert_eq!(
            apply(&mut sub, Verdict::Refused(Refusal::NotLinked), now),
            Change::None,
            "a new reason is recorded, not told again"
        );
        assert_eq!(
            sub.paused.as_ref().map(|p| p.reason.as_str()),
            Some("not_linked")
        );
        assert_eq!(apply(&mut sub, Verdict::Unknown, now), Change::None);
        assert!(sub.paused.is_some(), "unknown changes nothing");
        assert_eq!(apply(&mut sub, Verdict::Allowed, now), Change::Resumed);
        assert!(sub.paused.is_none());
        assert_eq!(apply(&mut sub, Verdict::Allowed, now), Change::None);
    }

    #[test]
    fn a_channel_pause_is_not_lifted_by_access() {
        let mut sub = subscription(Target::Repository("acme/secret".into()));
        sub.paused = Some(Pause {
            reason: "channel_not_found".into(),
            since: Timestamp::UNIX_EPOCH,
            notified: true,
            kind: PauseKind::Channel,
        });
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(apply(&mut sub, Verdict::Allowed, now), Change::None);
        assert_eq!(
            apply(&mut sub, Verdict::Refused(Refusal::CannotRead), now),
            Change::None
        );
        assert_eq!(
            sub.paused.as_ref().map(|p| p.reason.as_str()),
            Some("channel_not_found")
        );
    }

    #[test]
    fn a_workspace_covers_public_and_readable_private_repositories() {
        let listing = vec![
            ("acme/site".to_string(), false),
            ("acme/engine".to_string(), true),
            ("acme/secret".to_string(), true),
        ];
        let readable = set(&["acme/engine", "acme/site"]);
        let verdict = workspace_verdict(&listing, Ok(&readable));
        let mut sub = subscription(Target::Workspace("acme".into()));
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            apply(&mut sub, verdict.clone(), now),
            Change::LeftOut {
                repositories: set(&["acme/secret"]),
                reason: Some(Refusal::CannotRead)
            }
        );
        assert!(sub.coverage.covers("acme/site"));
        assert!(sub.coverage.covers("acme/engine"));
        assert!(!sub.coverage.covers("acme/secret"));
        assert!(!sub.coverage.covers("acme/created-later"), "fail closed");
        assert_eq!(sub.coverage.left_out(), 1);
        assert_eq!(apply(&mut sub, verdict, now), Change::None);

        let unlinked = workspace_verdict(&listing, Err(Refusal::NotLinked));
        assert_eq!(
            apply(&mut sub, unlinked, now),
            Change::LeftOut {
                repositories: set(&["acme/engine"]),
                reason: Some(Refusal::NotLinked)
            },
            "only what was delivered until now is news"
        );
        assert!(sub.coverage.covers("acme/site"));
        assert!(!sub.coverage.covers("acme/engine"));
        let back = workspace_verdict(&listing, Ok(&readable));
        assert_eq!(
            apply(&mut sub, back, now),
            Change::Covered(set(&["acme/engine"]))
        );
    }

    #[test]
    fn allowed_workspaces() {
        let allowed = vec!["acme".to_string()];
        assert!(workspace_allowed(
            &Target::Repository("acme/api".into()),
            &allowed
        ));
        assert!(workspace_allowed(
            &Target::Workspace("acme".into()),
            &allowed
        ));
        assert!(!workspace_allowed(
            &Target::Repository("globex/api".into()),
            &allowed
        ));
        assert!(workspace_allowed(&Target::Workspace("globex".into()), &[]));
    }

    #[test]
    fn refusal_codes_round_trip_and_lines_say_what_to_do() {
        for refusal in Refusal::ALL {
            assert_eq!(Refusal::from_code(refusal.code()), Some(refusal));
        }
        let sub = subscription(Target::Repository("acme/secret".into()));
        let line = change_line(&sub, &Change::Paused(Refusal::NotLinked)).expect("a line");
        assert!(
            line.contains("`acme/secret` in <#C1> is *paused*"),
            "{line}"
        );
        assert!(line.contains("/bitbucket login"), "{line}");
    }
}
