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
    /// Each installation's permission-upgrade campaign.
    UpgradeStatus,
    Subscriptions {
        team: Option<String>,
        channel: Option<String>,
    },
    /// The Slack outbox, or its dead letters, uncertain or parked messages.
    Outbox {
        dead: bool,
        #[serde(default)]
        uncertain: bool,
        #[serde(default)]
        parked: bool,
    },
    /// Puts one dead letter or uncertain message (by id) back into the outbox; with
    /// `None`, every dead letter (or every uncertain message, with `uncertain`).
    OutboxRetry {
        id: Option<u64>,
        #[serde(default)]
        uncertain: bool,
    },
    /// Answered with the backup file's lines, then the connection closes.
    Backup,
}

/// What the daemon answers (one line of JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminResponse {
    Status(Box<StatusReport>),
    Installations {
        installations: Vec<InstallationRow>,
    },
    UpgradeStatus {
        campaigns: Vec<super::upgrade_driver::UpgradeRow>,
    },
    Subscriptions {
        subscriptions: Vec<SubscriptionRow>,
    },
    Outbox {
        deliveries: Vec<DeliveryRow>,
    },
    Retried {
        count: usize,
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
    /// Repositories the poller watches, and those answering 404/403.
    pub watched_repositories: usize,
    pub broken_repositories: Vec<String>,
    /// Bitbucket requests in the last hour and the hourly budget (daemon only).
    pub bitbucket_requests_last_hour: Option<usize>,
    pub bitbucket_budget_per_hour: Option<usize>,
    /// Activities found but not yet routed to channels.
    pub activity_backlog: usize,
    pub outbox_depth: usize,
    pub dead_letters: usize,
    /// Messages that may or may not have been posted (never posted again by themselves).
    #[serde(default)]
    pub uncertain: usize,
    /// Messages waiting for their workspace to be installed again, or held.
    #[serde(default)]
    pub parked: usize,
    /// The supervised components (daemon only): running, restarting, failed, stopped.
    #[serde(default)]
    pub components: std::collections::BTreeMap<String, super::supervisor::ComponentStatus>,
    /// The workspace sweep's coverage per workspace and kind (daemon only).
    #[serde(default)]
    pub sweep_coverage: Vec<crate::metrics::SweepCoverage>,
    /// `sled` or `postgres`.
    #[serde(default)]
    pub engine: String,
    /// On PostgreSQL: every replica seen in the last hour, with the leases each holds.
    #[serde(default)]
    pub replicas: Vec<crate::store::ReplicaStatus>,
}

/// One subscription as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRow {
    pub team_id: String,
    pub channel_id: String,
    pub target: String,
    pub features: Vec<String>,
    pub filters: Vec<String>,
    pub paused: Option<String>,
    pub created_by: String,
}

/// One outbox entry as the CLI shows it: never the message body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub id: u64,
    pub team_id: String,
    pub channel_id: String,
    pub activity_id: String,
    pub attempts: u32,
    pub not_before: Timestamp,
    pub last_error: Option<String>,
}

pub fn subscription_rows(
    store: &Store,
    team: Option<&str>,
    channel: Option<&str>,
) -> Result<Vec<SubscriptionRow>, crate::store::StoreError> {
    Ok(store
        .subscriptions
        .list_all()?
        .into_iter()
        .filter(|s| team.is_none_or(|team| s.team_id == team))
        .filter(|s| channel.is_none_or(|channel| s.channel_id == channel))
        .map(|s| SubscriptionRow {
            team_id: s.team_id.clone(),
            channel_id: s.channel_id.clone(),
            target: s.target.as_str().to_string(),
            features: s.features.words(),
            filters: s.filters.words(),
            paused: s.paused.as_ref().map(|pause| pause.reason.clone()),
            created_by: s.created_by.clone(),
        })
        .collect())
}

/// Which part of the outbox to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxView {
    Waiting,
    Dead,
    /// Posted or not, nobody knows (a timeout, a crash during the post).
    Uncertain,
    /// A workspace not installed, or held by its permission upgrade.
    Parked,
}

impl OutboxView {
    pub fn from_flags(dead: bool, uncertain: bool, parked: bool) -> Self {
        if dead {
            OutboxView::Dead
        } else if uncertain {
            OutboxView::Uncertain
        } else if parked {
            OutboxView::Parked
        } else {
            OutboxView::Waiting
        }
    }

    /// What an empty listing says.
    pub fn empty_text(self) -> &'static str {
        match self {
            OutboxView::Waiting => "the outbox is empty\n",
            OutboxView::Dead => "no dead letters\n",
            OutboxView::Uncertain => "no uncertain messages\n",
            OutboxView::Parked => "no parked messages\n",
        }
    }
}

/// `outbox retry`: a dead letter or uncertain message by id (dead letters first), or
/// every dead letter (or every uncertain message). Returns how many were re-queued.
pub async fn retry_deliveries(
    store: &Store,
    id: Option<u64>,
    uncertain: bool,
    now: Timestamp,
) -> Result<usize, crate::store::StoreError> {
    match id {
        Some(id) => match store.deliveries.retry_dead(Some(id), now).await? {
            0 => store.deliveries.retry_uncertain(Some(id), now).await,
            count => Ok(count),
        },
        None if uncertain => store.deliveries.retry_uncertain(None, now).await,
        None => store.deliveries.retry_dead(None, now).await,
    }
}

