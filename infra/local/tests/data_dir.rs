//! The data directory holds the store (digest keys, password hashes, command payloads),
//! the CA's key and the admin and token secrets: only the owner may read any of it.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use winmdm_local::{Options, start};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every directory 0700 and every file 0600 under `dir`, which must hold the store, the
/// CA and both secrets.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for name in ["winmdm.redb", "token-key", "admin-token", "ca"] {
        assert!(dir.join(name).exists(), "{name} missing");
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
}

#[tokio::test]
async fn a_fresh_data_dir_is_private() {
    let parent = tempfile::tempdir().unwrap();
    // A parent that does not exist yet either: both are created 0700.
    let dir = parent.path().join("nested").join("data");
    let server = start(Options::ephemeral(dir.clone())).await.unwrap();
    assert_eq!(mode(&parent.path().join("nested")), 0o700);
    assert_private(&dir);
    server.shutdown().await;
}

#[tokio::test]
async fn an_older_data_dir_is_tightened() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    // Made by an earlier version: directories 0755, files 0644.
    start(Options::ephemeral(dir.clone()))
        .await
        .unwrap()
        .shutdown()
        .await;
    let open = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    open(&dir, 0o755).unwrap();
    open(&dir.join("ca"), 0o755).unwrap();
    for f in ["winmdm.redb", "token-key", "admin-token"] {
        open(&dir.join(f), 0o644).unwrap();
    }
    for entry in std::fs::read_dir(dir.join("ca")).unwrap() {
        open(&entry.unwrap().path(), 0o644).unwrap();
    }

    let server = start(Options::ephemeral(dir.clone())).await.unwrap();
    assert_private(&dir);
    server.shutdown().await;
}

/// A data directory given as a symbolic link: the directory it names is what is tightened.
#[tokio::test]
async fn a_symlinked_data_dir_is_followed() {
    let parent = tempfile::tempdir().unwrap();
    let real = parent.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = parent.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let server = start(Options::ephemeral(link)).await.unwrap();
    assert_private(&real);
    server.shutdown().await;
}
