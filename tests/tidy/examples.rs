//! Each tidy rule fails on a bad example and stays quiet on a good one, run on small crates
//! held in memory; and the reader under them handles what used to slip past the greps:
//! grouped `use` trees, code after a test module, nested braces in a test module, needles in
//! strings and comments.

use super::*;

/// A crate of (path under `src/`, text) files.
fn krate(files: &[(&str, &str)]) -> Crate {
    let sources = files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    Crate::new(sources, &externs())
}

/// `file:line` of each offence, for short assertions.
fn places(offences: &[Offence]) -> Vec<String> {
    offences
        .iter()
        .map(|offence| format!("{}:{}", offence.file, offence.line))
        .collect()
}

fn paths_of(krate: &Crate, file: &str) -> Vec<String> {
    krate
        .files
        .iter()
        .find(|f| f.path == file)
        .expect("file in the example")
        .paths
        .iter()
        .map(|path| path.full())
        .collect()
}

// --- The reader -------------------------------------------------------------------------

#[test]
fn grouped_use_trees_are_expanded_into_whole_paths() {
    let krate = krate(&[
        ("lib.rs", "//! x\npub mod store;\npub mod notify;\n"),
        ("store/mod.rs", "//! x\npub struct Store;\n"),
        (
            "notify/mod.rs",
            "//! x\nuse std::{fs, io::{self, Read as _}};\nuse crate::store::{self as s, Store};\n\
             use ::tokio::{spawn};\n",
        ),
    ]);
    let paths = paths_of(&krate, "notify/mod.rs");
    for expected in [
        "std::fs",
        "std::io",
        "std::io::Read",
        "crate::store",
        "crate::store::Store",
        "tokio::spawn",
    ] {
        assert!(
            paths.contains(&expected.to_string()),
            "{expected} in {paths:?}"
        );
    }
}

#[test]
fn super_self_child_modules_and_imported_names_resolve_to_crate_paths() {
    let krate = krate(&[
        (
            "lib.rs",
            "//! x\npub mod upgrade;\npub mod commands;\npub mod store;\n",
        ),
        ("commands/mod.rs", "//! x\npub struct Reply;\n"),
        ("store/mod.rs", "//! x\npub struct Store;\n"),
        (
            "upgrade/mod.rs",
            "//! x\npub mod campaign;\npub mod messages;\nuse messages::Text;\n",
        ),
        ("upgrade/messages.rs", "//! x\npub struct Text;\n"),
        (
            "upgrade/campaign.rs",
            "//! x\nuse super::messages;\nuse self::inner::Thing;\nuse crate::store;\n\
             mod inner {\n    use super::super::super::commands::Reply;\n    pub struct Thing;\n}\n\
             fn f() { let _ = store::Store; let _ = messages::Text; }\n",
        ),
    ]);
    let campaign = paths_of(&krate, "upgrade/campaign.rs");
    for expected in [
        "crate::upgrade::messages",
        "crate::upgrade::campaign::inner::Thing",
        "crate::commands::Reply",
        "crate::store",
        "crate::store::Store",
        "crate::upgrade::messages::Text",
    ] {
        assert!(
            campaign.contains(&expected.to_string()),
            "{expected} in {campaign:?}"
        );
    }
    assert!(paths_of(&krate, "upgrade/mod.rs").contains(&"crate::upgrade::messages::Text".into()));
}

