//! Tests of `bitbucket/client.rs`.

use super::*;

fn client(api: &str) -> BitbucketClient {
    BitbucketClient::new(ClientSettings {
        api_url: Url::parse(api).expect("url"),
        oauth_url: Url::parse("https://bitbucket.org/site/oauth2").expect("url"),
        credential: BitbucketCredential::AccessToken(Secret::new("s3cret".into())),
        rate_limit_per_hour: 1000,
        budget_percent: 80,
        request_timeout: REQUEST_TIMEOUT,
    })
    .expect("client")
}

#[test]
fn targets_encode_queries_and_keep_the_query_out_of_what() {
    let client = client("https://api.bitbucket.org/2.0");
    let target = client
        .target(
            &["repositories", "acme/api", "issues"],
            &[
                ("q", "updated_on>\"2026-01-01T00:00:00+00:00\""),
                ("fields", "+x"),
            ],
        )
        .expect("a fine path");
    assert_eq!(target.what, "/2.0/repositories/acme/api/issues");
    assert_eq!(
        target.url.as_str(),
        "https://api.bitbucket.org/2.0/repositories/acme/api/issues?q=updated_on%3E%222026-01-01T00%3A00%3A00%2B00%3A00%22&fields=%2Bx"
    );
    assert_eq!(
        client.token_url.as_str(),
        "https://bitbucket.org/site/oauth2/access_token"
    );
}

/// Whatever a person types, a request goes to `/2.0/repositories/` plus exactly the
/// segments the name has, or to nowhere at all.
#[test]
fn no_input_changes_the_request_path() {
    let client = client("https://api.bitbucket.org/2.0");
    let inputs = [
        "..",
        ".",
        "acme/..",
        "../..",
        "acme/../../user",
        "%2e%2e",
        "acme/%2e%2e",
        "acme/%2f",
        "a?b=c",
        "a#frag",
        "a b",
        "acme\\..",
        "acme/;x",
        "",
        "acme//api",
        "acme/api\r\nHost: evil",
        "\u{0}",
        "acme/\u{ff0e}\u{ff0e}",
    ];
    for input in inputs {
        let parts = input.split('/').count();
        match client.target(&["repositories", input, "pullrequests"], &[]) {
            Err(BitbucketError::InvalidPath { .. }) => {}
            Err(other) => panic!("{input:?}: {other}"),
            Ok(target) => {
                let segments: Vec<&str> = target.url.path_segments().expect("segments").collect();
                assert_eq!(segments.len(), 2 + parts + 1, "{input:?}: {}", target.url);
                assert_eq!(&segments[..2], ["2.0", "repositories"], "{input:?}");
                assert_eq!(segments.last(), Some(&"pullrequests"), "{input:?}");
                assert!(target.url.query().is_none(), "{input:?}: {}", target.url);
                assert!(target.url.fragment().is_none(), "{input:?}: {}", target.url);
                assert_eq!(target.url.host_str(), Some("api.bitbucket.org"));
            }
        }
    }
}

#[test]
fn retry_after_is_clamped_and_garbage_is_ignored() {
    let hour = Duration::from_secs(3600);
    assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after("86400"), Some(hour));
    assert_eq!(parse_retry_after("18446744073709551615"), Some(hour));
    for garbage in [
        "",
        "-5",
        "1.5",
        "soon",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "99999999999999999999999",
    ] {
        assert_eq!(parse_retry_after(garbage), None, "{garbage:?}");
    }
}

#[test]
fn next_links_may_not_leave_the_api() {
    let client = client("https://api.bitbucket.org/2.0/");
    assert!(
        client
            .next_target("https://api.bitbucket.org/2.0/x?page=2", "x")
            .is_ok()
    );
    let error = client
        .next_target("https://evil.example/2.0/x?page=2", "x")
        .err()
        .expect("refused");
    assert!(matches!(error, BitbucketError::Decode { .. }));
}

