//! The admin channel: a Unix socket (`admin.socket`, mode 0600) on which the running
//! daemon answers the CLI, since sled lets only one process open the store.
//!
//! Owns the protocol (one JSON request line in; one JSON response line, or a backup
//! stream, out) and the server. Only the daemon's own user (or root) may connect: the
//! socket file is 0600 and each peer's uid is checked. Nothing here is reachable over
//! TCP, and no response ever carries a token.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::slack::socket::{SlotHealth, SocketHealth};
use crate::store::{Installation, Store};
use crate::upgrade;

/// What the CLI asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    Status,
    Installations,
    /// Answered with the backup file's lines, then the connection closes.
    Backup,
}

/// What the daemon answers (one line of JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminResponse {
    Status(StatusReport),
    Installations {
        installations: Vec<InstallationRow>,
    },
    /// A backup follows on the next lines.
    Backup,
    Error {
        message: String,
    },
}

/// `bitbucket-slack status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// "daemon" when the running daemon answered, "store" when read from a stopped one.
    pub source: String,
    pub version: String,
    pub started_at: Option<Timestamp>,
    pub store_path: PathBuf,
    /// Empty when the daemon is not running.
    pub sockets: Vec<SlotHealth>,
    pub installations: usize,
    pub active_installations: usize,
}

/// One installation as the CLI shows it: never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRow {
    pub team_id: String,
    pub team_name: String,
    pub enterprise_id: Option<String>,
    pub state: String,
    pub permissions: String,
    pub missing_scopes: Vec<String>,
    pub source: String,
    pub installer_user_id: Option<String>,
    pub installed_at: Timestamp,
    pub updated_at: Timestamp,
}

impl InstallationRow {
    pub fn from_installation(installation: &Installation) -> Self {
        let level = upgrade::permission_level(&installation.scopes);
        InstallationRow {
            team_id: installation.team_id.clone(),
            team_name: installation.team_name.clone(),
            enterprise_id: installation.enterprise_id.clone(),
            state: installation.state.as_str().into(),
            permissions: level.name().into(),
            missing_scopes: level.missing().iter().map(|s| s.to_string()).collect(),
            source: match installation.source {
                crate::store::InstallSource::ConfiguredToken => "bot_token".into(),
                crate::store::InstallSource::OAuth => "oauth".into(),
            },
            installer_user_id: installation.installer_user_id.clone(),
            installed_at: installation.installed_at,
            updated_at: installation.updated_at,
        }
    }
}

/// Answers built from the store alone, shared by the daemon and the stopped-daemon CLI.
pub fn installation_rows(store: &Store) -> Result<Vec<InstallationRow>, crate::store::StoreError> {
    Ok(store
        .installations
        .list()?
        .iter()
        .map(InstallationRow::from_installation)
        .collect())
}

pub fn status_report(
    store: &Store,
    source: &str,
    started_at: Option<Timestamp>,
    sockets: Vec<SlotHealth>,
) -> Result<StatusReport, crate::store::StoreError> {
    let installations = store.installations.list()?;
    Ok(StatusReport {
        source: source.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        store_path: store.path().to_path_buf(),
        sockets,
        active_installations: installations.iter().filter(|i| i.is_active()).count(),
        installations: installations.len(),
    })
}

/// What the server needs.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub sockets: SocketHealth,
    pub clock: Arc<dyn Clock>,
    pub started_at: Timestamp,
}

/// Binds the admin socket (replacing a stale file), mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the admin socket until `stop`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    state: AdminState,
    stop: CancellationToken,
) {
    let owner = std::fs::metadata(&path).map(|meta| meta.uid()).ok();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "admin socket accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, owner, &state).await {
                warn!(%error, "admin request failed");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, owner: Option<u32>, state: &AdminState) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    if peer != 0 && Some(peer) != owner {
        warn!(
            uid = peer,
            "admin socket: refused a connection from another user"
        );
        return reply(
            &mut write,
            &AdminResponse::Error {
                message: "only the daemon's own user or root may use the admin socket".into(),
            },
        )
        .await;
    }
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request: AdminRequest = match serde_json::from_str(line.trim()) {
        Ok(request) => request,
        Err(error) => {
            return reply(
                &mut write,
                &AdminResponse::Error {
                    message: format!("not a request this daemon understands: {error}"),
                },
            )
            .await;
        }
    };
    info!(?request, "admin request");
    let store_error = |error: crate::store::StoreError| AdminResponse::Error {
        message: error.to_string(),
    };
    match request {
        AdminRequest::Status => {
            let response = status_report(
                &state.store,
                "daemon",
                Some(state.started_at),
                state.sockets.snapshot(),
            )
            .map(AdminResponse::Status)
            .unwrap_or_else(store_error);
            reply(&mut write, &response).await
        }
        AdminRequest::Installations => {
            let response = installation_rows(&state.store)
                .map(|installations| AdminResponse::Installations { installations })
                .unwrap_or_else(store_error);
            reply(&mut write, &response).await
        }
        AdminRequest::Backup => {
            let store = state.store.clone();
            let now = state.clock.now();
            let backup = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                store.write_backup(&mut bytes, now).map(|_| bytes)
            })
            .await
            .map_err(std::io::Error::other)?;
            match backup {
                Ok(bytes) => {
                    reply(&mut write, &AdminResponse::Backup).await?;
                    write.write_all(&bytes).await?;
                    write.shutdown().await
                }
                Err(error) => reply(&mut write, &store_error(error)).await,
            }
        }
    }
}

async fn reply(
    write: &mut (impl AsyncWriteExt + Unpin),
    response: &AdminResponse,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    write.flush().await
}