#[test]
fn code_after_a_test_module_is_code_and_nested_braces_close_the_test_module() {
    let text = "//! x\n\
                #[cfg(test)]\n\
                mod tests {\n\
                    mod inner { fn a() { if true { {} } } }\n\
                    fn b() { let _ = std::fs::read(\"t\"); }\n\
                }\n\
                fn after() { let _ = std::fs::read(\"x\"); }\n\
                #[cfg(test)]\n\
                mod more_tests { fn c() { let _ = 1; } }\n\
                fn last() { x.unwrap() }\n";
    let krate = krate(&[("commands/mod.rs", text)]);
    let file = &krate.files[0];
    let lines_in_test: BTreeSet<usize> = file
        .tokens
        .iter()
        .filter(|t| t.in_test)
        .map(|t| t.line)
        .collect();
    assert_eq!(lines_in_test, BTreeSet::from([2, 3, 4, 5, 6, 8, 9]));
    // The test module's own fs read is reported too (purity covers test code), and so is the
    // one after it; the unwrap after the second test module is outside tests.
    assert_eq!(
        places(&purity(&krate)),
        vec!["commands/mod.rs:5", "commands/mod.rs:7"]
    );
    assert_eq!(
        places(&unwrap_or_debug_leftovers(&krate)),
        vec!["commands/mod.rs:10"]
    );
}

#[test]
fn a_file_declared_by_cfg_test_mod_is_test_code() {
    let parent = "//! x\n#[cfg(test)]\nmod tests;\nmod real;\n";
    let krate = krate(&[
        ("lib.rs", "//! x\npub mod upgrade;\n"),
        ("upgrade/mod.rs", parent),
        ("upgrade/tests.rs", "//! x\nfn t() { x.unwrap(); }\n"),
        ("upgrade/real.rs", "//! x\nfn t() { x.unwrap(); }\n"),
    ]);
    assert_eq!(
        places(&unwrap_or_debug_leftovers(&krate)),
        vec!["upgrade/real.rs:2"]
    );
}

#[test]
fn needles_in_strings_and_comments_never_fire() {
    let text = "//! Never calls std::fs::read, tokio::spawn or sled::open.\n\
                // use std::{fs, io};\n\
                /* tokio::spawn(x.unwrap()) /* nested */ Timestamp::now() */\n\
                const A: &str = \"std::fs::read tokio::spawn x.unwrap() sled::open\";\n\
                const B: &str = r#\"anyhow::bail!(\"x\") .expose() \"#;\n\
                const C: char = '\"';\n\
                const D: &[u8] = b\"static mut X\";\n\
                fn f<'a>(x: &'a str) -> &'static str { \"OnceLock\" }\n";
    let krate = krate(&[("commands/mod.rs", text)]);
    assert!(purity(&krate).is_empty());
    assert!(unwrap_or_debug_leftovers(&krate).is_empty());
    assert!(sled_outside_store(&krate).is_empty());
    assert!(anyhow_outside_main_and_app(&krate).is_empty());
    assert!(globals(&krate).is_empty());
    assert!(wall_clock_outside_clock(&krate).is_empty());
    assert!(secrets(&krate).is_empty());
}

// --- Purity -----------------------------------------------------------------------------

#[test]
fn purity_fails_on_io_clock_and_spawn_in_a_pure_module() {
    let bad = "//! x\n\
               use std::{fs, io};\n\
               use std::time::Instant;\n\
               fn f() {\n\
                   let _ = std::env::var(\"X\");\n\
                   tokio::task::yield_now();\n\
                   let _ = Instant::now();\n\
                   runtime.spawn(async {});\n\
                   let _ = clock.now();\n\
               }\n";
    let krate = krate(&[("notify/render.rs", bad), ("app/mod.rs", bad)]);
    assert_eq!(
        places(&purity(&krate)),
        vec![
            "notify/render.rs:2",
            "notify/render.rs:2",
            "notify/render.rs:5",
            "notify/render.rs:6",
            "notify/render.rs:7",
            "notify/render.rs:8",
            "notify/render.rs:9",
        ]
    );
}

#[test]
fn purity_passes_on_values_in_values_out() {
    let good = "//! x\n\
                use std::collections::BTreeMap;\n\
                use std::fmt::Write;\n\
                use jiff::Timestamp;\n\
                pub fn f(now: Timestamp, out: &mut String) -> BTreeMap<u8, u8> {\n\
                    let _ = write!(out, \"{now}\");\n\
                    BTreeMap::new()\n\
                }\n";
    let krate = krate(&[("upgrade/campaign.rs", good)]);
    assert!(purity(&krate).is_empty(), "{:?}", purity(&krate));
}

