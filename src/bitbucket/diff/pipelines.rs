//! Pure: the pipeline lane. The newest pipelines against the remembered ones give
//! started, succeeded, failed, stopped and fixed (a success after a failure on the same
//! branch).
//!
//! Every state of the API description has one deliberate meaning: PENDING waits;
//! IN_PROGRESS is running (stage RUNNING or none), or halted (stage PAUSED or HALTED: a
//! manual step waits for a person, which is not news and does not keep the repository
//! hot); COMPLETED carries a result: SUCCESSFUL succeeded (or fixed), FAILED and ERROR
//! failed, EXPIRED failed too (a halted pipeline that nobody resumed; the message says
//! "expired"), STOPPED was stopped. A pull-request pipeline's branch is its source branch.
//!
//! Owns the pipeline cursor: which pipelines are known and their phase, what is history,
//! the last result per branch. Must never do I/O, read the clock (`now` is passed in) or
//! spawn.

use jiff::{SignedDuration, Timestamp};

use super::{KnownPipeline, PipelinePhase, RepoCursor, activity, actor};
use crate::bitbucket::activity::{Activity, ActivityKind, PipelineRef};
use crate::bitbucket::model::{Pipeline, PipelineTarget};

/// Pipelines remembered per repository (the newest ones).
const KNOWN_PIPELINES: usize = 50;

fn phase(pipeline: &Pipeline) -> PipelinePhase {
    let state = pipeline.state.as_ref();
    let stage = state
        .and_then(|s| s.stage.as_ref())
        .and_then(|stage| stage.name.as_deref());
    match state.and_then(|s| s.name.as_deref()) {
        Some("COMPLETED") => PipelinePhase::Completed,
        Some("IN_PROGRESS") => match stage {
            Some("PAUSED") | Some("HALTED") => PipelinePhase::Halted,
            _ => PipelinePhase::Running,
        },
        _ => PipelinePhase::Pending,
    }
}

/// Whether a completed pipeline's result counts as a failure (for "failed" and "fixed").
fn is_failure(result: &str) -> bool {
    matches!(result, "FAILED" | "ERROR" | "EXPIRED")
}

fn result_name(pipeline: &Pipeline) -> String {
    pipeline
        .state
        .as_ref()
        .and_then(|s| s.result.as_ref())
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| "UNKNOWN".into())
}

fn pipeline_ref(pipeline: &Pipeline) -> PipelineRef {
    let target = pipeline.target.as_ref();
    let duration_secs = match (pipeline.created_on, pipeline.completed_on) {
        (Some(start), Some(end)) => u64::try_from(end.duration_since(start).as_secs()).ok(),
        _ => None,
    };
    let result = pipeline
        .state
        .as_ref()
        .and_then(|s| s.result.as_ref())
        .and_then(|r| r.name.clone());
    PipelineRef {
        uuid: pipeline.uuid.clone(),
        build_number: pipeline.build_number,
        branch: target.and_then(PipelineTarget::branch),
        commit: target
            .and_then(|t| t.commit.as_ref())
            .and_then(|c| c.hash.clone()),
        duration_secs,
        pull_request: target
            .and_then(|t| t.pullrequest.as_ref())
            .and_then(|p| p.id),
        result,
        pull_request_author: None,
    }
}

/// The newest pipelines (as received, newest first): new ones and state changes become
/// activities. A pipeline created before the cursor's `since` is history.
pub fn pipelines(
    cursor: &mut RepoCursor,
    repo: &str,
    page: &[Pipeline],
    now: Timestamp,
) -> Vec<Activity> {
    let mut activities = Vec::new();
    let mut ordered: Vec<&Pipeline> = page.iter().collect();
    ordered.sort_by_key(|p| (p.created_on, p.build_number));
    for pipeline in ordered {
        for mut found in apply_pipeline(cursor, repo, pipeline, now) {
            note_pull_request_author(cursor, &mut found);
            activities.push(found);
        }
    }
    let state = &mut cursor.pipelines;
    while state.known.len() > KNOWN_PIPELINES {
        let oldest = state
            .known
            .iter()
            .filter(|(_, k)| k.phase == PipelinePhase::Completed)
            .min_by_key(|(_, k)| k.created_on)
            .map(|(uuid, _)| uuid.clone());
        // What is forgotten becomes history: `since` moves past it.
        let Some(forgotten) = oldest.and_then(|uuid| state.known.remove(&uuid)) else {
            break;
        };
        let after = forgotten
            .created_on
            .checked_add(SignedDuration::from_nanos(1))
            .unwrap_or(forgotten.created_on);
        state.since = Some(state.since.map_or(after, |since| since.max(after)));
    }
    activities
}

