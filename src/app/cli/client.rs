//! How an operator command reaches the daemon's state: the running daemon over its admin
//! socket (one JSON request line, one JSON answer line, then a backup stream if one was
//! asked for), or, when no daemon answers, the store opened directly.
//!
//! Owns the connection, the request/answer framing and the fallback with its notice on
//! stderr. Must never print a command's output, decide what a command shows, open the
//! store while the daemon's admin socket answers, or open the store when the socket
//! refuses us (permission denied is an error, not "not running").

use std::io::Write;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::app::admin::{AdminRequest, AdminResponse};
use crate::config::Config;
use crate::store::{Store, StoreError, backup};

/// How the CLI reached the daemon's state.
pub(super) enum Channel {
    Daemon(UnixStream),
    Store(Box<Store>),
}

/// The daemon's admin socket if it answers, else the store (saying so on stderr).
pub(super) async fn reach(config: &Config) -> anyhow::Result<Channel> {
    let path = &config.admin.socket;
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(Channel::Daemon(stream)),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot use the admin socket {}: permission denied (run as the service user or root)",
            path.display()
        ),
        Err(_) => match crate::app::open_store(&config.storage) {
            Ok(store) => {
                eprintln!(
                    "(the daemon is not running: reading the store at {} directly)",
                    store.path().display()
                );
                Ok(Channel::Store(Box::new(store)))
            }
            Err(StoreError::Locked { path: store_path }) => bail!(
                "the store at {} is in use, but the admin socket {} does not answer: is admin.socket the same for the daemon and this command?",
                store_path.display(),
                path.display()
            ),
            Err(error) => Err(error.into()),
        },
    }
}

/// True when the daemon's admin socket accepts a connection (the daemon runs).
pub(super) async fn daemon_answers(config: &Config) -> bool {
    UnixStream::connect(&config.admin.socket).await.is_ok()
}

/// Sends `request` and reads the one-line answer; what follows it (a backup) stays in
/// the returned reader.
pub(super) async fn send(
    mut stream: UnixStream,
    request: &AdminRequest,
) -> anyhow::Result<(AdminResponse, tokio::io::BufReader<UnixStream>)> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).await?;
    let response: AdminResponse = serde_json::from_str(first.trim())
        .with_context(|| "the daemon's admin answer was not understood")?;
    if let AdminResponse::Error { message } = &response {
        bail!("the daemon refused: {message}");
    }
    Ok((response, reader))
}

/// Sends `request` and returns the daemon's answer (a refusal is an error).
pub(super) async fn ask(
    stream: UnixStream,
    request: &AdminRequest,
) -> anyhow::Result<AdminResponse> {
    Ok(send(stream, request).await?.0)
}

/// Copies what the daemon streams into the backup file, until the daemon closes.
pub(super) async fn copy_stream(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    out: &mut backup::BackupFile,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        out.write_all(&buffer[..read])?;
    }
}
