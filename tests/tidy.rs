//! The architecture's invariants (docs/ARCHITECTURE.md, "Invariants"), checked on parsed
//! sources rather than grepped lines: `tidy/scan.rs` reads every whole file under `src/`
//! (only `#[cfg(test)] mod NAME { ... }` blocks and test-only files count as test code),
//! expands grouped `use` trees and resolves them, and the qualified paths written in code,
//! into crate or external paths. Each rule is a function returning `src/FILE:LINE` offences;
//! its `#[test]` runs it on `src/`, and `tidy/examples.rs` proves on small in-memory crates
//! that every rule fires on a bad example and stays quiet on a good one.
//!
//! Where today's code still breaks a rule while the refactor lands, the offence is listed in
//! an explicit `..._BEING_REMOVED` constant; an entry that no longer matches anything fails
//! the test too, so those lists can only shrink. One more rule covers the whole repository:
//! it is self-contained, so no file refers to the folders that sit beside our checkouts.

#[path = "tidy/examples.rs"]
mod examples;
#[path = "tidy/scan.rs"]
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use scan::{Crate, Kind, SourceFile, Target, Token, extern_crates, matching};

// ---------------------------------------------------------------------------------------
// The lists the rules read. Each is the one place to change when the design changes.
// ---------------------------------------------------------------------------------------

/// Pure modules: values in, values out. No I/O, no clock, no randomness, no spawning, no edge
/// module. An entry ending in `/` is a folder.
const PURE_MODULES: &[&str] = &[
    "commands/",
    "notify/",
    "upgrade/",
    "message.rs",
    "oauth_state.rs",
    "bitbucket/activity.rs",
    "bitbucket/diff/",
    "bitbucket/links.rs",
    "bitbucket/name.rs",
    "bitbucket/open_pulls.rs",
    "bitbucket/preview.rs",
    "bitbucket/schedule.rs",
    "bitbucket/sweep_coverage.rs",
    "slack/convert.rs",
    "slack/envelope.rs",
    "slack/envelope/",
    "slack/home.rs",
    "slack/socket/next_step.rs",
    "slack/views.rs",
];

/// Edge modules, which do I/O or hold the daemon's running parts. A pure module never imports
/// one (their pure files excepted: `PURE_MODULES` wins).
const EDGE_MODULES: &[&str] = &[
    "main.rs",
    "app/",
    "slack/",
    "store/",
    "http/",
    "metrics.rs",
    "clock.rs",
    "shutdown.rs",
    "bitbucket/accounts.rs",
    "bitbucket/budget.rs",
    "bitbucket/client.rs",
    "bitbucket/lookup.rs",
    "bitbucket/poller.rs",
    "bitbucket/preview_reads.rs",
];

/// External paths a pure module must not name (`std::io` also forbids `std::io::Write`).
const IMPURE_PATHS: &[&str] = &[
    "std::fs",
    "std::net",
    "std::io",
    "std::env",
    "std::process",
    "std::thread",
    "std::os",
    "tokio",
    "reqwest",
    "hyper",
    "hyper_util",
    "axum",
    "sled",
    "tokio_postgres",
    "futures_executor",
    "rand",
];

/// Exceptions to purity: (file, resolved path, tests only?, why). A path admits what lies
/// below it (`tokio::time::Instant` admits `tokio::time::Instant::min`); a clock read
/// (`...::now`) must be listed by its own whole path.
const PURITY_ALLOWED: &[(&str, &str, bool, &str)] = &[
    (
        "bitbucket/schedule.rs",
        "tokio::time::Instant",
        false,
        "the scheduler's time type: passed in, never read, so the poller benchmark can drive \
         it in simulated time",
    ),
    (
        "bitbucket/schedule.rs",
        "tokio::time::Instant::now",
        true,
        "an arbitrary starting instant for the tests; the code under test never reads it",
    ),
    (
        "oauth_state.rs",
        "rand::RngCore",
        false,
        "`random_nonce` draws the state's nonce; the rest of the file is pure",
    ),
    (
        "oauth_state.rs",
        "rand::rng",
        false,
        "`random_nonce` draws the state's nonce; the rest of the file is pure",
    ),
    (
        "slack/socket/next_step.rs",
        "std::time::Instant::now",
        true,
        "an arbitrary starting instant for the tests; the code under test never reads it",
    ),
    (
        "upgrade/campaign/properties.rs",
        "rand",
        true,
        "seeded property tests of the campaign: a fixed-seed `StdRng`, deterministic",
    ),
];

