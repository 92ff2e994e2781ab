//! A real PostgreSQL server for one test, started from the installed server binaries
//! (`initdb` and `pg_ctl`) in a temporary directory, listening only on a Unix socket
//! there, and stopped (immediately) when dropped.
//!
//! When no server binaries are installed, [`Postgres::start`] says so loudly on stderr and
//! returns `None`, so the test passes without them; with `BITBUCKET_SLACK_REQUIRE_POSTGRES`
//! set (as `.ci/run` sets it) their absence fails the test instead. As root, the server
//! runs as the `postgres` user (or `nobody`), since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bitbucket_slack::secret::Secret;
use bitbucket_slack::store::PgSettings;

pub const REQUIRE_ENV: &str = "BITBUCKET_SLACK_REQUIRE_POSTGRES";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// Where the server binaries are: Debian's versioned directory (newest first), else `PATH`.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The unprivileged user a root test runs the server as, with its uid and gid.
fn unprivileged_user() -> Option<(String, u32, u32)> {
    for name in ["postgres", "nobody"] {
        let out = Command::new("id").args(["-u", name]).output().ok()?;
        if !out.status.success() {
            continue;
        }
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        let out = Command::new("id").args(["-g", name]).output().ok()?;
        let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        return Some((name.to_owned(), uid, gid));
    }
    None
}

impl Postgres {
    /// Starts a fresh server, or returns `None` after saying loudly why the test is
    /// skipped (no PostgreSQL installed).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = server_binaries() else {
            let message = "no PostgreSQL server binaries (initdb, pg_ctl) are installed: the \
                           PostgreSQL half of this test is SKIPPED. Install Debian's \
                           `postgresql` package to run it.";
            if std::env::var_os(REQUIRE_ENV).is_some() {
                panic!("{message} ({REQUIRE_ENV} is set, so this is a failure)");
            }
            eprintln!("\n!!! {message}\n");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("pg")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        let run_as = if is_root() {
            let (name, uid, gid) = unprivileged_user().expect("a user to run PostgreSQL as");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
            Some(name)
        } else {
            None
        };
        let server = Postgres { dir, bin, run_as };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            server.dir.path().display()
        );
        server.run(
            "pg_ctl",
            &[
                "-D",
                &server.data().display().to_string(),
                "-l",
                &server.dir.path().join("server.log").display().to_string(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `program` from the server binaries, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let binary = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL binary");
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A connection string for `database` (over the Unix socket, as `postgres`).
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port=5432 user=postgres dbname={database}",
            self.socket_dir().display()
        )
    }

    /// A new, empty database on this server.
    pub fn create_database(&self) -> String {
        let name = format!("db{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", &self.socket_dir().display().to_string(), "-p", "5432"])
            .args(["-U", "postgres", &name])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// The database `settings` (made by [`Self::settings`]) connect to.
    pub fn database_of(settings: &PgSettings) -> String {
        settings
            .url
            .expose()
            .rsplit("dbname=")
            .next()
            .expect("the connection string names its database")
            .to_owned()
    }

    /// Store settings for a new database on this server.
    pub fn settings(&self) -> PgSettings {
        let database = self.create_database();
        self.settings_for(&database)
    }

    pub fn settings_for(&self, database: &str) -> PgSettings {
        PgSettings {
            url: Secret::new(self.url(database)),
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        }
    }

    /// Runs one SQL statement as the superuser through `psql`.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", &self.socket_dir().display().to_string(), "-p", "5432"])
            .args(["-U", "postgres", "-d", database, "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}