pub fn delivery_rows(
    store: &Store,
    view: OutboxView,
) -> Result<Vec<DeliveryRow>, crate::store::StoreError> {
    let deliveries = match view {
        OutboxView::Waiting => store.deliveries.pending()?,
        OutboxView::Dead => store.deliveries.dead_letters()?,
        OutboxView::Uncertain => store.deliveries.uncertain()?,
        OutboxView::Parked => store.deliveries.parked()?,
    };
    Ok(deliveries
        .into_iter()
        .map(|d| DeliveryRow {
            id: d.id,
            team_id: d.team_id,
            channel_id: d.channel_id,
            activity_id: d.activity_id,
            attempts: d.attempts,
            not_before: d.not_before,
            last_error: d
                .uncertain
                .or_else(|| {
                    d.parked.map(|reason| match reason {
                        crate::store::ParkReason::NotInstalled => {
                            "parked: the workspace is not installed".to_string()
                        }
                        crate::store::ParkReason::Held => {
                            "parked: held until the workspace's permissions are updated".to_string()
                        }
                    })
                })
                .or(d.last_error),
        })
        .collect())
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
    now: Timestamp,
    lease_ttl: std::time::Duration,
) -> Result<StatusReport, crate::store::StoreError> {
    let installations = store.installations.list()?;
    let watched = store.repositories.list()?;
    Ok(StatusReport {
        source: source.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        store_path: store.path().to_path_buf(),
        sockets,
        active_installations: installations.iter().filter(|i| i.is_active()).count(),
        installations: installations.len(),
        watched_repositories: watched.len(),
        broken_repositories: watched
            .iter()
            .filter_map(|repo| {
                repo.broken
                    .as_ref()
                    .map(|broken| format!("{} ({})", repo.name, broken.reason))
            })
            .collect(),
        bitbucket_requests_last_hour: None,
        bitbucket_budget_per_hour: None,
        activity_backlog: store.activities.len(),
        outbox_depth: store.deliveries.depth(),
        dead_letters: store.deliveries.dead_letters()?.len(),
        uncertain: store.deliveries.uncertain()?.len(),
        parked: store.deliveries.parked()?.len(),
        components: Default::default(),
        sweep_coverage: Vec::new(),
        engine: store.engine().into(),
        replicas: store.coordination.replicas(now, lease_ttl)?,
    })
}

/// What the server needs.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    /// How long leases last without renewal (which replicas count as alive).
    pub lease_ttl: std::time::Duration,
    pub sockets: SocketHealth,
    pub clock: Arc<dyn Clock>,
    pub started_at: Timestamp,
    /// The poller's client, for its request budget; `None` without a credential.
    pub bitbucket: Option<crate::bitbucket::BitbucketClient>,
    /// The campaign dates, for the next reminder in `upgrade-status`.
    pub upgrade_schedule: crate::upgrade::campaign::CampaignSchedule,
    /// The supervised components' states.
    pub components: super::supervisor::Components,
    /// The daemon's metrics, for the sweep's coverage.
    pub metrics: crate::metrics::Metrics,
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
                state.clock.now(),
                state.lease_ttl,
            )
            .map(|mut report| {
                report.components = state.components.snapshot();
                report.sweep_coverage = state.metrics.sweep_coverage_rows();
                if let Some(client) = &state.bitbucket {
                    report.bitbucket_requests_last_hour = Some(client.budget().used_in_last_hour());
                    report.bitbucket_budget_per_hour = Some(client.budget().allowance());
                }
                AdminResponse::Status(Box::new(report))
            })
            .unwrap_or_else(store_error);
            reply(&mut write, &response).await
        }
        AdminRequest::Subscriptions { team, channel } => {
            let response = subscription_rows(&state.store, team.as_deref(), channel.as_deref())
                .map(|subscriptions| AdminResponse::Subscriptions { subscriptions })
                .unwrap_or_else(store_error);
            reply(&mut write, &response).await
        }
        AdminRequest::Outbox {
            dead,
            uncertain,
            parked,
        } => {
            let view = OutboxView::from_flags(dead, uncertain, parked);
            let response = delivery_rows(&state.store, view)
                .map(|deliveries| AdminResponse::Outbox { deliveries })
                .unwrap_or_else(store_error);
            reply(&mut write, &response).await
        }
        AdminRequest::OutboxRetry { id, uncertain } => {
            let response =
                match retry_deliveries(&state.store, id, uncertain, state.clock.now()).await {
                    Ok(count) => AdminResponse::Retried { count },
                    Err(error) => store_error(error),
                };
            reply(&mut write, &response).await
        }
        AdminRequest::UpgradeStatus => {
            let response = super::upgrade_driver::upgrade_rows(
                &state.store,
                &state.upgrade_schedule,
                state.clock.now(),
            )
            .map(|campaigns| AdminResponse::UpgradeStatus { campaigns })
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