/// Layering offences present on `main` while the refactor removes them. Each entry is
/// `importing file -> file owning what it imports`, as printed by the rule. Delete an entry
/// when its import goes; the test fails until you do.
const KNOWN_LAYERING_OFFENCES_BEING_REMOVED: &[&str] = &[];

/// Edges between top-level modules that lie on an import cycle on `main` today, both
/// directions of each cycle, so that the list shrinks whichever way a cycle is cut. Delete an
/// entry when the test says it is no longer on a cycle.
const KNOWN_CYCLE_EDGES_BEING_REMOVED: &[&str] = &[];

/// Global mutable state that is allowed: (file, the offending word, why). None today.
const GLOBALS_ALLOWED: &[(&str, &str, &str)] = &[];

/// `format!` calls that may hold an exposed secret: (file, format string, why). Each builds
/// a credential that is sent, never logged.
const EXPOSE_IN_FORMAT_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "slack/web.rs",
        "Bearer {}",
        "the Authorization header of a Web API call",
    ),
    (
        "slack/web.rs",
        "Basic {}",
        "the Authorization header of `oauth.v2.access`",
    ),
    (
        "slack/web.rs",
        "{user}:{}",
        "the Basic credentials of `oauth.v2.access`, base64-encoded into a header",
    ),
];

// ---------------------------------------------------------------------------------------
// Reading the crate.
// ---------------------------------------------------------------------------------------

fn repository_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn externs() -> BTreeSet<String> {
    let manifest =
        std::fs::read_to_string(repository_root().join("Cargo.toml")).expect("readable Cargo.toml");
    extern_crates(&manifest)
}

/// Every file under `src/`, parsed once for all the rules.
fn the_crate() -> &'static Crate {
    static PARSED: std::sync::OnceLock<Crate> = std::sync::OnceLock::new();
    PARSED.get_or_init(parse_src)
}

fn parse_src() -> Crate {
    Crate::new(src_sources(), &externs())
}

/// (path relative to `src/`, text) of every file under `src/`.
fn src_sources() -> Vec<(String, String)> {
    let src = repository_root().join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            let relative = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            (relative, text)
        })
        .collect()
}

/// Whether `path` (relative to `src/`) is one of `list`: an exact file or under a folder.
fn listed(path: &str, list: &[&str]) -> bool {
    list.iter().any(|entry| {
        if entry.ends_with('/') {
            path.starts_with(entry)
        } else {
            path == *entry
        }
    })
}

fn is_pure(path: &str) -> bool {
    listed(path, PURE_MODULES)
}

fn is_edge(path: &str) -> bool {
    listed(path, EDGE_MODULES) && !is_pure(path)
}

/// Whether external `path` is `prefix` or below it.
fn under(path: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Offence {
    file: String,
    line: usize,
    what: String,
}

impl Offence {
    fn new(file: &SourceFile, line: usize, what: impl Into<String>) -> Offence {
        Offence {
            file: file.path.clone(),
            line,
            what: what.into(),
        }
    }
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src/{}:{}: {}", self.file, self.line, self.what)
    }
}

fn assert_none(rule: &str, offences: Vec<Offence>) {
    let lines: Vec<String> = offences.iter().map(Offence::to_string).collect();
    assert!(lines.is_empty(), "{rule}:\n{}", lines.join("\n"));
}

