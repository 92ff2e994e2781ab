//! Installations: one record per Slack workspace (or Enterprise Grid organization) that
//! installed the app, with its bot token sealed.
//!
//! Owns the stored shape and the state changes of an installation (install, reinstall,
//! tokens revoked, uninstalled), and finds the workspaces whose retention ended; purging
//! one, with everything it has in other trees, is `purge.rs`. A reinstall updates the
//! record in place, so everything keyed by the team (subscriptions, user links, threads)
//! is kept. Every write is flushed before it returns. Must never store or return a token unsealed
//! except as a [`Secret`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::crypto::TokenCipher;
use super::{StoreError, WriteGate};
use crate::config::Secret;

/// Where an installation's state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallationState {
    Active,
    /// Slack revoked the bot token; the app may still be installed.
    TokensRevoked,
    Uninstalled,
}

impl InstallationState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationState::Active => "active",
            InstallationState::TokensRevoked => "tokens_revoked",
            InstallationState::Uninstalled => "uninstalled",
        }
    }
}

/// How the installation came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallSource {
    /// `slack.bot_token` in the configuration (single workspace).
    ConfiguredToken,
    /// The OAuth v2 flow (`/slack/install`).
    OAuth,
}

/// A workspace's installation of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub team_id: String,
    pub team_name: String,
    pub enterprise_id: Option<String>,
    pub bot_user_id: String,
    pub bot_id: Option<String>,
    pub app_id: Option<String>,
    /// `None` once Slack revoked it or the app was uninstalled.
    pub bot_token: Option<Secret<String>>,
    pub scopes: Vec<String>,
    pub installer_user_id: Option<String>,
    pub installed_at: Timestamp,
    pub updated_at: Timestamp,
    pub state: InstallationState,
    pub source: InstallSource,
}

impl Installation {
    pub fn is_active(&self) -> bool {
        self.state == InstallationState::Active && self.bot_token.is_some()
    }
}

/// The stored form: the token sealed, bound to the team id.
#[derive(Debug, Serialize, Deserialize)]
struct StoredInstallation {
    team_id: String,
    team_name: String,
    enterprise_id: Option<String>,
    bot_user_id: String,
    bot_id: Option<String>,
    app_id: Option<String>,
    bot_token_sealed: Option<String>,
    scopes: Vec<String>,
    installer_user_id: Option<String>,
    installed_at: Timestamp,
    updated_at: Timestamp,
    state: InstallationState,
    source: InstallSource,
}

#[derive(Clone)]
pub struct InstallationStore {
    tree: super::kv::Tree,
    cipher: TokenCipher,
    gate: WriteGate,
}

impl InstallationStore {
    pub(super) fn new(tree: super::kv::Tree, cipher: TokenCipher, gate: WriteGate) -> Self {
        Self { tree, cipher, gate }
    }

    fn put(&self, installation: &Installation) -> Result<(), StoreError> {
        let _writing = self.gate.writing()?;
        self.tree
            .insert(installation.team_id.as_bytes(), self.encode(installation))?;
        Ok(())
    }

    fn token_context(team_id: &str) -> String {
        format!("installation:{team_id}")
    }

    fn decode(&self, bytes: &[u8]) -> Result<Installation, StoreError> {
        let stored: StoredInstallation = serde_json::from_slice(bytes)
            .map_err(|error| StoreError::Corrupt(format!("installation record: {error}")))?;
        let bot_token = stored
            .bot_token_sealed
            .as_deref()
            .map(|sealed| {
                self.cipher
                    .open(sealed, &Self::token_context(&stored.team_id))
            })
            .transpose()?;
        Ok(Installation {
            team_id: stored.team_id,
            team_name: stored.team_name,
            enterprise_id: stored.enterprise_id,
            bot_user_id: stored.bot_user_id,
            bot_id: stored.bot_id,
            app_id: stored.app_id,
            bot_token,
            scopes: stored.scopes,
            installer_user_id: stored.installer_user_id,
            installed_at: stored.installed_at,
            updated_at: stored.updated_at,
            state: stored.state,
            source: stored.source,
        })
    }

    fn encode(&self, installation: &Installation) -> Vec<u8> {
        let stored = StoredInstallation {
            team_id: installation.team_id.clone(),
            team_name: installation.team_name.clone(),
            enterprise_id: installation.enterprise_id.clone(),
            bot_user_id: installation.bot_user_id.clone(),
            bot_id: installation.bot_id.clone(),
            app_id: installation.app_id.clone(),
            bot_token_sealed: installation.bot_token.as_ref().map(|token| {
                self.cipher
                    .seal(token.expose(), &Self::token_context(&installation.team_id))
            }),
            scopes: installation.scopes.clone(),
            installer_user_id: installation.installer_user_id.clone(),
            installed_at: installation.installed_at,
            updated_at: installation.updated_at,
            state: installation.state,
            source: installation.source,
        };
        serde_json::to_vec(&stored).expect("an installation always serializes")
    }

    pub fn get(&self, team_id: &str) -> Result<Option<Installation>, StoreError> {
        self.tree
            .get(team_id.as_bytes())?
            .map(|bytes| self.decode(&bytes))
            .transpose()
    }

    /// The installation serving an envelope: the team's own, else its organization's.
    pub fn for_team(
        &self,
        team_id: Option<&str>,
        enterprise_id: Option<&str>,
    ) -> Result<Option<Installation>, StoreError> {
        for key in [team_id, enterprise_id].into_iter().flatten() {
            if let Some(installation) = self.get(key)? {
                return Ok(Some(installation));
            }
        }
        Ok(None)
    }

