//! Tidy checks, as ordinary tests: the crate layering (dependencies only point down, the
//! heavy or I/O crates only where they belong) and the house rules for source files (a
//! `//!` line atop each, no file over ~500 lines of code unless its top says why).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_owned()
}

/// Every workspace crate: name → (folder, direct dependency names, normal and dev).
/// Optional dependencies are left out: whoever turns on the feature that needs them is
/// checked for that (see [`the_gateway_links_the_wire_types_without_the_clients`]).
fn crates() -> BTreeMap<String, (PathBuf, BTreeSet<String>, BTreeSet<String>)> {
    let workspace: toml::Table = toml::from_str(
        &std::fs::read_to_string(root().join("Cargo.toml")).expect("workspace Cargo.toml"),
    )
    .expect("workspace Cargo.toml parses");
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    members
        .iter()
        .map(|m| {
            let dir = root().join(m.as_str().expect("a member path"));
            let manifest: toml::Table =
                toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
            let names = |section: &str| -> BTreeSet<String> {
                manifest
                    .get(section)
                    .and_then(|d| d.as_table())
                    .map(|t| {
                        t.iter()
                            .filter(|(_, v)| {
                                v.get("optional").and_then(|o| o.as_bool()) != Some(true)
                            })
                            .map(|(k, _)| k.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let name = manifest["package"]["name"].as_str().unwrap().to_owned();
            (
                name,
                (dir, names("dependencies"), names("dev-dependencies")),
            )
        })
        .collect()
}

/// The normal dependencies of `name`, through workspace crates, transitively (external
/// crates are listed but not followed: layering is about our crates).
fn closure(name: &str) -> BTreeSet<String> {
    let crates = crates();
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(next) = todo.pop() {
        if let Some((_, deps, _)) = crates.get(&next) {
            for d in deps {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
    }
    seen
}

/// The layers, lowest first: a crate may depend only on crates of lower layers.
const LAYERS: &[&[&str]] = &[
    &["tether-store", "tether-signaling", "tether-chaos"],
    &["tether-store-rocks", "tether-api"],
    &["tether-raft", "tether-agent"],
    &["tether-node"],
    &["tether-devkit"],
    &["tether-chaos-lab"],
    &["tether-cli", "tether-tests", "tether-bench"],
];

fn layer_of(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&name))
}

#[test]
fn every_workspace_crate_has_a_layer_and_depends_only_downwards() {
    for (name, (_, deps, _)) in crates() {
        let layer = layer_of(&name).unwrap_or_else(|| panic!("{name} is in no layer"));
        for dep in deps.iter().filter(|d| d.starts_with("tether-")) {
            let below = layer_of(dep).unwrap_or_else(|| panic!("{dep} is in no layer"));
            assert!(
                below < layer,
                "{name} (layer {layer}) depends on {dep} (layer {below}): dependencies point down"
            );
        }
    }
}

#[test]
fn heavy_and_io_dependencies_stay_where_they_belong() {
    let forbid = |krate: &str, banned: &[&str]| {
        let deps = closure(krate);
        for b in banned {
            assert!(!deps.contains(*b), "{krate} must not depend on {b}");
        }
    };
    // Only the storage crate links RocksDB.
    for (name, _) in crates() {
        if !["tether-store-rocks"].contains(&name.as_str()) {
            let (_, direct, _) = &crates()[&name];
            assert!(
                !direct.contains("rocksdb"),
                "{name} depends on rocksdb directly"
            );
        }
    }
    forbid(
        "tether-store",
        &["rocksdb", "openraft", "tokio", "tether-store-rocks"],
    );
    // The chaos checkers re-check saved histories anywhere: no runtime, no node.
    forbid(
        "tether-chaos",
        &[
            "tokio",
            "axum",
            "openraft",
            "rocksdb",
            "tether-node",
            "tether-store",
        ],
    );
    forbid(
        "tether-signaling",
        &["tokio", "axum", "openraft", "rocksdb", "tether-store"],
    );
    forbid(
        "tether-api",
        &["axum", "tether-node", "rocksdb", "openraft", "webrtc"],
    );
    // The gateway process: no WebRTC, no bench or dev tooling, no command line.
    forbid(
        "tether-node",
        &[
            "webrtc",
            "rtc",
            "tether-agent",
            "tether-devkit",
            "tether-bench",
            "hdrhistogram",
            "clap",
            "tokio-tungstenite",
            "reqwest",
        ],
    );
    forbid(
        "tether-agent",
        &["rocksdb", "axum", "tether-node", "openraft"],
    );
    for product in ["tether-cli", "tether-node", "tether-agent", "tether-api"] {
        forbid(product, &["tether-tests", "tether-bench"]);
    }
}

#[test]
fn the_gateway_links_the_wire_types_without_the_clients() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("node/Cargo.toml")).unwrap()).unwrap();
    let api = &manifest["dependencies"]["tether-api"];
    let features = api.get("features").and_then(|f| f.as_array());
    assert!(
        features.is_none_or(|f| f.iter().all(|x| x.as_str() != Some("client"))),
        "tether-node must use tether-api without its `client` feature"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (_, (dir, _, _)) in crates() {
        for sub in ["src", "tests", "benches"] {
            if dir.join(sub).is_dir() {
                rust_files(&dir.join(sub), &mut files);
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

#[test]
fn every_source_file_opens_with_a_doc_line() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line: {missing:?}"
    );
}

/// Lines of code before a file's unit tests.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

#[test]
fn no_source_file_is_long_unless_its_top_says_why() {
    const LIMIT: usize = 500;
    let long: Vec<_> = sources()
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
            let n = code_lines(&text);
            (n > LIMIT && !head.contains("Long file:")).then(|| format!("{} ({n})", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {LIMIT} lines of code without a `Long file:` note at the top: {long:?}"
    );
}

#[test]
fn every_error_and_close_code_is_documented() {
    let doc = |name: &str| std::fs::read_to_string(root().join("docs").join(name)).unwrap();
    let api = doc("api.md");
    for code in tether_api::ErrorCode::ALL {
        assert!(
            api.contains(&format!("`{code}`")),
            "docs/api.md lacks `{code}`"
        );
    }
    let signaling = doc("signaling.md");
    for code in tether_signaling::codes::ErrorCode::ALL {
        assert!(
            signaling.contains(&format!("`{code}`")),
            "docs/signaling.md lacks `{code}`"
        );
    }
    for code in tether_signaling::codes::CloseCode::ALL {
        assert!(
            signaling.contains(&format!("| {} |", code.code())),
            "docs/signaling.md lacks close code {}",
            code.code()
        );
    }
}