/// The invocations `NAME!(...)` in a file: (name, index of the name, the group's tokens).
fn macro_calls(file: &SourceFile) -> Vec<(&str, usize, &[Token])> {
    let tokens = &file.tokens;
    let mut calls = Vec::new();
    for at in 0..tokens.len().saturating_sub(2) {
        if tokens[at].kind == Kind::Ident
            && tokens[at + 1].is("!")
            && ["(", "[", "{"].iter().any(|open| tokens[at + 2].is(open))
        {
            let close = matching(tokens, at + 2);
            calls.push((tokens[at].text.as_str(), at, &tokens[at + 3..close]));
        }
    }
    calls
}

fn has_sequence(tokens: &[Token], texts: &[&str]) -> bool {
    (0..tokens.len()).any(|at| {
        texts
            .iter()
            .enumerate()
            .all(|(k, text)| tokens.get(at + k).is_some_and(|t| t.is(text)))
    })
}

// ---------------------------------------------------------------------------------------
// Rules.
// ---------------------------------------------------------------------------------------

/// Pure modules (test code included) name no I/O, clock, randomness or task API, on the
/// expanded `use` paths and the qualified paths of code.
fn purity(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in krate.files.iter().filter(|file| is_pure(&file.path)) {
        for path in &file.paths {
            let Target::Extern(segments) = &path.target else {
                continue;
            };
            let full = path.full();
            let allowed = |whole: bool| {
                PURITY_ALLOWED.iter().any(|(f, allowed, tests_only, _)| {
                    *f == file.path
                        && (path.in_test || !tests_only)
                        && (*allowed == full || (!whole && under(segments, allowed)))
                })
            };
            if segments.last().is_some_and(|last| last == "now") {
                if !allowed(true) {
                    offences.push(Offence::new(
                        file,
                        path.line,
                        format!(
                            "`{}` is `{full}`: it reads a clock; take `now` as a value",
                            path.written
                        ),
                    ));
                }
            } else if let Some(needle) = IMPURE_PATHS.iter().find(|needle| under(segments, needle))
            {
                if !allowed(false) {
                    offences.push(Offence::new(
                        file,
                        path.line,
                        format!("`{}` is `{full}`, under `{needle}`", path.written),
                    ));
                }
            }
        }
        let tokens = &file.tokens;
        for (at, token) in tokens.iter().enumerate() {
            if token.kind == Kind::Ident
                && matches!(
                    token.text.as_str(),
                    "spawn" | "spawn_blocking" | "spawn_local"
                )
            {
                offences.push(Offence::new(file, token.line, format!("`{}`", token.text)));
            }
            if token.is(".")
                && tokens.get(at + 1).is_some_and(|t| t.is("now"))
                && tokens.get(at + 2).is_some_and(|t| t.is("("))
            {
                offences.push(Offence::new(
                    file,
                    token.line,
                    "`.now()` reads a clock; take `now` as a value",
                ));
            }
        }
    }
    offences.sort();
    offences.dedup();
    offences
}

/// Key of a layering offence: `importing file -> file owning the import`.
fn layering_key(offence: &Offence) -> String {
    offence
        .what
        .split_once(" | ")
        .map(|(key, _)| key.to_string())
        .unwrap_or_default()
}

/// A pure module imports no edge module; only `app/` and `main.rs` import `app`. Test code
/// included: a pure module's tests need no store or socket either.
fn layering(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in &krate.files {
        for path in &file.paths {
            let Some(segments) = path.crate_path() else {
                continue;
            };
            let Some(owner) = krate.owner(segments) else {
                continue;
            };
            if owner.path == file.path {
                continue;
            }
            let key = format!("{} -> {}", file.path, owner.path);
            if is_pure(&file.path) && is_edge(&owner.path) {
                offences.push(Offence::new(
                    file,
                    path.line,
                    format!(
                        "{key} | pure module imports edge module: `{}` is `{}`",
                        path.written,
                        path.full()
                    ),
                ));
            }
            let imports_app = segments.first().is_some_and(|first| first == "app");
            if imports_app && !file.path.starts_with("app/") && file.path != "main.rs" {
                offences.push(Offence::new(
                    file,
                    path.line,
                    format!(
                        "{key} | only app/ and main.rs import app: `{}` is `{}`",
                        path.written,
                        path.full()
                    ),
                ));
            }
        }
    }
    offences.sort();
    offences.dedup();
    offences
}

