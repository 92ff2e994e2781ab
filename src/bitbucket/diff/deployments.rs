//! Pure: the deployment lane (Bitbucket Deployments, read with the pipelines, only for
//! repositories whose subscribers want deployments and only when it can matter: while a
//! pipeline runs or just changed, while a deployment is in progress, and once an hour).
//! The newest deployments against the remembered ones give deployments started,
//! succeeded, failed and stopped, per environment.
//!
//! Owns the deployment cursor: which deployments are known and their phase, what is
//! history (the first read records the present and emits nothing), and the environments'
//! names (a deployment carries only its environment's uuid). Must never do I/O, read the
//! clock (`now` is passed in) or spawn.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::{RepoCursor, activity, actor};
use crate::bitbucket::activity::{Activity, ActivityKind, DeploymentRef};
use crate::bitbucket::model::{Deployment, DeploymentEnvironment};

/// Deployments remembered per repository (the newest ones).
const KNOWN_DEPLOYMENTS: usize = 50;
/// Deployments are read at least this often while anyone wants them.
pub const DEPLOYMENTS_ROUTINE: SignedDuration = SignedDuration::from_hours(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentPhase {
    /// UNDEPLOYED: waiting (a manual step may never run it).
    Pending,
    Running,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDeployment {
    pub started_on: Option<Timestamp>,
    pub phase: DeploymentPhase,
}

/// What the deployment lane remembers. Stored in the repository's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentCursor {
    /// Deployments started before this are history; `None` before the first read.
    pub since: Option<Timestamp>,
    pub known: BTreeMap<String, KnownDeployment>,
    /// Environment uuid to name.
    pub environments: BTreeMap<String, String>,
    /// When deployments were last read.
    pub read_at: Option<Timestamp>,
}

impl DeploymentCursor {
    /// Whether a known deployment is in progress (the pipelines lane stays hot).
    pub fn running(&self) -> bool {
        self.known
            .values()
            .any(|known| known.phase == DeploymentPhase::Running)
    }

    /// Whether reading deployments now can find anything: never read yet, pipelines
    /// running or just changed (`pipelines_moved`), a deployment in progress, or an hour
    /// since the last read.
    pub fn due(&self, pipelines_moved: bool, now: Timestamp) -> bool {
        self.since.is_none()
            || pipelines_moved
            || self.running()
            || self
                .read_at
                .is_none_or(|read| now >= read + DEPLOYMENTS_ROUTINE)
    }

    /// The environments named by `deployments` whose names are not known yet.
    pub fn unnamed_environments(&self, deployments: &[Deployment]) -> Vec<String> {
        let mut unnamed: Vec<String> = deployments
            .iter()
            .filter_map(|d| d.environment.as_ref())
            .filter(|env| env.name.is_none() && !self.environments.contains_key(&env.uuid))
            .map(|env| env.uuid.clone())
            .collect();
        unnamed.sort();
        unnamed.dedup();
        unnamed
    }

    /// Remembers the environments' names.
    pub fn name_environments(&mut self, environments: &[DeploymentEnvironment]) {
        for env in environments {
            if let Some(name) = &env.name {
                self.environments.insert(env.uuid.clone(), name.clone());
            }
        }
    }
}

fn phase(deployment: &Deployment) -> DeploymentPhase {
    match deployment.state.as_ref().and_then(|s| s.name.as_deref()) {
        Some("COMPLETED") => DeploymentPhase::Completed,
        Some("IN_PROGRESS") => DeploymentPhase::Running,
        _ => DeploymentPhase::Pending,
    }
}

fn started_on(deployment: &Deployment) -> Option<Timestamp> {
    deployment.state.as_ref().and_then(|s| s.start_date)
}

fn deployment_ref(cursor: &DeploymentCursor, deployment: &Deployment) -> DeploymentRef {
    let state = deployment.state.as_ref();
    let environment = deployment
        .environment
        .as_ref()
        .map(|env| {
            env.name
                .clone()
                .or_else(|| cursor.environments.get(&env.uuid).cloned())
                .unwrap_or_else(|| env.uuid.clone())
        })
        .unwrap_or_else(|| "an environment".into());
    let release = deployment.release.as_ref();
    let duration_secs = match (
        started_on(deployment),
        state.and_then(|s| s.completion_date),
    ) {
        (Some(start), Some(end)) => u64::try_from(end.duration_since(start).as_secs()).ok(),
        _ => None,
    };
    DeploymentRef {
        uuid: deployment.uuid.clone(),
        environment,
        release: release.and_then(|r| r.name.clone()),
        commit: release
            .and_then(|r| r.commit.as_ref())
            .and_then(|c| c.hash.clone()),
        url: state
            .and_then(|s| s.url.clone())
            .or_else(|| release.and_then(|r| r.url.clone())),
        duration_secs,
    }
}

/// The newest deployments (any order): new ones and state changes become activities.
/// The first read (`since` is `None`) records them all as history.
pub fn deployments(
    cursor: &mut RepoCursor,
    repo: &str,
    page: &[Deployment],
    now: Timestamp,
) -> Vec<Activity> {
    let state = &mut cursor.deployments;
    let first = state.since.is_none();
    let since = *state.since.get_or_insert(now);
    state.read_at = Some(now);
    let mut ordered: Vec<&Deployment> = page.iter().collect();
    ordered.sort_by_key(|d| (started_on(d), d.uuid.clone()));
    let mut activities = Vec::new();
    for deployment in ordered {
        let phase = phase(deployment);
        let started = started_on(deployment);
        let previous = state.known.get(&deployment.uuid).map(|k| k.phase);
        state.known.insert(
            deployment.uuid.clone(),
            KnownDeployment {
                started_on: started,
                phase,
            },
        );
        let history = first || (previous.is_none() && started.is_some_and(|at| at < since));
        if history || previous == Some(DeploymentPhase::Completed) {
            continue;
        }
        let reference = deployment_ref(state, deployment);
        let who = actor(&deployment.state.as_ref().and_then(|s| s.deployer.clone()));
        let link = reference.url.clone();
        let uuid = &deployment.uuid;
        if phase == DeploymentPhase::Running && previous != Some(DeploymentPhase::Running) {
            activities.push(activity(
                format!("{repo}:deployment:{uuid}:started"),
                repo,
                started.unwrap_or(now),
                who.clone(),
                link.clone(),
                ActivityKind::DeploymentStarted {
                    deployment: reference.clone(),
                },
            ));
        }
        if phase == DeploymentPhase::Completed {
            let result = deployment
                .state
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.name.as_deref());
            let (suffix, kind) = match result {
                Some("SUCCESSFUL") => (
                    "succeeded",
                    ActivityKind::DeploymentSucceeded {
                        deployment: reference,
                    },
                ),
                Some("FAILED") => (
                    "failed",
                    ActivityKind::DeploymentFailed {
                        deployment: reference,
                    },
                ),
                _ => (
                    "stopped",
                    ActivityKind::DeploymentStopped {
                        deployment: reference,
                    },
                ),
            };
            let completed = deployment.state.as_ref().and_then(|s| s.completion_date);
            activities.push(activity(
                format!("{repo}:deployment:{uuid}:{suffix}"),
                repo,
                completed.or(started).unwrap_or(now),
                who,
                link,
                kind,
            ));
        }
    }
    while state.known.len() > KNOWN_DEPLOYMENTS {
        let oldest = state
            .known
            .iter()
            .filter(|(_, k)| k.phase != DeploymentPhase::Running)
            .min_by_key(|(_, k)| k.started_on)
            .map(|(uuid, _)| uuid.clone());
        // What is forgotten becomes history: `since` moves past it.
        let Some(forgotten) = oldest.and_then(|uuid| state.known.remove(&uuid)) else {
            break;
        };
        if let Some(after) = forgotten
            .started_on
            .and_then(|at| at.checked_add(SignedDuration::from_nanos(1)).ok())
        {
            state.since = Some(state.since.map_or(after, |since| since.max(after)));
        }
    }
    activities
}

