//! Files of the repository the tests read: dashboards, alert rules, the Alloy config, scripts.

use std::path::{Path, PathBuf};

/// `relative` in the repository, absolute and resolved (it must exist).
pub fn repository_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
        .canonicalize()
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The `*.extension` files of the repository folder `relative`, sorted; at least one.
pub fn files_in(relative: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repository_path(relative))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{extension} in {relative}");
    files
}