/// Layering offences not in `known`, then `known` entries matching nothing.
fn layering_against(krate: &Crate, known: &[&str]) -> (Vec<Offence>, Vec<String>) {
    let offences = layering(krate);
    let keys: BTreeSet<String> = offences.iter().map(layering_key).collect();
    let new = offences
        .into_iter()
        .filter(|offence| !known.contains(&layering_key(offence).as_str()))
        .collect();
    let stale = known
        .iter()
        .filter(|entry| !keys.contains(**entry))
        .map(|entry| {
            format!(
                "`{entry}` no longer happens: delete it from KNOWN_LAYERING_OFFENCES_BEING_REMOVED"
            )
        })
        .collect();
    (new, stale)
}

/// The import graph between top-level modules (`src/X.rs` or `src/X/`; `main` for
/// `main.rs`), from non-test code: edge → where it is seen.
fn module_graph(krate: &Crate) -> BTreeMap<(String, String), Vec<String>> {
    let top_level: BTreeSet<String> = krate.files.iter().map(SourceFile::top_level).collect();
    let mut graph: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in &krate.files {
        let from = file.top_level();
        for path in file.paths.iter().filter(|path| !path.in_test) {
            let Some(to) = path.crate_path().and_then(|segments| segments.first()) else {
                continue;
            };
            if *to != from && top_level.contains(to) && to != "lib" {
                graph
                    .entry((from.clone(), to.clone()))
                    .or_default()
                    .push(format!(
                        "src/{}:{} `{}`",
                        file.path, path.line, path.written
                    ));
            }
        }
    }
    graph
}

/// A shortest path `from ... to` in the graph, if any.
fn path_between(
    graph: &BTreeMap<(String, String), Vec<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from.to_string()]);
    let mut seen = BTreeSet::from([from.to_string()]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node.clone()];
            let mut at = node;
            while let Some(before) = previous.get(&at) {
                path.push(before.clone());
                at = before.clone();
            }
            path.reverse();
            return Some(path);
        }
        for (a, b) in graph.keys() {
            if *a == node && seen.insert(b.clone()) {
                previous.insert(b.clone(), a.clone());
                queue.push_back(b.clone());
            }
        }
    }
    None
}

/// Cycle offences not tolerated by `known`, then `known` entries that are not (or no longer)
/// edges on a cycle.
fn cycles_against(krate: &Crate, known: &[&str]) -> (Vec<String>, Vec<String>) {
    let graph = module_graph(krate);
    let mut offences = Vec::new();
    let mut on_cycle = BTreeSet::new();
    for (from, to) in graph.keys() {
        let Some(back) = path_between(&graph, to, from) else {
            continue;
        };
        let edge = format!("{from} -> {to}");
        on_cycle.insert(edge.clone());
        if known.contains(&edge.as_str()) {
            continue;
        }
        let cycle: Vec<String> = std::iter::once(from.clone()).chain(back).collect();
        let evidence: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let seen = &graph[&(pair[0].clone(), pair[1].clone())];
                let more = match seen.len() {
                    0..=3 => String::new(),
                    n => format!(" and {} more", n - 3),
                };
                let first: Vec<&str> = seen.iter().take(3).map(String::as_str).collect();
                format!("    {} -> {}: {}{more}", pair[0], pair[1], first.join(", "))
            })
            .collect();
        offences.push(format!(
            "import cycle {} (edge `{edge}` is not in KNOWN_CYCLE_EDGES_BEING_REMOVED):\n{}",
            cycle.join(" -> "),
            evidence.join("\n")
        ));
    }
    let stale = known
        .iter()
        .filter(|entry| !on_cycle.contains(**entry))
        .map(|entry| {
            let exists = entry
                .split_once(" -> ")
                .is_some_and(|(a, b)| graph.contains_key(&(a.to_string(), b.to_string())));
            let why = if exists {
                "is no longer on a cycle"
            } else {
                "no longer exists"
            };
            format!("`{entry}` {why}: delete it from KNOWN_CYCLE_EDGES_BEING_REMOVED")
        })
        .collect();
    (offences, stale)
}