// --- Layering ---------------------------------------------------------------------------

const BITBUCKET_FACADE: &str = "//! x\npub mod client;\npub mod name;\n\
                                pub use client::BitbucketClient;\npub use name::RepositoryName;\n";

#[test]
fn layering_fails_when_a_pure_module_imports_an_edge_module_or_anyone_imports_app() {
    let krate = krate(&[
        (
            "lib.rs",
            "//! x\npub mod app;\npub mod bitbucket;\npub mod notify;\npub mod slack;\n\
             pub mod store;\n",
        ),
        ("app/mod.rs", "//! x\npub struct Wiring;\n"),
        (
            "store/mod.rs",
            "//! x\npub struct Store;\nuse crate::app::Wiring;\n",
        ),
        ("slack/mod.rs", "//! x\npub mod web;\npub mod envelope;\n"),
        ("slack/web.rs", "//! x\npub struct SlackWeb;\n"),
        ("slack/envelope.rs", "//! x\npub struct Frame;\n"),
        ("bitbucket/mod.rs", BITBUCKET_FACADE),
        (
            "bitbucket/client.rs",
            "//! x\npub struct BitbucketClient;\n",
        ),
        ("bitbucket/name.rs", "//! x\npub struct RepositoryName;\n"),
        ("notify/mod.rs", "//! x\npub mod render;\n"),
        (
            "notify/render.rs",
            "//! x\nuse crate::store::{Store};\n\
             fn f() { crate::slack::web::SlackWeb; }\n\
             use super::super::bitbucket::BitbucketClient;\n\
             use crate::bitbucket::RepositoryName;\nuse crate::slack::envelope::Frame;\n",
        ),
    ]);
    let offences = layering(&krate);
    assert_eq!(
        places(&offences),
        vec![
            "notify/render.rs:2",
            "notify/render.rs:3",
            "notify/render.rs:4",
            "store/mod.rs:3",
        ]
    );
    let keys: Vec<String> = offences.iter().map(layering_key).collect();
    assert_eq!(
        keys,
        vec![
            "notify/render.rs -> store/mod.rs",
            "notify/render.rs -> slack/web.rs",
            "notify/render.rs -> bitbucket/client.rs",
            "store/mod.rs -> app/mod.rs",
        ]
    );

    // Listed offences are tolerated; a listed one that no longer happens fails.
    let known = [
        "notify/render.rs -> store/mod.rs",
        "notify/render.rs -> slack/web.rs",
        "notify/render.rs -> bitbucket/client.rs",
        "store/mod.rs -> app/mod.rs",
        "notify/mod.rs -> store/mod.rs",
    ];
    let (new, stale) = layering_against(&krate, &known);
    assert!(new.is_empty());
    assert_eq!(
        stale,
        vec![
            "`notify/mod.rs -> store/mod.rs` no longer happens: delete it from \
             KNOWN_LAYERING_OFFENCES_BEING_REMOVED"
        ]
    );
}

#[test]
fn layering_passes_when_pure_modules_import_pure_files_only() {
    let krate = krate(&[
        (
            "lib.rs",
            "//! x\npub mod app;\npub mod bitbucket;\npub mod notify;\npub mod slack;\n",
        ),
        (
            "app/mod.rs",
            "//! x\nuse crate::notify::render;\nuse crate::slack::web::SlackWeb;\n",
        ),
        ("slack/mod.rs", "//! x\npub mod web;\npub mod envelope;\n"),
        ("slack/web.rs", "//! x\npub struct SlackWeb;\n"),
        ("slack/envelope.rs", "//! x\npub struct Frame;\n"),
        ("bitbucket/mod.rs", BITBUCKET_FACADE),
        (
            "bitbucket/client.rs",
            "//! x\npub struct BitbucketClient;\n",
        ),
        ("bitbucket/name.rs", "//! x\npub struct RepositoryName;\n"),
        ("notify/mod.rs", "//! x\npub mod render;\n"),
        (
            "notify/render.rs",
            "//! x\nuse crate::bitbucket::RepositoryName;\nuse crate::slack::envelope::Frame;\n",
        ),
    ]);
    assert!(layering(&krate).is_empty(), "{:?}", layering(&krate));
}

