//! The layering ARCHITECTURE.md promises, checked rather than only written:
//! - the engine never touches the network: no broker, state-store, object-store or HTTP crate in
//!   its dependency tree, and none of the fleet's own crates;
//! - this crate (the plumbing both binaries share) does not pull in the engine;
//! - the scheduler uses worker and engine code only for its standalone mode.
//!
//! The dependency trees come from `cargo tree` with every feature on, so a dependency added behind
//! a feature flag is caught too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that speak to a network service (or are the fleet's own network-facing crates).
const NETWORK_CRATES: [&str; 12] = [
    "lapin",
    "amq-protocol",
    "redis",
    "aws-sdk-s3",
    "aws-config",
    "reqwest",
    "hyper",
    "ureq",
    "axum",
    "tonic",
    "rapid-fleet",
    "rapid-worker",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fleet/ sits in the workspace root").to_path_buf()
}

/// Names of every package `package` needs at run time on this platform, directly or not (dev and
/// build dependencies never ship), with the features the workspace builds by default.
fn runtime_dependencies(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--edges", "normal", "--prefix", "none", "--offline", "--locked"])
        .args(["--package", package, "--manifest-path"])
        .arg(workspace().join("Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    // Each line is `name vX.Y.Z [(path)] [(*)]`; the first is the package itself.
    tree.lines().skip(1).filter_map(|line| line.split_whitespace().next()).map(str::to_owned).collect()
}

#[test]
fn the_engine_has_no_network_or_queue_dependency() {
    let closure = runtime_dependencies("rapid-engine");
    let found: Vec<_> = NETWORK_CRATES.iter().filter(|name| closure.contains(**name)).collect();
    assert!(found.is_empty(), "rapid-engine now depends on {found:?}; the engine must stay off the network");
}

#[test]
fn the_fleet_plumbing_does_not_pull_in_the_engine() {
    let closure = runtime_dependencies("rapid-fleet");
    for engine_crate in ["rapid-engine", "rapid-worker", "ort"] {
        assert!(!closure.contains(engine_crate), "rapid-fleet depends on {engine_crate}; keep model code out of it");
    }
}

/// Scheduler files that may name worker or engine code, and why.
const STANDALONE_FILES: [(&str, &str); 2] = [
    ("standalone.rs", "runs the workers in the scheduler's own process"),
    ("config.rs", "reads the `[worker]` section that only the standalone mode uses"),
];

#[test]
fn the_scheduler_uses_worker_and_engine_code_only_in_standalone_mode() {
    let mut offenders = Vec::new();
    let mut stack = vec![workspace().join("scheduler/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(workspace().join("scheduler/src")).unwrap().to_string_lossy().into_owned();
            if STANDALONE_FILES.iter().any(|(file, _)| *file == relative) {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for (number, line) in source.lines().enumerate() {
                if line.contains("rapid_engine") || line.contains("rapid_worker") {
                    offenders.push(format!("scheduler/src/{relative}:{}: {}", number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the scheduler reaches into worker or engine code outside its standalone mode (take it from \
         rapid_fleet, or move it there):\n{}",
        offenders.join("\n")
    );
}