/// Interior-mutable types: a `static` of one is global mutable state.
fn is_interior_mutable(word: &str) -> bool {
    word.starts_with("Atomic")
        || matches!(
            word,
            "Mutex"
                | "RwLock"
                | "Cell"
                | "RefCell"
                | "UnsafeCell"
                | "OnceCell"
                | "OnceLock"
                | "LazyLock"
                | "LazyCell"
                | "Lazy"
                | "Condvar"
        )
}

/// No global mutable state anywhere, test code included: no `static mut`, no `static` of an
/// interior-mutable type, no `OnceLock`, `LazyLock`, `OnceCell`, `lazy_static!`,
/// `thread_local!` or `once_cell`.
fn globals(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in &krate.files {
        let tokens = &file.tokens;
        let mut found = |line: usize, word: &str, what: String| {
            let allowed = GLOBALS_ALLOWED
                .iter()
                .any(|(f, w, _)| *f == file.path && *w == word);
            if !allowed {
                offences.push(Offence::new(file, line, what));
            }
        };
        for (at, token) in tokens.iter().enumerate() {
            if token.kind != Kind::Ident {
                continue;
            }
            match token.text.as_str() {
                "static" if tokens.get(at + 1).is_some_and(|t| t.is("mut")) => {
                    found(token.line, "static mut", "`static mut`".to_string());
                }
                "static" if tokens.get(at + 2).is_some_and(|t| t.is(":")) => {
                    let end = (at + 3..tokens.len())
                        .find(|&k| tokens[k].is("=") || tokens[k].is(";"))
                        .unwrap_or(tokens.len());
                    if let Some(inner) = tokens[at + 3..end]
                        .iter()
                        .find(|t| t.kind == Kind::Ident && is_interior_mutable(&t.text))
                    {
                        found(
                            token.line,
                            &inner.text,
                            format!(
                                "`static {}` holds a `{}`: global mutable state",
                                tokens[at + 1].text,
                                inner.text
                            ),
                        );
                    }
                }
                "OnceLock" | "LazyLock" | "OnceCell" | "LazyCell" | "lazy_static"
                | "thread_local" | "once_cell" => {
                    found(
                        token.line,
                        &token.text,
                        format!("`{}`: global (or lazily global) state", token.text),
                    );
                }
                _ => {}
            }
        }
    }
    offences
}

/// Macros whose arguments reach a log line, a panic message, an error or the terminal.
fn is_logging_macro(name: &str) -> bool {
    name.ends_with("_span")
        || matches!(
            name,
            "trace"
                | "debug"
                | "info"
                | "warn"
                | "error"
                | "event"
                | "span"
                | "panic"
                | "assert"
                | "assert_eq"
                | "assert_ne"
                | "debug_assert"
                | "debug_assert_eq"
                | "debug_assert_ne"
                | "unreachable"
                | "todo"
                | "unimplemented"
                | "anyhow"
                | "bail"
                | "ensure"
                | "print"
                | "println"
                | "eprint"
                | "eprintln"
                | "dbg"
        )
}

/// Macros that build text which may end anywhere, a log line included.
fn is_formatting_macro(name: &str) -> bool {
    matches!(name, "format" | "format_args" | "write" | "writeln")
}

/// A name that says it holds a credential.
fn names_a_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password", "private_key", "signing_key"]
        .iter()
        .any(|word| name.contains(word))
}