/// Nobody wants deployments (any more): forget them (but not the environments' names),
/// so turning them on again starts from the present.
pub fn forget_deployments(cursor: &mut RepoCursor) {
    let environments = std::mem::take(&mut cursor.deployments.environments);
    cursor.deployments = DeploymentCursor {
        environments,
        ..DeploymentCursor::default()
    };
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    fn entry(n: u64, env: &str, minute: i64, state: &str, status: Option<&str>) -> Value {
        let mut state = json!({"name": state, "start_date": time(minute),
            "url": format!("https://bb/deployments/{n}"),
            "deployer": {"display_name": "Ada", "uuid": "{ada}"}});
        if let Some(status) = status {
            state["status"] = json!({"name": status});
            state["completion_date"] = json!(time(minute + 2));
        }
        json!({"uuid": format!("{{d{n}}}"), "state": state, "environment": {"uuid": env},
               "release": {"name": format!("#{n}"), "commit": {"hash": format!("c{n}")}}})
    }

    fn page(values: Value) -> Vec<Deployment> {
        serde_json::from_value(values).expect("deployments")
    }

    #[test]
    fn the_first_read_is_history_then_deployments_start_and_finish() {
        let mut cursor = baselined();
        assert!(cursor.deployments.due(false, at(0)), "never read");
        let old = page(json!([entry(
            1,
            "{prod}",
            -30,
            "COMPLETED",
            Some("FAILED")
        )]));
        assert_eq!(
            cursor.deployments.unnamed_environments(&old),
            vec!["{prod}"]
        );
        let environments: Vec<DeploymentEnvironment> =
            serde_json::from_value(json!([{"uuid": "{prod}", "name": "Production"}]))
                .expect("environments");
        cursor.deployments.name_environments(&environments);
        assert!(cursor.deployments.unnamed_environments(&old).is_empty());
        assert!(deployments(&mut cursor, REPO, &old, at(1)).is_empty());
        assert!(!cursor.deployments.due(false, at(30)));
        assert!(cursor.deployments.due(true, at(30)), "pipelines moved");
        assert!(cursor.deployments.due(false, at(61)), "the hourly read");

        let read = page(json!([
            entry(2, "{prod}", 5, "IN_PROGRESS", None),
            entry(3, "{staging}", 4, "UNDEPLOYED", None),
            entry(1, "{prod}", -30, "COMPLETED", Some("FAILED"))
        ]));
        let found = deployments(&mut cursor, REPO, &read, at(6));
        assert_eq!(kinds(&found), vec!["deployment:{d2}:started"]);
        let ActivityKind::DeploymentStarted { deployment } = &found[0].kind else {
            panic!("{found:?}");
        };
        assert_eq!(deployment.environment, "Production");
        assert_eq!(deployment.release.as_deref(), Some("#2"));
        assert_eq!(deployment.commit.as_deref(), Some("c2"));
        assert_eq!(
            found[0].actor.as_ref().map(|a| a.display_name.as_str()),
            Some("Ada")
        );
        assert!(cursor.deployments.running());
        assert!(cursor.deployments.due(false, at(7)), "in progress");
        // The same page again (a redo): nothing.
        assert!(deployments(&mut cursor, REPO, &read, at(7)).is_empty());

        let read = page(json!([
            entry(2, "{prod}", 5, "COMPLETED", Some("SUCCESSFUL")),
            entry(3, "{staging}", 8, "COMPLETED", Some("STOPPED")),
            entry(4, "{staging}", 9, "COMPLETED", Some("FAILED"))
        ]));
        let found = deployments(&mut cursor, REPO, &read, at(12));
        assert_eq!(
            kinds(&found),
            vec![
                "deployment:{d2}:succeeded",
                "deployment:{d3}:stopped",
                "deployment:{d4}:failed"
            ]
        );
        let ActivityKind::DeploymentSucceeded { deployment } = &found[0].kind else {
            panic!("{found:?}");
        };
        assert_eq!(deployment.duration_secs, Some(120));
        let ActivityKind::DeploymentFailed { deployment } = &found[2].kind else {
            panic!("{found:?}");
        };
        assert_eq!(deployment.environment, "{staging}", "no name: the uuid");
        assert!(!cursor.deployments.running());
        assert!(deployments(&mut cursor, REPO, &read, at(13)).is_empty());

        forget_deployments(&mut cursor);
        assert!(cursor.deployments.since.is_none());
        assert_eq!(cursor.deployments.environments.len(), 1);
    }
}
