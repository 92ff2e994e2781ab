//! User links: a Slack user (in one workspace) linked to a Bitbucket account, with that
//! account's OAuth tokens sealed.
//!
//! Owns the stored shape, the index from Bitbucket account to Slack user (for mentions),
//! and the atomicity rules: a link and its index entry change in one transaction, and a
//! rotated refresh token is on disk before the caller may use the new access token.
//! Lookups never cross workspaces: every key starts with the team id.

use super::kv::Transactional;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::crypto::TokenCipher;
use super::{StoreError, WriteGate};
use crate::config::Secret;

/// A Slack user's linked Bitbucket account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLink {
    pub team_id: String,
    pub slack_user_id: String,
    pub bitbucket_uuid: String,
    pub account_id: Option<String>,
    pub display_name: String,
    pub nickname: Option<String>,
    pub access_token: Secret<String>,
    pub refresh_token: Secret<String>,
    pub access_expires_at: Timestamp,
    pub linked_at: Timestamp,
    /// Bitbucket rejected the tokens; the user must log in again.
    pub stale: bool,
    /// The user was told (once) that the link went stale.
    pub stale_notified: bool,
    /// The Bitbucket scopes the link was granted; `None` for a link made before they
    /// were recorded.
    pub scopes: Option<Vec<String>>,
    /// The person was asked (once) to reconnect for the permissions actions need.
    pub reconnect_asked: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredLink {
    team_id: String,
    slack_user_id: String,
    bitbucket_uuid: String,
    account_id: Option<String>,
    display_name: String,
    nickname: Option<String>,
    access_token_sealed: String,
    refresh_token_sealed: String,
    access_expires_at: Timestamp,
    linked_at: Timestamp,
    stale: bool,
    stale_notified: bool,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    reconnect_asked: bool,
}

#[derive(Clone)]
pub struct UserLinkStore {
    links: super::kv::Tree,
    by_bitbucket: super::kv::Tree,
    cipher: TokenCipher,
    gate: WriteGate,
}

fn link_key(team_id: &str, slack_user_id: &str) -> String {
    format!("{team_id}:{slack_user_id}")
}

fn index_key(team_id: &str, bitbucket_uuid: &str) -> String {
    format!("{team_id}:{bitbucket_uuid}")
}

impl UserLinkStore {
    pub(super) fn new(
        links: super::kv::Tree,
        by_bitbucket: super::kv::Tree,
        cipher: TokenCipher,
        gate: WriteGate,
    ) -> Self {
        Self {
            links,
            by_bitbucket,
            cipher,
            gate,
        }
    }

    fn context(link_key: &str, which: &str) -> String {
        format!("user_link:{link_key}:{which}")
    }

    fn encode(&self, link: &UserLink) -> Vec<u8> {
        let key = link_key(&link.team_id, &link.slack_user_id);
        let stored = StoredLink {
            team_id: link.team_id.clone(),
            slack_user_id: link.slack_user_id.clone(),
            bitbucket_uuid: link.bitbucket_uuid.clone(),
            account_id: link.account_id.clone(),
            display_name: link.display_name.clone(),
            nickname: link.nickname.clone(),
            access_token_sealed: self
                .cipher
                .seal(link.access_token.expose(), &Self::context(&key, "access")),
            refresh_token_sealed: self
                .cipher
                .seal(link.refresh_token.expose(), &Self::context(&key, "refresh")),
            access_expires_at: link.access_expires_at,
            linked_at: link.linked_at,
            stale: link.stale,
            stale_notified: link.stale_notified,
            scopes: link.scopes.clone(),
            reconnect_asked: link.reconnect_asked,
        };
        serde_json::to_vec(&stored).expect("a user link always serializes")
    }

    fn decode(&self, bytes: &[u8]) -> Result<UserLink, StoreError> {
        let stored: StoredLink = serde_json::from_slice(bytes)
            .map_err(|error| StoreError::Corrupt(format!("user link record: {error}")))?;
        let key = link_key(&stored.team_id, &stored.slack_user_id);
        Ok(UserLink {
            access_token: self
                .cipher
                .open(&stored.access_token_sealed, &Self::context(&key, "access"))?,
            refresh_token: self.cipher.open(
                &stored.refresh_token_sealed,
                &Self::context(&key, "refresh"),
            )?,
            team_id: stored.team_id,
            slack_user_id: stored.slack_user_id,
            bitbucket_uuid: stored.bitbucket_uuid,
            account_id: stored.account_id,
            display_name: stored.display_name,
            nickname: stored.nickname,
            access_expires_at: stored.access_expires_at,
            linked_at: stored.linked_at,
            stale: stored.stale,
            stale_notified: stored.stale_notified,
            scopes: stored.scopes,
            reconnect_asked: stored.reconnect_asked,
        })
    }

    pub fn get(&self, team_id: &str, slack_user_id: &str) -> Result<Option<UserLink>, StoreError> {
        self.links
            .get(link_key(team_id, slack_user_id).as_bytes())?
            .map(|bytes| self.decode(&bytes))
            .transpose()
    }