/// Within a logging macro's group: the names of values formatted by a `?`/`%` field, passed
/// as an argument (`a.b.token`) or captured inline (`{token}`, `{token:?}`).
fn formatted_names(group: &[Token]) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    let mut at = 0;
    while at < group.len() {
        let token = &group[at];
        if token.kind == Kind::Literal {
            let mut rest = token.text.as_str();
            while let Some(open) = rest.find('{') {
                rest = &rest[open + 1..];
                if rest.starts_with('{') {
                    rest = &rest[1..];
                    continue;
                }
                let inner = rest.split('}').next().unwrap_or("");
                let name = inner.split(':').next().unwrap_or("").trim();
                if !name.is_empty() && !name.chars().all(|c| c.is_ascii_digit()) {
                    names.push((token.line, name.to_string()));
                }
            }
            at += 1;
            continue;
        }
        let starts_value = at == 0
            || ["?", "%", ",", "="]
                .iter()
                .any(|before| group[at - 1].is(before));
        if token.kind == Kind::Ident && starts_value {
            // Read `a.b.c`; a method call or a field name (`token = ...`) is not a value.
            let mut last = at;
            while group.get(last + 1).is_some_and(|t| t.is("."))
                && group.get(last + 2).is_some_and(|t| t.kind == Kind::Ident)
            {
                last += 2;
            }
            let ends_value = group
                .get(last + 1)
                .is_none_or(|t| t.is(",") || t.is(")") || t.is(";"));
            if ends_value {
                names.push((group[last].line, group[last].text.clone()));
            }
            at = last + 1;
            continue;
        }
        at += 1;
    }
    names
}

/// Secrets never reach a log line, panic, error or terminal: in non-test code, no
/// `.expose()` inside a logging macro, a formatting macro (outside
/// `EXPOSE_IN_FORMAT_ALLOWED`), `.expect(...)` or `.context(...)`; and no value whose name
/// says it is a credential formatted by a logging macro.
fn secrets(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in &krate.files {
        for (name, at, group) in macro_calls(file) {
            if file.tokens[at].in_test {
                continue;
            }
            let logs = is_logging_macro(name);
            let formats = is_formatting_macro(name);
            if (logs || formats) && has_sequence(group, &[".", "expose", "("]) {
                let format_string = group
                    .iter()
                    .find(|t| t.kind == Kind::Literal)
                    .map(|t| t.text.as_str())
                    .unwrap_or("");
                let allowed = formats
                    && EXPOSE_IN_FORMAT_ALLOWED
                        .iter()
                        .any(|(f, s, _)| *f == file.path && *s == format_string);
                if !allowed {
                    offences.push(Offence::new(
                        file,
                        file.tokens[at].line,
                        format!("`.expose()` inside `{name}!`"),
                    ));
                }
            }
            if logs {
                for (line, value) in formatted_names(group) {
                    if names_a_secret(&value) {
                        offences.push(Offence::new(
                            file,
                            line,
                            format!("`{value}` is formatted by `{name}!`; never log a credential"),
                        ));
                    }
                }
            }
        }
        let tokens = &file.tokens;
        for at in 0..tokens.len().saturating_sub(2) {
            let method = tokens[at + 1].text.as_str();
            if tokens[at].is(".")
                && !tokens[at].in_test
                && matches!(method, "expect" | "context" | "with_context")
                && tokens[at + 2].is("(")
            {
                let close = matching(tokens, at + 2);
                if has_sequence(&tokens[at + 3..close], &[".", "expose", "("]) {
                    offences.push(Offence::new(
                        file,
                        tokens[at].line,
                        format!("`.expose()` inside `.{method}(...)`"),
                    ));
                }
            }
        }
    }
    offences.sort();
    offences.dedup();
    offences
}

/// Offences for every external path under one of `crates` in files `allowed` does not admit.
fn extern_only_in(
    krate: &Crate,
    crates: &[&str],
    allowed: impl Fn(&str) -> bool,
    test_code_too: bool,
) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in krate.files.iter().filter(|file| !allowed(&file.path)) {
        for path in &file.paths {
            if path.in_test && !test_code_too {
                continue;
            }
            let Some(segments) = path.extern_path() else {
                continue;
            };
            if crates.iter().any(|krate| under(segments, krate)) {
                offences.push(Offence::new(file, path.line, format!("`{}`", path.full())));
            }
        }
    }
    offences
}

