//! Tests of `store/backup.rs`.

use super::*;
use crate::store::installations::tests::sample;

async fn store_with_data(dir: &Path) -> Store {
    let store = Store::open(dir).expect("open");
    store
        .installations
        .upsert(sample("T1", "xoxb-backup-secret"))
        .await
        .expect("upsert");
    store
        .dedup
        .first_sighting(crate::store::DedupKind::Event, "Ev1", Timestamp::UNIX_EPOCH)
        .expect("dedup");
    store
}

fn backup_of(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .write_backup(&mut out, Timestamp::UNIX_EPOCH)
        .expect("backup");
    out
}

#[tokio::test]
async fn a_backup_restores_into_an_empty_directory_with_the_same_key() {
    let source = tempfile::tempdir().expect("tempdir");
    let store = store_with_data(source.path()).await;
    let bytes = backup_of(&store);
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("backup-secret"),
        "tokens stay sealed in a backup"
    );
    let target_parent = tempfile::tempdir().expect("tempdir");
    let target = target_parent.path().join("restored");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::copy(
        source.path().join(GENERATED_KEY_FILE),
        target.join(GENERATED_KEY_FILE),
    )
    .expect("copy key");
    let summary = restore(&target, None, &bytes[..]).expect("restore");
    assert_eq!(summary.entries, 2);
    let restored = Store::open(&target).expect("open restored");
    let installation = restored
        .installations
        .get("T1")
        .expect("get")
        .expect("present");
    assert_eq!(
        installation.bot_token.as_ref().map(|t| t.expose().as_str()),
        Some("xoxb-backup-secret")
    );
    assert!(
        !restored
            .dedup
            .first_sighting(crate::store::DedupKind::Event, "Ev1", Timestamp::UNIX_EPOCH)
            .expect("dedup")
    );
}

