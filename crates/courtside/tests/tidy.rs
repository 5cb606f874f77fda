//! Repository conventions, checked as ordinary tests so `cargo test` keeps
//! them: every Rust file (the crates' and the fuzz targets') opens with a
//! `//!` comment saying what it is for, every crate inherits the workspace
//! lints, and no test is switched off.

use std::{
    fs,
    path::{Path, PathBuf},
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n == "node_modules") {
                continue;
            }
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    // Outside the workspace (fuzz/run.sh builds them), held to the same rules.
    rust_files(&workspace_root().join("fuzz"), &mut files);
    assert!(files.len() > 20, "expected the workspace's sources, found {}", files.len());
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc_comment() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|path| {
            let text = fs::read_to_string(path).expect("utf-8 source");
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(missing.is_empty(), "files without a leading //! comment: {missing:#?}");
}

#[test]
fn no_test_is_ignored() {
    let marker = ["#[", "ignore"].concat();
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|path| fs::read_to_string(path).expect("utf-8 source").contains(&marker))
        .collect();
    assert!(offenders.is_empty(), "ignored tests in {offenders:#?}");
}

#[test]
fn every_crate_inherits_the_workspace_lints() {
    let crates = fs::read_dir(workspace_root().join("crates")).expect("crates/");
    for entry in crates {
        let manifest = entry.expect("entry").path().join("Cargo.toml");
        let text = fs::read_to_string(&manifest).expect("manifest");
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{} does not inherit the workspace lints",
            manifest.display()
        );
    }
}