#[test]
fn bbql_times_are_unquoted_utc() {
    let time: Timestamp = "2026-01-02T03:04:05.5Z".parse().expect("time");
    assert_eq!(bbql_time(time), "2026-01-02T03:04:05.500000+00:00");
}

/// Keeps only the paths `fields` names (plain whitelist entries, as Bitbucket applies
/// them; arrays are transparent), to check that each `FIELDS_*` asks for what the models
/// read.
fn whitelist(value: &serde_json::Value, fields: &str) -> serde_json::Value {
    fn keep(value: &serde_json::Value, paths: &[Vec<&str>]) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Array(items) => Value::Array(items.iter().map(|v| keep(v, paths)).collect()),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (key, child) in map {
                    let below: Vec<Vec<&str>> = paths
                        .iter()
                        .filter(|p| p.first() == Some(&key.as_str()))
                        .map(|p| p[1..].to_vec())
                        .collect();
                    if below.is_empty() {
                        continue;
                    }
                    if below.iter().any(|p| p.is_empty()) {
                        out.insert(key.clone(), child.clone());
                    } else {
                        out.insert(key.clone(), keep(child, &below));
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }
    let paths: Vec<Vec<&str>> = fields.split(',').map(|f| f.split('.').collect()).collect();
    keep(value, &paths)
}

#[test]
fn every_fields_list_asks_for_what_the_models_read() {
    use crate::bitbucket::model::{FeedEntry, Page, Pipeline, PullRequestDetail};
    // Both spellings of the request-changes entry survive the feed's whitelist.
    for key in ["changes_request", "changes_requested"] {
        let page = serde_json::json!({"values": [{
            "pull_request": {"type": "pullrequest", "id": 1},
            key: {"date": "2026-01-01T10:00:00+00:00", "user": {"type": "user", "uuid": "{b}", "display_name": "B"}}
        }]});
        let filtered: Page<FeedEntry> =
            serde_json::from_value(whitelist(&page, FIELDS_FEED)).expect("feed page");
        assert!(
            filtered.values[0].changes_request.is_some(),
            "{key} dropped"
        );
    }
    // A halted pipeline keeps its stage; a pull-request pipeline its source branch.
    let page = serde_json::json!({"values": [{
        "uuid": "{p}", "build_number": 1,
        "state": {"name": "IN_PROGRESS", "type": "pipeline_state_in_progress",
                  "stage": {"name": "HALTED", "type": "pipeline_state_in_progress_halted"}},
        "target": {"type": "pipeline_pullrequest_target", "source": "feature",
                   "destination": "main", "pullrequest": {"id": 7}, "commit": {"hash": "abc"}}
    }]});
    let filtered: Page<Pipeline> =
        serde_json::from_value(whitelist(&page, FIELDS_PIPELINES)).expect("pipelines");
    let pipeline = &filtered.values[0];
    let stage = pipeline.state.as_ref().and_then(|s| s.stage.as_ref());
    assert_eq!(stage.and_then(|s| s.name.as_deref()), Some("HALTED"));
    let target = pipeline.target.as_ref().expect("target");
    assert_eq!(target.branch().as_deref(), Some("feature"));
    assert_eq!(target.pullrequest.as_ref().and_then(|p| p.id), Some(7));
    // A pull request's reviewers and the participants' roles.
    let detail = serde_json::json!({"id": 3, "state": "OPEN",
        "reviewers": [{"type": "user", "uuid": "{r}", "display_name": "R"}],
        "participants": [{"type": "participant", "role": "REVIEWER", "approved": false,
                          "user": {"type": "user", "uuid": "{r}"}}]});
    let filtered: PullRequestDetail =
        serde_json::from_value(whitelist(&detail, FIELDS_PULL_REQUEST)).expect("detail");
    assert_eq!(filtered.reviewers.map(|r| r.len()), Some(1));
    assert_eq!(filtered.participants[0].role.as_deref(), Some("REVIEWER"));
}

#[test]
fn the_debug_form_shows_no_credential() {
    assert!(!format!("{:?}", client("https://api.bitbucket.org/2.0/")).contains("s3cret"));
}
