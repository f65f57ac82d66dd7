//! Test harness shared by the registry integration tests: a real registry process, a
//! fault-injecting proxy in front of it, and generated test images.

#![allow(dead_code)]

pub mod image;
pub mod proxy;
pub mod registry;

use std::path::PathBuf;

/// `testdata/registry` in the repository.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/registry")
}

/// Whether a program is on PATH; tests that need it print why they skip.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Skip the calling test (with a printed reason) unless the registry binary is installed.
#[macro_export]
macro_rules! require_registry {
    () => {
        if !std::path::Path::new(common::registry::REGISTRY_BIN).exists() {
            eprintln!("SKIP: {} is not installed", common::registry::REGISTRY_BIN);
            return;
        }
    };
}

/// Client options for tests: a private docker config dir, quick retries, short stall timeout.
pub fn test_options(config_dir: &std::path::Path) -> rbuild_registry::Options {
    rbuild_registry::Options {
        docker_config_dir: Some(config_dir.to_path_buf()),
        stall_timeout: std::time::Duration::from_secs(2),
        deadline: std::time::Duration::from_secs(10),
        retry: rbuild_registry::RetryPolicy {
            max_attempts: 5,
            initial_backoff: std::time::Duration::from_millis(50),
            max_backoff: std::time::Duration::from_secs(1),
        },
        ..Default::default()
    }
}

/// A fresh store in a temp dir.
pub fn temp_store() -> (tempfile::TempDir, rbuild_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = rbuild_store::Store::open(&dir.path().join("root")).unwrap();
    (dir, store)
}