    /// The Slack user linked to a Bitbucket account in this workspace, if any.
    pub fn slack_user_for(
        &self,
        team_id: &str,
        bitbucket_uuid: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .by_bitbucket
            .get(index_key(team_id, bitbucket_uuid).as_bytes())?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The Slack user of this workspace whose linked account a comment's mention names
    /// (see `notify::personal::mention_names`), if any; tokens are not opened.
    pub fn slack_user_mentioned(
        &self,
        team_id: &str,
        mention: &str,
    ) -> Result<Option<String>, StoreError> {
        if mention.starts_with('{') {
            if let Some(user) = self.slack_user_for(team_id, mention)? {
                return Ok(Some(user));
            }
        }
        for entry in self.links.scan_prefix(format!("{team_id}:").as_bytes()) {
            let (_, bytes) = entry?;
            let stored: StoredLink = serde_json::from_slice(&bytes)
                .map_err(|error| StoreError::Corrupt(format!("user link record: {error}")))?;
            if crate::notify::personal::mention_names(
                mention,
                &stored.bitbucket_uuid,
                stored.account_id.as_deref(),
                stored.nickname.as_deref(),
            ) {
                return Ok(Some(stored.slack_user_id));
            }
        }
        Ok(None)
    }

    /// Stores a link (new, refreshed or relinked to another account) and its index entry
    /// in one transaction, then flushes: on return it survives a crash.
    pub async fn put(&self, link: &UserLink) -> Result<(), StoreError> {
        let key = link_key(&link.team_id, &link.slack_user_id);
        let previous = self.get(&link.team_id, &link.slack_user_id)?;
        let encoded = self.encode(link);
        {
            let _writing = self.gate.writing()?;
            (&self.links, &self.by_bitbucket)
                .transaction(|(links, index)| {
                    if let Some(previous) = &previous {
                        if previous.bitbucket_uuid != link.bitbucket_uuid {
                            index.remove(
                                index_key(&previous.team_id, &previous.bitbucket_uuid).as_bytes(),
                            )?;
                        }
                    }
                    links.insert(key.as_bytes(), encoded.clone())?;
                    index.insert(
                        index_key(&link.team_id, &link.bitbucket_uuid).as_bytes(),
                        link.slack_user_id.as_bytes(),
                    )?;
                    Ok::<_, super::kv::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("user link transaction: {error:?}")))?;
        }
        self.links.flush_async().await?;
        Ok(())
    }

    /// Removes the link, its tokens and its index entry. True when there was one.
    pub async fn remove(&self, team_id: &str, slack_user_id: &str) -> Result<bool, StoreError> {
        let Some(previous) = self.get(team_id, slack_user_id)? else {
            return Ok(false);
        };
        {
            let _writing = self.gate.writing()?;
            (&self.links, &self.by_bitbucket)
                .transaction(|(links, index)| {
                    links.remove(link_key(team_id, slack_user_id).as_bytes())?;
                    index.remove(index_key(team_id, &previous.bitbucket_uuid).as_bytes())?;
                    Ok::<_, super::kv::ConflictableTransactionError<()>>(())
                })
                .map_err(|error| StoreError::Io(format!("user link transaction: {error:?}")))?;
        }
        self.links.flush_async().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    pub(crate) fn link(team: &str, user: &str, uuid: &str) -> UserLink {
        UserLink {
            team_id: team.into(),
            slack_user_id: user.into(),
            bitbucket_uuid: uuid.into(),
            account_id: Some("557058:abc".into()),
            display_name: "Ada Lovelace".into(),
            nickname: Some("ada".into()),
            access_token: Secret::new("bb-access-secret".into()),
            refresh_token: Secret::new("bb-refresh-secret".into()),
            access_expires_at: Timestamp::from_second(3600).expect("valid"),
            linked_at: Timestamp::UNIX_EPOCH,
            stale: false,
            stale_notified: false,
            scopes: None,
            reconnect_asked: false,
        }
    }

    #[tokio::test]
    async fn mentions_find_the_linked_person_of_the_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let links = &store.user_links;
        links.put(&link("T1", "U1", "{ada}")).await.expect("put");
        for mention in ["{ada}", "{557058:abc}", "ADA"] {
            assert_eq!(
                links.slack_user_mentioned("T1", mention).expect("find"),
                Some("U1".into()),
                "{mention}"
            );
        }
        assert_eq!(links.slack_user_mentioned("T2", "ada").expect("find"), None);
        assert_eq!(links.slack_user_mentioned("T1", "bob").expect("find"), None);
    }

    #[tokio::test]
    async fn links_are_per_workspace_and_indexed_by_bitbucket_account() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let links = &store.user_links;
        links.put(&link("T1", "U1", "{ada}")).await.expect("put");
        assert_eq!(
            links.slack_user_for("T1", "{ada}").expect("get"),
            Some("U1".into())
        );
        assert_eq!(
            links.slack_user_for("T2", "{ada}").expect("get"),
            None,
            "other workspace"
        );
        assert!(links.get("T2", "U1").expect("get").is_none());
        let loaded = links.get("T1", "U1").expect("get").expect("present");
        assert_eq!(loaded.refresh_token.expose(), "bb-refresh-secret");
        // Relinking to another account moves the index entry.
        links
            .put(&link("T1", "U1", "{grace}"))
            .await
            .expect("relink");
        assert_eq!(links.slack_user_for("T1", "{ada}").expect("get"), None);
        assert_eq!(
            links.slack_user_for("T1", "{grace}").expect("get"),
            Some("U1".into())
        );
        assert!(links.remove("T1", "U1").await.expect("remove"));
        assert!(!links.remove("T1", "U1").await.expect("remove again"));
        assert_eq!(links.slack_user_for("T1", "{grace}").expect("get"), None);
        assert!(links.get("T1", "U1").expect("get").is_none());
    }
}