fn slack_libraries_outside_slack(krate: &Crate) -> Vec<Offence> {
    extern_only_in(
        krate,
        &["slack_morphism", "tokio_tungstenite", "tungstenite"],
        |path| path.starts_with("slack/"),
        true,
    )
}

fn sled_outside_store(krate: &Crate) -> Vec<Offence> {
    extern_only_in(
        krate,
        &["sled", "tokio_postgres", "futures_executor"],
        |path| path.starts_with("store/"),
        true,
    )
}

fn anyhow_outside_main_and_app(krate: &Crate) -> Vec<Offence> {
    extern_only_in(
        krate,
        &["anyhow"],
        |path| path == "main.rs" || path.starts_with("app/"),
        true,
    )
}

fn signals_outside_shutdown(krate: &Crate) -> Vec<Offence> {
    extern_only_in(
        krate,
        &[
            "tokio::signal",
            "signal_hook",
            "signal_hook_tokio",
            "ctrlc",
            "nix::sys::signal",
            "libc::signal",
        ],
        |path| path == "shutdown.rs",
        true,
    )
}

/// Types whose `now` reads the wall clock.
const WALL_CLOCK_TYPES: &[&str] = &["Timestamp", "SystemTime", "Zoned", "Utc", "Local"];

fn wall_clock_outside_clock(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in krate.files.iter().filter(|file| file.path != "clock.rs") {
        for path in file.paths.iter().filter(|path| !path.in_test) {
            let Some(segments) = path.extern_path() else {
                continue;
            };
            let reads = segments.len() >= 2
                && segments[segments.len() - 1] == "now"
                && WALL_CLOCK_TYPES.contains(&segments[segments.len() - 2].as_str());
            if reads {
                offences.push(Offence::new(file, path.line, format!("`{}`", path.full())));
            }
        }
    }
    offences
}

/// String literals that only Bitbucket's JSON uses as keys or values.
const BITBUCKET_JSON_WORDS: &[&str] = &["pullrequest", "values", "next"];

fn bitbucket_json_outside_bitbucket(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in krate
        .files
        .iter()
        .filter(|file| !file.path.starts_with("bitbucket/"))
    {
        for path in &file.paths {
            let owner = path.crate_path().and_then(|segments| krate.owner(segments));
            if owner.is_some_and(|owner| owner.path == "bitbucket/model.rs") {
                offences.push(Offence::new(
                    file,
                    path.line,
                    format!("`{}` is Bitbucket's JSON model", path.full()),
                ));
            }
        }
        for token in file.tokens.iter().filter(|t| !t.in_test) {
            if token.kind == Kind::Literal && BITBUCKET_JSON_WORDS.contains(&token.text.as_str()) {
                offences.push(Offence::new(
                    file,
                    token.line,
                    format!("\"{}\" is a key of Bitbucket's JSON", token.text),
                ));
            }
        }
    }
    offences
}

fn unwrap_or_debug_leftovers(krate: &Crate) -> Vec<Offence> {
    let mut offences = Vec::new();
    for file in &krate.files {
        let tokens = &file.tokens;
        for (at, token) in tokens.iter().enumerate() {
            if token.in_test {
                continue;
            }
            let next = |k: usize, text: &str| tokens.get(at + k).is_some_and(|t| t.is(text));
            if token.is(".") && next(1, "unwrap") && next(2, "(") && next(3, ")") {
                offences.push(Offence::new(file, token.line, "`.unwrap()`"));
            }
            if token.kind == Kind::Ident
                && matches!(token.text.as_str(), "dbg" | "todo" | "unimplemented")
                && next(1, "!")
            {
                offences.push(Offence::new(file, token.line, format!("`{}!`", token.text)));
            }
        }
    }
    offences
}

