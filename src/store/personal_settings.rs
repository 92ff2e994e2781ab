//! Personal-notification settings: one record per person per workspace, keyed
//! `<team>:<slack user>`, holding what they turned on or off and their mute.
//!
//! Owns the stored shape (JSON [`PersonalSettings`]); a person without a record has the
//! defaults. Every write is flushed before it returns. Lookups never cross workspaces:
//! every key starts with the team id. Never decides who gets a DM (that is
//! `notify::personal` and the router).

use super::{StoreError, WriteGate};
use crate::notify::personal::PersonalSettings;

#[derive(Clone)]
pub struct PersonalSettingsStore {
    settings: super::kv::Tree,
    gate: WriteGate,
}

fn key(team_id: &str, slack_user_id: &str) -> String {
    format!("{team_id}:{slack_user_id}")
}

impl PersonalSettingsStore {
    pub(super) fn new(settings: super::kv::Tree, gate: WriteGate) -> Self {
        Self { settings, gate }
    }

    /// The person's settings; the defaults when they never changed any.
    pub fn get(&self, team_id: &str, slack_user_id: &str) -> Result<PersonalSettings, StoreError> {
        match self.settings.get(key(team_id, slack_user_id).as_bytes())? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| StoreError::Corrupt(format!("personal settings: {error}"))),
            None => Ok(PersonalSettings::default()),
        }
    }

    /// Everyone's stored settings (people who never changed any have none): team,
    /// Slack user, settings.
    pub fn list_all(&self) -> Result<Vec<(String, String, PersonalSettings)>, StoreError> {
        let mut found = Vec::new();
        for item in self.settings.iter() {
            let (key, value) = item?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let Some((team_id, user_id)) = key.split_once(':') else {
                continue;
            };
            let settings = serde_json::from_slice(&value)
                .map_err(|error| StoreError::Corrupt(format!("personal settings: {error}")))?;
            found.push((team_id.to_string(), user_id.to_string(), settings));
        }
        Ok(found)
    }

    /// Stores the person's settings (the defaults remove the record), then flushes.
    pub async fn put(
        &self,
        team_id: &str,
        slack_user_id: &str,
        settings: &PersonalSettings,
    ) -> Result<(), StoreError> {
        let key = key(team_id, slack_user_id);
        {
            let _writing = self.gate.writing()?;
            if *settings == PersonalSettings::default() {
                self.settings.remove(key.as_bytes())?;
            } else {
                let encoded =
                    serde_json::to_vec(settings).expect("personal settings always serialize");
                self.settings.insert(key.as_bytes(), encoded)?;
            }
        }
        self.settings.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::notify::personal::{NotifyKind, PersonalSettings};
    use crate::store::Store;

    #[tokio::test]
    async fn settings_are_per_person_per_workspace_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut changed = PersonalSettings::default();
        changed.set(NotifyKind::Reviews, false);
        {
            let store = Store::open(dir.path()).expect("open");
            let settings = &store.personal_settings;
            assert_eq!(
                settings.get("T1", "U1").expect("get"),
                PersonalSettings::default()
            );
            settings.put("T1", "U1", &changed).await.expect("put");
            assert_eq!(
                settings.get("T2", "U1").expect("get"),
                PersonalSettings::default()
            );
        }
        let store = Store::open(dir.path()).expect("reopen");
        let settings = &store.personal_settings;
        assert_eq!(settings.get("T1", "U1").expect("get"), changed);
        settings
            .put("T1", "U1", &PersonalSettings::default())
            .await
            .expect("back to the defaults");
        assert_eq!(
            settings.get("T1", "U1").expect("get"),
            PersonalSettings::default()
        );
    }
}