/// Records who wrote the pull request a pipeline ran for: the pull request it names, else
/// the open pull request whose source branch it ran on (for personal notifications).
fn note_pull_request_author(cursor: &RepoCursor, found: &mut Activity) {
    let pipeline = match &mut found.kind {
        ActivityKind::PipelineStarted { pipeline }
        | ActivityKind::PipelineSucceeded { pipeline }
        | ActivityKind::PipelineFailed { pipeline }
        | ActivityKind::PipelineStopped { pipeline }
        | ActivityKind::PipelineFixed { pipeline } => pipeline,
        _ => return,
    };
    let tracked = match pipeline.pull_request {
        Some(id) => cursor.pull_requests.get(&id),
        None => pipeline.branch.as_deref().and_then(|branch| {
            cursor
                .pull_requests
                .values()
                .find(|tracked| tracked.source_branch.as_deref() == Some(branch))
        }),
    };
    pipeline.pull_request_author = tracked.and_then(|tracked| tracked.author.clone());
}

fn apply_pipeline(
    cursor: &mut RepoCursor,
    repo: &str,
    pipeline: &Pipeline,
    now: Timestamp,
) -> Vec<Activity> {
    let state = &mut cursor.pipelines;
    state.seen_any = true;
    let created_on = pipeline.created_on.unwrap_or(now);
    let phase = phase(pipeline);
    let previous = state.known.get(&pipeline.uuid).map(|k| k.phase);
    let is_history = previous.is_none() && state.since.is_some_and(|since| created_on < since);
    state
        .known
        .insert(pipeline.uuid.clone(), KnownPipeline { created_on, phase });
    let branch = pipeline.target.as_ref().and_then(PipelineTarget::branch);
    if is_history || previous == Some(PipelinePhase::Completed) {
        if is_history && phase == PipelinePhase::Completed {
            if let Some(branch) = branch {
                state.last_result.insert(branch, result_name(pipeline));
            }
        }
        return Vec::new();
    }
    let mut activities = Vec::new();
    let who = actor(&pipeline.creator);
    // A halted pipeline was running before (or is not news); resuming it is not a start.
    let started = matches!(
        previous,
        Some(PipelinePhase::Running) | Some(PipelinePhase::Halted)
    );
    if phase == PipelinePhase::Running && !started {
        activities.push(activity(
            format!("{repo}:pipeline:{}:started", pipeline.uuid),
            repo,
            created_on,
            who.clone(),
            None,
            ActivityKind::PipelineStarted {
                pipeline: pipeline_ref(pipeline),
            },
        ));
    }
    if phase == PipelinePhase::Completed {
        let result = result_name(pipeline);
        let failed_before = branch
            .as_ref()
            .and_then(|b| state.last_result.get(b))
            .is_some_and(|r| is_failure(r));
        if let Some(branch) = branch {
            state.last_result.insert(branch, result.clone());
        }
        let reference = pipeline_ref(pipeline);
        let (suffix, kind) = match result.as_str() {
            "SUCCESSFUL" if failed_before => (
                "fixed",
                ActivityKind::PipelineFixed {
                    pipeline: reference,
                },
            ),
            "SUCCESSFUL" => (
                "succeeded",
                ActivityKind::PipelineSucceeded {
                    pipeline: reference,
                },
            ),
            failure if is_failure(failure) => (
                "failed",
                ActivityKind::PipelineFailed {
                    pipeline: reference,
                },
            ),
            _ => (
                "stopped",
                ActivityKind::PipelineStopped {
                    pipeline: reference,
                },
            ),
        };
        activities.push(activity(
            format!("{repo}:pipeline:{}:{suffix}", pipeline.uuid),
            repo,
            pipeline.completed_on.unwrap_or(now),
            who,
            None,
            kind,
        ));
    }
    activities
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::bitbucket::diff::test_support::*;

    fn pipeline(number: u64, minute: i64, state: &str, result: Option<&str>) -> Value {
        let mut state = json!({"name": state});
        if let Some(result) = result {
            state["result"] = json!({"name": result});
        }
        json!({"uuid": format!("{{p{number}}}"), "build_number": number, "state": state,
               "target": {"ref_name": "main"}, "created_on": time(minute), "completed_on": time(minute + 3)})
    }

    #[test]
    fn pipelines_start_finish_and_get_fixed() {
        let mut cursor = baselined();
        let history = vec![pipeline(1, -10, "COMPLETED", Some("FAILED"))];
        let page: Vec<Pipeline> = serde_json::from_value(json!(history)).expect("page");
        assert!(pipelines(&mut cursor, REPO, &page, at(2)).is_empty());
        let page: Vec<Pipeline> = serde_json::from_value(json!([
            pipeline(3, 5, "PENDING", None),
            pipeline(2, 4, "IN_PROGRESS", None),
            pipeline(1, -10, "COMPLETED", Some("FAILED"))
        ]))
        .expect("page");
        assert_eq!(
            kinds(&pipelines(&mut cursor, REPO, &page, at(6))),
            vec!["pipeline:{p2}:started"]
        );
        assert!(cursor.pipelines_running());
        let page: Vec<Pipeline> = serde_json::from_value(json!([
            pipeline(3, 5, "COMPLETED", Some("STOPPED")),
            pipeline(2, 4, "COMPLETED", Some("SUCCESSFUL"))
        ]))
        .expect("page");
        assert_eq!(
            kinds(&pipelines(&mut cursor, REPO, &page, at(9))),
            vec!["pipeline:{p2}:fixed", "pipeline:{p3}:stopped"]
        );
        assert!(!cursor.pipelines_running());
    }
    #[test]
    fn halted_pipelines_are_not_running_and_expired_is_a_failure() {
        let mut cursor = baselined();
        let mut halted = pipeline(2, 4, "IN_PROGRESS", None);
        halted["state"]["stage"] = json!({"name": "HALTED"});
        let page: Vec<Pipeline> = serde_json::from_value(json!([halted])).expect("page");
        assert!(
            pipelines(&mut cursor, REPO, &page, at(5)).is_empty(),
            "halted is not started"
        );
        assert!(
            !cursor.pipelines_running(),
            "a halted pipeline does not keep the repository hot"
        );
        let page: Vec<Pipeline> =
            serde_json::from_value(json!([pipeline(2, 4, "COMPLETED", Some("EXPIRED"))]))
                .expect("page");
        let found = pipelines(&mut cursor, REPO, &page, at(9));
        assert_eq!(kinds(&found), vec!["pipeline:{p2}:failed"]);
        let ActivityKind::PipelineFailed {
            pipeline: reference,
        } = &found[0].kind
        else {
            panic!("failed");
        };
        assert_eq!(reference.result.as_deref(), Some("EXPIRED"));
        let mut running = pipeline(3, 10, "IN_PROGRESS", None);
        running["state"]["stage"] = json!({"name": "RUNNING"});
        let page: Vec<Pipeline> = serde_json::from_value(json!([running])).expect("page");
        assert_eq!(
            kinds(&pipelines(&mut cursor, REPO, &page, at(11))),
            vec!["pipeline:{p3}:started"]
        );
    }

    #[test]
    fn pull_request_pipelines_track_their_source_branch_for_fixed() {
        let mut cursor = baselined();
        let pr_pipeline = |number: u64, minute: i64, result: &str| {
            let mut value = pipeline(number, minute, "COMPLETED", Some(result));
            value["target"] = json!({"type": "pipeline_pullrequest_target", "source": "feature",
                                     "destination": "main", "pullrequest": {"id": 4},
                                     "commit": {"hash": "abc"}});
            value
        };
        let page: Vec<Pipeline> =
            serde_json::from_value(json!([pr_pipeline(2, 4, "FAILED")])).expect("page");
        let found = pipelines(&mut cursor, REPO, &page, at(8));
        let ActivityKind::PipelineFailed {
            pipeline: reference,
        } = &found[0].kind
        else {
            panic!("failed");
        };
        assert_eq!(reference.branch.as_deref(), Some("feature"));
        assert_eq!(reference.pull_request, Some(4));
        let page: Vec<Pipeline> =
            serde_json::from_value(json!([pr_pipeline(3, 9, "SUCCESSFUL")])).expect("page");
        assert_eq!(
            kinds(&pipelines(&mut cursor, REPO, &page, at(13))),
            vec!["pipeline:{p3}:fixed"]
        );
    }
}
