//! The scope table: every feature, the bot scopes it needs, and why, in words an admin
//! can read. `config/slack-app-manifest.yml` requests exactly the union (a test checks).
//!
//! Pure data. Adding a feature that needs a new scope is what starts a permission
//! upgrade for every existing installation.

/// Something the app does that needs Slack permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    SlashCommands,
    ChannelNotifications,
    DirectMessages,
    LinkUnfurls,
    UserLookup,
    WorkspaceInfo,
    /// Approve, merge, comment, decline and rerun from Slack with one's own account.
    PullRequestActions,
    /// The Home tab as a person's dashboard (and an admin's control panel), and answers
    /// to direct messages sent to the app.
    AppHome,
    /// Scheduled lists of pull requests waiting for review, in channels and as a personal
    /// morning digest.
    ReviewReminders,
}

/// A scope and the reason the app asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeSpec {
    pub name: &'static str,
    pub reason: &'static str,
}

/// A feature and the scopes it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSpec {
    pub feature: Feature,
    pub name: &'static str,
    pub description: &'static str,
    pub scopes: &'static [ScopeSpec],
}

const COMMANDS: ScopeSpec = ScopeSpec {
    name: "commands",
    reason: "Add the /bitbucket command, so people can subscribe channels and link accounts.",
};
const CHAT_WRITE: ScopeSpec = ScopeSpec {
    name: "chat:write",
    reason: "Post Bitbucket notifications and replies as the Bitbucket bot.",
};
const CHAT_WRITE_PUBLIC: ScopeSpec = ScopeSpec {
    name: "chat:write.public",
    reason: "Post into public channels that subscribed without inviting the bot first.",
};
const CHANNELS_READ: ScopeSpec = ScopeSpec {
    name: "channels:read",
    reason: "Check that a subscribed public channel still exists and is not archived.",
};
const GROUPS_READ: ScopeSpec = ScopeSpec {
    name: "groups:read",
    reason: "Check private channels the bot was invited to, so their subscriptions keep working.",
};
const IM_WRITE: ScopeSpec = ScopeSpec {
    name: "im:write",
    reason: "Send direct messages: personal notifications and notices to admins.",
};
const IM_HISTORY: ScopeSpec = ScopeSpec {
    name: "im:history",
    reason: "Hear direct messages sent to the app, to answer them with help.",
};
const LINKS_READ: ScopeSpec = ScopeSpec {
    name: "links:read",
    reason: "See when someone shares a bitbucket.org link, to show a preview.",
};
const LINKS_WRITE: ScopeSpec = ScopeSpec {
    name: "links:write",
    reason: "Show previews (unfurls) of shared Bitbucket links.",
};
const USERS_READ: ScopeSpec = ScopeSpec {
    name: "users:read",
    reason: "Find the workspace's admins and show people's names in messages.",
};
const TEAM_READ: ScopeSpec = ScopeSpec {
    name: "team:read",
    reason: "Show the workspace's name in status and install pages.",
};

/// Every feature, in the order admins see them.
pub const FEATURES: &[FeatureSpec] = &[
    FeatureSpec {
        feature: Feature::SlashCommands,
        name: "slash commands",
        description: "the /bitbucket command",
        scopes: &[COMMANDS],
    },
    FeatureSpec {
        feature: Feature::ChannelNotifications,
        name: "channel notifications",
        description: "pull requests, pushes, pipelines and issues posted to subscribed channels",
        scopes: &[CHAT_WRITE, CHAT_WRITE_PUBLIC, CHANNELS_READ, GROUPS_READ],
    },
    FeatureSpec {
        feature: Feature::DirectMessages,
        name: "direct messages",
        description: "personal notifications and notices to admins",
        scopes: &[CHAT_WRITE, IM_WRITE],
    },
    FeatureSpec {
        feature: Feature::LinkUnfurls,
        name: "link previews",
        description: "previews of shared bitbucket.org links",
        scopes: &[LINKS_READ, LINKS_WRITE],
    },
    FeatureSpec {
        feature: Feature::UserLookup,
        name: "user lookup",
        description: "finding admins and showing people's names",
        scopes: &[USERS_READ],
    },
    FeatureSpec {
        feature: Feature::WorkspaceInfo,
        name: "workspace info",
        description: "the workspace's name in status and install pages",
        scopes: &[TEAM_READ],
    },
    FeatureSpec {
        feature: Feature::PullRequestActions,
        name: "pull request actions",
        description: "approving, commenting, merging, declining and re-running pipelines from Slack messages",
        scopes: &[COMMANDS, CHAT_WRITE, IM_WRITE],
    },
    FeatureSpec {
        feature: Feature::AppHome,
        name: "home tab",
        description: "your pull requests, reviews and settings in the app's Home tab, and help when you message the app",
        scopes: &[IM_HISTORY, IM_WRITE],
    },
    FeatureSpec {
        feature: Feature::ReviewReminders,
        name: "review reminders",
        description: "scheduled lists of pull requests waiting for review, in channels and as a personal digest",
        scopes: &[CHAT_WRITE, IM_WRITE, USERS_READ],
    },
];

impl Feature {
    pub fn spec(self) -> &'static FeatureSpec {
        FEATURES
            .iter()
            .find(|spec| spec.feature == self)
            .expect("every feature has a row in FEATURES")
    }
}

/// Every scope this version needs, each once, in table order.
pub fn required_scopes() -> Vec<&'static str> {
    let mut scopes: Vec<&'static str> = Vec::new();
    for spec in FEATURES {
        for scope in spec.scopes {
            if !scopes.contains(&scope.name) {
                scopes.push(scope.name);
            }
        }
    }
    scopes
}

/// Why the app needs `scope`, for the "Update permissions" list.
pub fn scope_reason(scope: &str) -> Option<&'static str> {
    FEATURES
        .iter()
        .flat_map(|spec| spec.scopes)
        .find(|spec| spec.name == scope)
        .map(|spec| spec.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_has_one_row_and_every_scope_a_reason() {
        let mut seen = Vec::new();
        for spec in FEATURES {
            assert!(!seen.contains(&spec.feature), "{:?} twice", spec.feature);
            seen.push(spec.feature);
            assert_eq!(spec.feature.spec().name, spec.name);
        }
        for scope in required_scopes() {
            assert!(scope_reason(scope).is_some_and(|reason| reason.ends_with('.')));
        }
    }

    #[test]
    fn the_same_scope_always_has_the_same_reason() {
        for a in FEATURES.iter().flat_map(|spec| spec.scopes) {
            for b in FEATURES.iter().flat_map(|spec| spec.scopes) {
                if a.name == b.name {
                    assert_eq!(a.reason, b.reason);
                }
            }
        }
    }
}
