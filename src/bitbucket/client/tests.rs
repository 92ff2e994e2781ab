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
fn bbql_times_are_quoted_utc() {
    let time: Timestamp = "2026-01-02T03:04:05.5Z".parse().expect("time");
    assert_eq!(bbql_time(time), "\"2026-01-02T03:04:05.500000+00:00\"");
}

#[test]
fn the_debug_form_shows_no_credential() {
    assert!(!format!("{:?}", client("https://api.bitbucket.org/2.0/")).contains("s3cret"));
}