#[tokio::test]
async fn refusals_leave_nothing_behind() {
    let source = tempfile::tempdir().expect("tempdir");
    let store = store_with_data(source.path()).await;
    let bytes = backup_of(&store);
    let parent = tempfile::tempdir().expect("tempdir");
    let target = parent.path().join("restored");

    // No key at all.
    assert!(matches!(
        restore(&target, None, &bytes[..]),
        Err(RestoreError::NoKey { .. })
    ));
    // Another store's key.
    let other = tempfile::tempdir().expect("tempdir");
    TokenCipher::load_or_generate(None, other.path()).expect("key");
    let wrong = other.path().join(GENERATED_KEY_FILE);
    assert!(matches!(
        restore(&target, Some(&wrong), &bytes[..]),
        Err(RestoreError::WrongKey { .. })
    ));
    let key = source.path().join(GENERATED_KEY_FILE);
    // Truncated.
    let cut = &bytes[..bytes.len() - 20];
    assert!(matches!(
        restore(&target, Some(&key), cut),
        Err(RestoreError::Damaged(_))
    ));
    // Tampered.
    let tampered = String::from_utf8_lossy(&bytes)
        .replace("\"T1\"", "\"T9\"")
        .replace("VDE", "VDk");
    assert!(matches!(
        restore(&target, Some(&key), tampered.as_bytes()),
        Err(RestoreError::Damaged(_))
    ));
    // Newer format.
    let newer = String::from_utf8_lossy(&bytes).replacen("\"version\":1", "\"version\":2", 1);
    assert!(matches!(
        restore(&target, Some(&key), newer.as_bytes()),
        Err(RestoreError::NewerFormat { found: 2, .. })
    ));
    // Into a store that has data.
    assert!(matches!(
        restore(source.path(), Some(&key), &bytes[..]),
        Err(RestoreError::TargetNotEmpty { .. })
    ));
    assert!(!target.exists(), "nothing half-restored");
    assert!(!sibling(&target, "restoring").exists());
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_backup_file_is_private_and_appears_only_once_verified() {
    let source = tempfile::tempdir().expect("tempdir");
    let store = store_with_data(source.path()).await;
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("backup.jsonl");
    // A partial file left by an interrupted backup, readable by everyone.
    let partial = sibling(&target, "partial");
    std::fs::write(&partial, b"stale").expect("write");
    std::fs::set_permissions(
        &partial,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");

    let mut file = BackupFile::create(&target).expect("create");
    assert_eq!(mode(&partial), 0o600, "private before any byte is written");
    assert!(!target.exists());
    let written = store
        .write_backup(&mut file, Timestamp::UNIX_EPOCH)
        .expect("backup");
    let summary = file.commit().expect("commit");
    assert_eq!(summary.entries, written.entries);
    assert_eq!(mode(&target), 0o600);
    assert!(!partial.exists());
    assert_eq!(std::fs::read(&target).expect("read"), backup_of(&store));
}

#[tokio::test]
async fn a_cut_or_damaged_backup_does_not_verify_and_leaves_no_file() {
    let source = tempfile::tempdir().expect("tempdir");
    let store = store_with_data(source.path()).await;
    let bytes = backup_of(&store);
    assert_eq!(verify(&bytes[..]).expect("whole").entries, 2);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let without_trailer = &text[..text.trim_end().rfind('\n').expect("lines") + 1];
    let cuts: Vec<Vec<u8>> = vec![
        Vec::new(),
        bytes[..bytes.len() / 2].to_vec(),
        bytes[..bytes.len() - 20].to_vec(),
        without_trailer.as_bytes().to_vec(),
        text.replace("VDE", "VDk").into_bytes(),
        format!("{text}{without_trailer}").into_bytes(),
    ];
    let out = tempfile::tempdir().expect("tempdir");
    let target = out.path().join("backup.jsonl");
    for cut in cuts {
        assert!(
            verify(&cut[..]).is_err(),
            "{}",
            String::from_utf8_lossy(&cut)
        );
        let mut file = BackupFile::create(&target).expect("create");
        file.write_all(&cut).expect("write");
        let error = file.commit().expect_err("refused");
        assert!(matches!(error, BackupFileError::Invalid { .. }), "{error}");
        assert!(error.to_string().contains("nothing was written"), "{error}");
        assert_eq!(
            std::fs::read_dir(out.path()).expect("dir").count(),
            0,
            "no file left behind"
        );
    }
    // Dropped without a commit (the stream failed), nothing is left either.
    let mut file = BackupFile::create(&target).expect("create");
    file.write_all(&bytes).expect("write");
    drop(file);
    assert_eq!(std::fs::read_dir(out.path()).expect("dir").count(), 0);
}

#[tokio::test]
async fn a_restore_into_a_symlinked_storage_path_fills_the_linked_directory() {
    let source = tempfile::tempdir().expect("tempdir");
    let store = store_with_data(source.path()).await;
    let bytes = backup_of(&store);
    // systemd's DynamicUser layout: data -> private/data.
    let parent = tempfile::tempdir().expect("tempdir");
    let real = parent.path().join("private").join("data");
    std::fs::create_dir_all(&real).expect("mkdir");
    let link = parent.path().join("data");
    std::os::unix::fs::symlink("private/data", &link).expect("symlink");
    std::fs::copy(
        source.path().join(GENERATED_KEY_FILE),
        link.join(GENERATED_KEY_FILE),
    )
    .expect("copy key");

    let summary = restore(&link, None, &bytes[..]).expect("restore");
    assert_eq!(summary.entries, 2);
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink(),
        "storage.path is still the link"
    );
    assert!(real.join(GENERATED_KEY_FILE).exists());
    let restored = Store::open(&link).expect("open through the link");
    let installation = restored
        .installations
        .get("T1")
        .expect("get")
        .expect("present");
    assert_eq!(
        installation.bot_token.as_ref().map(|t| t.expose().as_str()),
        Some("xoxb-backup-secret")
    );
    drop(restored);
    let leftovers: Vec<_> = std::fs::read_dir(parent.path().join("private"))
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("data")]);
}

#[tokio::test]
async fn personal_notification_settings_are_backed_up_and_restored() {
    use crate::notify::personal::{NotifyKind, PersonalSettings};
    let source = tempfile::tempdir().expect("tempdir");
    let store = Store::open(source.path()).expect("open");
    let mut settings = PersonalSettings::default();
    settings.set(NotifyKind::Comments, true);
    store
        .personal_settings
        .put("T1", "U1", &settings)
        .await
        .expect("put");
    let bytes = backup_of(&store);
    let target_parent = tempfile::tempdir().expect("tempdir");
    let target = target_parent.path().join("restored");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::copy(
        source.path().join(GENERATED_KEY_FILE),
        target.join(GENERATED_KEY_FILE),
    )
    .expect("copy key");
    restore(&target, None, &bytes[..]).expect("restore");
    let restored = Store::open(&target).expect("open restored");
    assert_eq!(
        restored.personal_settings.get("T1", "U1").expect("get"),
        settings
    );
}