fn files_without_header(krate: &Crate) -> Vec<Offence> {
    krate
        .files
        .iter()
        .filter(|file| !file.text.starts_with("//!"))
        .map(|file| Offence::new(file, 1, "no `//!` header"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The rules, run on `src/`.
// ---------------------------------------------------------------------------------------

#[test]
fn pure_modules_do_no_io_read_no_clock_and_spawn_nothing() {
    assert_none(
        "pure modules (PURE_MODULES) name no I/O, clock, randomness or task API, test code \
         included (exceptions: PURITY_ALLOWED)",
        purity(the_crate()),
    );
}

#[test]
fn pure_modules_import_no_edge_module_and_only_app_imports_app() {
    let (new, stale) = layering_against(the_crate(), KNOWN_LAYERING_OFFENCES_BEING_REMOVED);
    let lines: Vec<String> = new.iter().map(Offence::to_string).chain(stale).collect();
    assert!(
        lines.is_empty(),
        "layering: a pure module (PURE_MODULES) imports no edge module (EDGE_MODULES); only \
         app/ and main.rs import app:\n{}",
        lines.join("\n")
    );
}

#[test]
fn top_level_modules_import_one_another_without_cycles() {
    let (new, stale) = cycles_against(the_crate(), KNOWN_CYCLE_EDGES_BEING_REMOVED);
    let lines: Vec<String> = new.into_iter().chain(stale).collect();
    assert!(
        lines.is_empty(),
        "no import cycle between top-level modules:\n{}",
        lines.join("\n")
    );
}

#[test]
fn no_global_mutable_state() {
    assert_none(
        "no global mutable state (exceptions: GLOBALS_ALLOWED)",
        globals(the_crate()),
    );
}

#[test]
fn secrets_never_reach_a_log_line_panic_or_error() {
    assert_none(
        "never log a credential: no `.expose()` inside a logging, panicking, error or \
         formatting macro (exceptions: EXPOSE_IN_FORMAT_ALLOWED) or `.expect`/`.context`, and \
         no value named like a credential formatted by a logging macro",
        secrets(the_crate()),
    );
}

#[test]
fn only_slack_speaks_slack_morphism_and_tungstenite() {
    assert_none(
        "only src/slack/ may use slack_morphism or tokio_tungstenite",
        slack_libraries_outside_slack(the_crate()),
    );
}

#[test]
fn only_store_uses_sled() {
    assert_none(
        "only src/store/ may use sled or PostgreSQL",
        sled_outside_store(the_crate()),
    );
}

#[test]
fn only_bitbucket_knows_bitbucket_json() {
    assert_none(
        "only src/bitbucket/ may know Bitbucket's JSON",
        bitbucket_json_outside_bitbucket(the_crate()),
    );
}

#[test]
fn only_the_clock_reads_the_wall_clock() {
    assert_none(
        "only src/clock.rs may read the wall clock",
        wall_clock_outside_clock(the_crate()),
    );
}

#[test]
fn only_shutdown_installs_signal_handlers() {
    assert_none(
        "only src/shutdown.rs may install signal handlers",
        signals_outside_shutdown(the_crate()),
    );
}

#[test]
fn no_unwrap_or_debug_leftovers_outside_tests() {
    assert_none(
        "no unwrap(), dbg!, todo! or unimplemented! outside tests (use expect with the reason)",
        unwrap_or_debug_leftovers(the_crate()),
    );
}

#[test]
fn anyhow_only_in_main_and_app() {
    assert_none(
        "anyhow only in main.rs and app/ (libraries use thiserror enums)",
        anyhow_outside_main_and_app(the_crate()),
    );
}

#[test]
fn every_module_opens_with_a_header() {
    assert_none(
        "every module starts with a //! header saying what it owns and must never do",
        files_without_header(the_crate()),
    );
}

// ---------------------------------------------------------------------------------------
// The repository is self-contained.
// ---------------------------------------------------------------------------------------

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
    let root = repository_root();
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
