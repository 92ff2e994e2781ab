//! The architecture's invariants (ARCHITECTURE.md, "Invariants"), checked by grepping
//! `src/`. Each rule names the files allowed to break it; a failure lists file and line.
//! One more rule covers the whole repository: it is self-contained, so no file refers to
//! the folders that sit beside our checkouts.

use std::path::{Path, PathBuf};

struct SourceFile {
    /// Path relative to `src/`, with `/` separators.
    path: String,
    /// The non-test part: everything before the first `#[cfg(test)]`.
    code: String,
    full: String,
}

fn sources() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let full = std::fs::read_to_string(&path).expect("readable source");
            let code = full.split("#[cfg(test)]").next().unwrap_or("").to_string();
            let relative = path
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            SourceFile {
                path: relative,
                code,
                full,
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Fails listing every line of a file not matching `allowed` that contains a needle.
fn forbid(rule: &str, needles: &[&str], allowed: impl Fn(&str) -> bool, test_code_too: bool) {
    let mut offences = Vec::new();
    for file in sources() {
        if allowed(&file.path) {
            continue;
        }
        let text = if test_code_too {
            &file.full
        } else {
            &file.code
        };
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for needle in needles {
                if line.contains(needle) {
                    offences.push(format!("src/{}:{}: {}", file.path, number + 1, line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "{rule}:\n{}", offences.join("\n"));
}

fn is_pure(path: &str) -> bool {
    path.starts_with("commands/")
        || path.starts_with("notify/")
        || path.starts_with("upgrade/")
        || path.starts_with("bitbucket/diff/")
        || path == "slack/envelope.rs"
}

#[test]
fn pure_modules_do_no_io_read_no_clock_and_spawn_nothing() {
    forbid(
        "pure modules (commands/, notify/, upgrade/, bitbucket/diff/, slack/envelope.rs) must stay pure",
        &[
            "tokio::", "std::fs", "std::net", "std::io", "reqwest", "sled", "::now()", "spawn",
            "std::env",
        ],
        |path| !is_pure(path),
        true,
    );
}

#[test]
fn only_slack_speaks_slack_morphism_and_tungstenite() {
    forbid(
        "only src/slack/ may use slack_morphism or tokio_tungstenite",
        &["slack_morphism", "tokio_tungstenite"],
        |path| path.starts_with("slack/"),
        true,
    );
}

#[test]
fn only_store_uses_sled() {
    forbid(
        "only src/store/ may use sled",
        &["sled::", "use sled"],
        |path| path.starts_with("store/"),
        true,
    );
}

#[test]
fn only_bitbucket_knows_bitbucket_json() {
    forbid(
        "only src/bitbucket/ may know Bitbucket's JSON",
        &[
            "\"pullrequest\"",
            "\"values\"",
            "\"next\"",
            "bitbucket::model",
        ],
        |path| path.starts_with("bitbucket/"),
        false,
    );
}

#[test]
fn only_the_clock_reads_the_wall_clock() {
    forbid(
        "only src/clock.rs may read the wall clock",
        &[
            "Timestamp::now",
            "SystemTime::now",
            "Zoned::now",
            "Utc::now",
            "Local::now",
        ],
        |path| path == "clock.rs",
        false,
    );
}

#[test]
fn only_shutdown_installs_signal_handlers() {
    forbid(
        "only src/shutdown.rs may install signal handlers",
        &["tokio::signal", "signal_hook", "ctrlc"],
        |path| path == "shutdown.rs",
        true,
    );
}

#[test]
fn no_global_mutable_state() {
    forbid(
        "no global mutable state",
        &[
            "static mut",
            "lazy_static!",
            "static CONFIG",
            "thread_local!",
        ],
        |_| false,
        true,
    );
}

#[test]
fn no_unwrap_or_debug_leftovers_outside_tests() {
    forbid(
        "no unwrap(), dbg!, todo! or unimplemented! outside tests (use expect with the reason)",
        &[".unwrap()", "dbg!(", "todo!(", "unimplemented!("],
        |_| false,
        false,
    );
}

#[test]
fn anyhow_only_in_main_and_app() {
    forbid(
        "anyhow only in main.rs and app/ (libraries use thiserror enums)",
        &["anyhow"],
        |path| path == "main.rs" || path.starts_with("app/"),
        true,
    );
}

#[test]
fn every_module_opens_with_a_header() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|file| !file.full.starts_with("//!"))
        .map(|file| format!("src/{}", file.path))
        .collect();
    assert!(
        missing.is_empty(),
        "every module starts with a //! header saying what it owns and must never do:\n{}",
        missing.join("\n")
    );
}

#[test]
fn secrets_are_not_formatted_by_debug_in_logs() {
    forbid(
        "never log a token: no `?token`/`%token` fields and no expose() inside a log macro",
        &["?app_token", "%app_token", "?bot_token", "%bot_token"],
        |_| false,
        false,
    );
}

/// How a reference to the folder beside our checkouts looks. Each needle is glued
/// together by `concat!` so that this file does not contain it.
const OUTSIDE: [&str; 3] = [
    concat!("..", "/shared"),
    concat!("shared", "/fixtures"),
    concat!("shared", "/reference"),
];

/// The (1-based) numbers of the lines of `text` that refer outside the repository.
fn outside_references(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| OUTSIDE.iter().any(|needle| line.contains(needle)))
        .map(|(index, _)| index + 1)
        .collect()
}

/// Every file of the repository, except `.git` and `target`. Symlinks are not followed.
fn repository_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let entry = entry.expect("dir entry");
        let file_type = entry.file_type().expect("file type");
        let path = entry.path();
        if entry.file_name() == ".git" || entry.file_name() == "target" {
            continue;
        }
        if file_type.is_dir() {
            repository_files(&path, out);
        } else if file_type.is_file() {
            out.push(path);
        }
    }
}

#[test]
fn nothing_in_the_repository_refers_outside_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    repository_files(root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|path| path.ends_with("Cargo.toml")),
        "walked {}",
        root.display()
    );
    let mut offences = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).expect("readable file");
        let text = String::from_utf8_lossy(&bytes);
        let relative = path
            .strip_prefix(root)
            .expect("under the repository")
            .to_string_lossy()
            .replace('\\', "/");
        let lines: Vec<&str> = text.lines().collect();
        for number in outside_references(&text) {
            offences.push(format!("{relative}:{number}: {}", lines[number - 1].trim()));
        }
    }
    assert!(
        offences.is_empty(),
        "the repository is self-contained: nothing may refer to {OUTSIDE:?}:\n{}",
        offences.join("\n")
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
