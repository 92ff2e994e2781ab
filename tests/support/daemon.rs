//! Runs the real `bitbucket-slack` binary as a child process and watches its logs.
//!
//! Waits are for log lines or exit, bounded by a deadline; nothing sleeps.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_bitbucket-slack")
}

/// A running daemon and everything it logged so far.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    log_changed: watch::Receiver<usize>,
    /// The tasks reading stdout and stderr: done once the process closed both.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    /// Starts `bitbucket-slack <args>` with exactly `env` as its BITBUCKET_SLACK* variables.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn the daemon");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (changed_tx, log_changed) = watch::channel(0);
        let changed_tx = Arc::new(changed_tx);
        let stderr = child.stderr.take().expect("stderr piped");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut readers = Vec::new();
        for stream in [
            Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(stdout),
        ] {
            let log = log.clone();
            let changed_tx = changed_tx.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let count = {
                        let mut log = log.lock().expect("log lock");
                        log.push(line);
                        log.len()
                    };
                    changed_tx.send_replace(count);
                }
            }));
        }
        Daemon {
            child,
            log,
            log_changed,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(line) = self.log().into_iter().find(|line| line.contains(needle)) {
                    return line;
                }
                if self.log_changed.changed().await.is_err() {
                    panic!(
                        "the daemon's output ended without {needle:?}:\n{}",
                        self.log().join("\n")
                    );
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no log line with {needle:?} within {WAIT:?}:\n{}",
                self.log().join("\n")
            )
        })
    }

    /// The address the HTTP server bound (it logs it; tests bind port 0).
    pub async fn http_address(&mut self) -> String {
        let line = self.wait_for_log("HTTP server listening").await;
        let start = line.find("address=").expect("address field") + "address=".len();
        line[start..]
            .split_whitespace()
            .next()
            .expect("address value")
            .to_string()
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code. By then everything it
    /// wrote is in [`Self::log`].
    pub async fn wait_exit(&mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the daemon did not exit:\n{}", self.log().join("\n")))
            .expect("wait for the daemon");
        for reader in self.readers.drain(..) {
            // The pipes close with the process (unless it left a child holding them).
            let _ = tokio::time::timeout(WAIT, reader).await;
        }
        status.code().unwrap_or(-1)
    }
}

/// Runs the binary to completion (for `check`): exit code, stdout, stderr.
pub async fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the command finishes")
        .expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A plain HTTP/1.1 GET on loopback: status code and body.
pub async fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the daemon's HTTP server");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("an HTTP answer")
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Writes a config file and returns its path as a string.
pub fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("bitbucket-slack.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_string_lossy().into_owned()
}

/// What a browser sees from one GET.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    /// The `Set-Cookie` header, if any.
    pub set_cookie: Option<String>,
    pub body: String,
}

impl Page {
    /// `name=value` of the cookie this page set, as a browser would send it back.
    pub fn cookie(&self) -> Option<String> {
        let set = self.set_cookie.as_deref()?;
        Some(set.split(';').next()?.trim().to_string())
    }
}

/// A plain HTTP/1.1 GET of an absolute `http://127.0.0.1:port/...` URL, not following
/// redirects (tests follow them by hand, as a browser would).
pub async fn browse(url: &str) -> Page {
    browse_with_cookie(url, None).await
}

/// [`browse`], sending `cookie` (`name=value`) as a browser that holds it would.
pub async fn browse_with_cookie(url: &str, cookie: Option<&str>) -> Page {
    let parsed = url::Url::parse(url).expect("an absolute URL");
    let address = format!(
        "{}:{}",
        parsed.host_str().expect("a host"),
        parsed.port().expect("an explicit port")
    );
    let target = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect to the HTTP server");
    let cookie = cookie
        .map(|cookie| format!("Cookie: {cookie}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {address}\r\n{cookie}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("an HTTP answer")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let header = |wanted: &str| {
        head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_string())
        })
    };
    Page {
        status,
        location: header("location"),
        set_cookie: header("set-cookie"),
        body: body.to_string(),
    }
}