// --- Cycles -----------------------------------------------------------------------------

fn cyclic_crate() -> Crate {
    krate(&[
        ("lib.rs", "//! x\npub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "//! x\nuse crate::b::B;\npub struct A;\n"),
        (
            "b.rs",
            "//! x\npub struct B;\nfn f() { let _ = crate::a::A; }\n",
        ),
        (
            "c.rs",
            "//! x\nuse crate::a::A;\n#[cfg(test)]\nmod tests { use crate::c; }\n",
        ),
    ])
}

#[test]
fn cycles_fail_printing_the_cycle_with_its_evidence() {
    let (offences, stale) = cycles_against(&cyclic_crate(), &[]);
    assert!(stale.is_empty());
    assert_eq!(offences.len(), 2, "{offences:#?}");
    assert!(offences[0].starts_with("import cycle a -> b -> a"));
    assert!(offences[0].contains("a -> b: src/a.rs:2 `crate::b::B`"));
    assert!(offences[0].contains("b -> a: src/b.rs:3 `crate::a::A`"));
}

#[test]
fn known_cycle_edges_are_tolerated_and_can_only_shrink() {
    let (offences, stale) = cycles_against(&cyclic_crate(), &["a -> b", "b -> a"]);
    assert!(offences.is_empty() && stale.is_empty());
    let (_, stale) = cycles_against(&cyclic_crate(), &["a -> b", "b -> a", "c -> a", "a -> c"]);
    assert_eq!(
        stale,
        vec![
            "`c -> a` is no longer on a cycle: delete it from KNOWN_CYCLE_EDGES_BEING_REMOVED",
            "`a -> c` no longer exists: delete it from KNOWN_CYCLE_EDGES_BEING_REMOVED",
        ]
    );
}

#[test]
fn an_acyclic_graph_passes() {
    let krate = krate(&[
        ("lib.rs", "//! x\npub mod a;\npub mod b;\n"),
        ("a.rs", "//! x\nuse crate::b::B;\n"),
        (
            "b.rs",
            "//! x\npub struct B;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
        ),
    ]);
    assert_eq!(cycles_against(&krate, &[]), (Vec::new(), Vec::new()));
}

// --- Globals ----------------------------------------------------------------------------

#[test]
fn globals_fail_on_interior_mutable_statics_once_lock_lazy_and_thread_local() {
    let bad = "//! x\n\
               static COUNTER: AtomicU64 = AtomicU64::new(0);\n\
               static mut X: u8 = 0;\n\
               pub static CACHE: OnceLock<String> = OnceLock::new();\n\
               static M: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());\n\
               thread_local! { static T: u8 = 0; }\n\
               lazy_static::lazy_static! { static ref L: u8 = 0; }\n\
               static R: LazyLock<u8> = LazyLock::new(|| 0);\n";
    let offences = places(&globals(&krate(&[("metrics.rs", bad)])));
    for line in 2..=8 {
        assert!(
            offences.contains(&format!("metrics.rs:{line}")),
            "line {line}: {offences:?}"
        );
    }
}

#[test]
fn globals_pass_on_constants_plain_statics_and_atomics_in_values() {
    let good = "//! x\n\
                static NAMES: &[&str] = &[\"a\"];\n\
                const LIMIT: u8 = 1;\n\
                struct Gate { rung: AtomicU64, lock: std::sync::Mutex<u8> }\n\
                fn f<T: 'static>(x: &'static str) -> Box<dyn Fn() + 'static> { todo() }\n";
    assert!(globals(&krate(&[("metrics.rs", good)])).is_empty());
}

// --- Secrets ----------------------------------------------------------------------------

#[test]
fn secrets_fail_on_expose_in_logs_panics_errors_and_on_secret_names_in_logs() {
    let bad = "//! x\n\
               fn f() {\n\
                   tracing::info!(token = %config.app_token.expose(), \"x\");\n\
                   warn!(\"{}\", token.expose());\n\
                   panic!(\"{}\", s.expose());\n\
                   let e = anyhow!(\"bad {}\", s.expose());\n\
                   let v = x.expect(&format!(\"{}\", s.expose()));\n\
                   error!(?bot_token, \"x\");\n\
                   info!(\"token {app_token}\");\n\
                   debug!(secret = %self.client_secret, \"x\");\n\
                   let header = format!(\"Bearer {}\", t.expose());\n\
                   let span = tracing::info_span!(\"s\", password);\n\
               }\n";
    let offences = places(&secrets(&krate(&[("app/mod.rs", bad)])));
    for line in 3..=12 {
        assert!(
            offences.contains(&format!("app/mod.rs:{line}")),
            "line {line}: {offences:?}"
        );
    }
}

#[test]
fn secrets_pass_on_sending_a_credential_and_on_test_code() {
    let good = "//! x\n\
                fn f() {\n\
                    request.bearer_auth(token.expose());\n\
                    info!(team = %team_id, channel = ?channel, \"installed\");\n\
                    let header = format!(\"Bearer {}\", token.expose());\n\
                }\n\
                #[cfg(test)]\n\
                mod tests { fn t() { assert_eq!(x.app_token.expose(), \"xapp\"); } }\n";
    let offences = secrets(&krate(&[("slack/web.rs", good)]));
    assert!(offences.is_empty(), "{offences:?}");
}

// --- The other rules --------------------------------------------------------------------

#[test]
fn slack_libraries_only_in_slack() {
    let bad =
        "//! x\nuse slack_morphism::prelude::*;\nfn f() { tokio_tungstenite::connect_async(u); }\n";
    let krate = krate(&[("app/dispatch.rs", bad), ("slack/socket.rs", bad)]);
    assert_eq!(
        places(&slack_libraries_outside_slack(&krate)),
        vec!["app/dispatch.rs:2", "app/dispatch.rs:3"]
    );
}

#[test]
fn sled_only_in_store() {
    let bad = "//! x\nuse sled::{Db, Tree};\nfn f() { let _ = sled::open(\"sled::open\"); }\n";
    let krate = krate(&[("notify/mod.rs", bad), ("store/mod.rs", bad)]);
    assert_eq!(
        places(&sled_outside_store(&krate)),
        vec!["notify/mod.rs:2", "notify/mod.rs:2", "notify/mod.rs:3"]
    );
}

#[test]
fn bitbucket_json_only_in_bitbucket() {
    let uses_model = "//! x\nuse crate::bitbucket::model::PullRequest;\n\
                      fn f(v: &Value) { v[\"pullrequest\"]; v.get(\"next\"); }\n";
    let krate = krate(&[
        ("lib.rs", "//! x\npub mod app;\npub mod bitbucket;\n"),
        ("bitbucket/mod.rs", "//! x\npub mod model;\npub mod diff;\n"),
        ("bitbucket/model.rs", "//! x\npub struct PullRequest;\n"),
        ("bitbucket/diff.rs", uses_model),
        ("app/mod.rs", uses_model),
    ]);
    assert_eq!(
        places(&bitbucket_json_outside_bitbucket(&krate)),
        vec!["app/mod.rs:2", "app/mod.rs:3", "app/mod.rs:3"]
    );
}

#[test]
fn wall_clock_only_in_clock() {
    let reads = "//! x\nuse jiff::Timestamp;\nuse std::time::Instant;\n\
                 fn f() { Timestamp::now(); std::time::SystemTime::now(); Instant::now(); }\n\
                 #[cfg(test)]\nmod tests { fn t() { jiff::Zoned::now(); } }\n";
    let krate = krate(&[("app/mod.rs", reads), ("clock.rs", reads)]);
    assert_eq!(
        places(&wall_clock_outside_clock(&krate)),
        vec!["app/mod.rs:4", "app/mod.rs:4"]
    );
}

#[test]
fn signals_only_in_shutdown() {
    let bad = "//! x\nuse tokio::signal::unix::{signal, SignalKind};\n\
               fn f() { tokio::signal::ctrl_c(); }\n";
    let krate = krate(&[("app/mod.rs", bad), ("shutdown.rs", bad)]);
    assert_eq!(
        places(&signals_outside_shutdown(&krate)),
        vec!["app/mod.rs:2", "app/mod.rs:2", "app/mod.rs:3"]
    );
}

#[test]
fn unwrap_and_debug_leftovers_only_in_tests() {
    let text = "//! x\nfn f() {\n    x . unwrap ( );\n    dbg!(y);\n    todo!();\n    \
                z.unwrap_or(1);\n    unimplemented!()\n}\n\
                #[cfg(test)]\nmod tests { fn t() { x.unwrap(); dbg!(1); } }\n";
    assert_eq!(
        places(&unwrap_or_debug_leftovers(&krate(&[("app/mod.rs", text)]))),
        vec![
            "app/mod.rs:3",
            "app/mod.rs:4",
            "app/mod.rs:5",
            "app/mod.rs:7"
        ]
    );
}

#[test]
fn anyhow_only_in_main_and_app() {
    let text = "//! x\nuse anyhow::Context;\nfn f() { anyhow::bail!(\"x\") }\n";
    let krate = krate(&[
        ("store/mod.rs", text),
        ("app/mod.rs", text),
        ("main.rs", text),
    ]);
    assert_eq!(
        places(&anyhow_outside_main_and_app(&krate)),
        vec!["store/mod.rs:2", "store/mod.rs:3"]
    );
}

#[test]
fn every_module_needs_a_header() {
    let krate = krate(&[
        ("a.rs", "// a plain comment\nfn f() {}\n"),
        ("b.rs", "use std::fmt;\n"),
        ("c.rs", "//! c owns this and must never do that\n"),
    ]);
    assert_eq!(
        places(&files_without_header(&krate)),
        vec!["a.rs:1", "b.rs:1"]
    );
}

#[test]
fn outside_references_are_found_by_line() {
    let bad = format!(
        "fn fixtures() {{}}\n// read {}/notes.md\nlet ok = 1;\nload(\"{}/hello.json\");\n",
        concat!("..", "/shared"),
        concat!("shared", "/fixtures"),
    );
    assert_eq!(outside_references(&bad), vec![2, 4]);
    let good = "// The design is `docs/ARCHITECTURE.md`.\nshared state is fine\n";
    assert!(outside_references(good).is_empty());
}

// --- The real sources, with one offence added -------------------------------------------

/// Today's `src/` with `extra` appended to `file` (after its test module, if any).
fn real_crate_with(file: &str, extra: &str) -> Crate {
    let mut sources = src_sources();
    let (_, text) = sources
        .iter_mut()
        .find(|(path, _)| path == file)
        .expect("the file exists in src/");
    text.push_str(extra);
    Crate::new(sources, &externs())
}

#[test]
fn an_offence_after_a_real_test_module_fails_its_rules() {
    let krate = real_crate_with(
        "commands/mod.rs",
        "\nfn sneaky() -> usize {\n    use std::{fs, io};\n    \
         crate::store::Store::open(x).unwrap();\n    crate::app::EXIT_FAILURE as usize\n}\n",
    );
    let what: Vec<String> = purity(&krate).iter().map(|o| o.what.clone()).collect();
    assert!(what.iter().any(|w| w.contains("`std::fs`")), "{what:?}");
    assert!(what.iter().any(|w| w.contains("`std::io`")), "{what:?}");
    assert!(
        layering(&krate)
            .iter()
            .any(|o| layering_key(o) == "commands/mod.rs -> store/mod.rs")
    );
    assert_eq!(unwrap_or_debug_leftovers(&krate).len(), 1);
    let (cycles, _) = cycles_against(&krate, KNOWN_CYCLE_EDGES_BEING_REMOVED);
    assert!(
        cycles.iter().any(|c| c.contains("edge `commands -> app`")),
        "{cycles:#?}"
    );
}