    /// The team ids of the installations that are active (not uninstalled or revoked).
    pub fn active_team_ids(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(Installation::is_active)
            .map(|installation| installation.team_id)
            .collect())
    }

    pub fn list(&self) -> Result<Vec<Installation>, StoreError> {
        self.tree
            .iter()
            .values()
            .map(|bytes| self.decode(&bytes?))
            .collect()
    }

    /// Installs or reinstalls: an existing record keeps its `installed_at` and is
    /// otherwise replaced by `fresh`, so nothing keyed by the team is lost.
    pub async fn upsert(&self, mut fresh: Installation) -> Result<Installation, StoreError> {
        if let Some(existing) = self.get(&fresh.team_id)? {
            fresh.installed_at = existing.installed_at;
        }
        self.put(&fresh)?;
        self.tree.flush_async().await?;
        Ok(fresh)
    }

    /// `tokens_revoked` for the bot: the token is deleted. An uninstalled record stays
    /// uninstalled, whichever event came first.
    pub async fn revoke_tokens(
        &self,
        team_id: &str,
        now: Timestamp,
    ) -> Result<Option<Installation>, StoreError> {
        self.change(team_id, now, |installation| {
            installation.bot_token = None;
            if installation.state == InstallationState::Active {
                installation.state = InstallationState::TokensRevoked;
            }
        })
        .await
    }

    /// `app_uninstalled`: the token is deleted and the record kept (for the retention
    /// period) so that a reinstall restores everything.
    pub async fn mark_uninstalled(
        &self,
        team_id: &str,
        now: Timestamp,
    ) -> Result<Option<Installation>, StoreError> {
        self.change(team_id, now, |installation| {
            installation.bot_token = None;
            installation.state = InstallationState::Uninstalled;
        })
        .await
    }

    /// The workspaces uninstalled before `cutoff`, each with its record as stored (for
    /// [`super::Store::purge_uninstalled_before`], which purges one only while its record
    /// is still exactly this).
    pub(super) fn uninstalled_before(
        &self,
        cutoff: Timestamp,
    ) -> Result<Vec<(String, super::kv::IVec)>, StoreError> {
        let mut found = Vec::new();
        for item in self.tree.iter() {
            let (_, bytes) = item?;
            let installation = self.decode(&bytes)?;
            if installation.state == InstallationState::Uninstalled
                && installation.updated_at < cutoff
            {
                found.push((installation.team_id, bytes));
            }
        }
        Ok(found)
    }

    async fn change(
        &self,
        team_id: &str,
        now: Timestamp,
        apply: impl FnOnce(&mut Installation),
    ) -> Result<Option<Installation>, StoreError> {
        let Some(mut installation) = self.get(team_id)? else {
            return Ok(None);
        };
        apply(&mut installation);
        installation.updated_at = now;
        self.put(&installation)?;
        self.tree.flush_async().await?;
        Ok(Some(installation))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Store;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid")
    }

    pub(crate) fn sample(team_id: &str, token: &str) -> Installation {
        Installation {
            team_id: team_id.into(),
            team_name: format!("Team {team_id}"),
            enterprise_id: None,
            bot_user_id: "U0BOT".into(),
            bot_id: Some("B0BOT".into()),
            app_id: Some("A0APP".into()),
            bot_token: Some(Secret::new(token.into())),
            scopes: vec!["commands".into(), "chat:write".into()],
            installer_user_id: Some("U0ADMIN".into()),
            installed_at: at(100),
            updated_at: at(100),
            state: InstallationState::Active,
            source: InstallSource::OAuth,
        }
    }

    #[tokio::test]
    async fn tokens_are_sealed_in_the_store_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .installations
            .upsert(sample("T1", "xoxb-very-secret-token"))
            .await
            .expect("upsert");
        let loaded = store
            .installations
            .get("T1")
            .expect("get")
            .expect("present");
        assert_eq!(
            loaded.bot_token.as_ref().map(|t| t.expose().as_str()),
            Some("xoxb-very-secret-token")
        );
        store.flush().await.expect("flush");
        drop(store);
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(&entry).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("very-secret"),
                "{} holds the token in clear",
                entry.display()
            );
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }

    #[tokio::test]
    async fn a_reinstall_keeps_installed_at_and_replaces_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .installations
            .upsert(sample("T1", "xoxb-old"))
            .await
            .expect("upsert");
        let mut again = sample("T1", "xoxb-new");
        again.installed_at = at(900);
        again.updated_at = at(900);
        again.scopes.push("im:write".into());
        let stored = store.installations.upsert(again).await.expect("upsert");
        assert_eq!(stored.installed_at, at(100));
        assert_eq!(stored.updated_at, at(900));
        assert_eq!(stored.scopes.len(), 3);
        assert_eq!(store.installations.list().expect("list").len(), 1);
    }

    #[tokio::test]
    async fn uninstall_and_revoke_in_either_order_end_uninstalled_without_a_token() {
        for uninstall_first in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(dir.path()).expect("open");
            let installations = &store.installations;
            installations
                .upsert(sample("T1", "xoxb-1"))
                .await
                .expect("upsert");
            if uninstall_first {
                installations
                    .mark_uninstalled("T1", at(200))
                    .await
                    .expect("uninstall");
                installations
                    .revoke_tokens("T1", at(201))
                    .await
                    .expect("revoke");
            } else {
                let revoked = installations
                    .revoke_tokens("T1", at(200))
                    .await
                    .expect("revoke")
                    .expect("present");
                assert_eq!(revoked.state, InstallationState::TokensRevoked);
                installations
                    .mark_uninstalled("T1", at(201))
                    .await
                    .expect("uninstall");
            }
            let record = installations.get("T1").expect("get").expect("kept");
            assert_eq!(
                record.state,
                InstallationState::Uninstalled,
                "{uninstall_first}"
            );
            assert!(record.bot_token.is_none());
            assert!(!record.is_active());
        }
    }
}
