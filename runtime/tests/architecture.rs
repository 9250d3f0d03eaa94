//! The crate graph's rules (docs/architecture.md), checked on every test run:
//! - `reflex-rt` builds without ONNX Runtime, ROS, tokio or the simulator, and `reflex-core`
//!   stays a vocabulary crate;
//! - only the CLI, hil-tests and benches depend on the simulator (`reflex-sim`);
//! - no module of a crate imports a module that imports it back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::repo;

/// Package names in `package`'s normal (non-dev, non-build) dependency tree, itself included.
fn tree(package: &str, features: &[&str]) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo()).args([
        "tree", "--locked", "-p", package, "-e", "normal", "--prefix", "none", "-f", "{p}",
    ]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

fn assert_none_of(package: &str, features: &[&str], forbidden: &[&str]) {
    let deps = tree(package, features);
    assert!(deps.contains(package), "{package}: {deps:?}");
    let found: Vec<_> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(
        found.is_empty(),
        "{package} (features {features:?}) must not depend on {found:?}; its tree: {deps:?}"
    );
}

/// What the RT crate must never pull in: an inference engine, a ROS middleware, an async
/// runtime, network clients, the simulator, or the crates that carry them.
const NOT_IN_RT: &[&str] = &[
    "ort",
    "ort-sys",
    "cudarc",
    "r2r",
    "ros2-client",
    "rustdds",
    "tokio",
    "mio",
    "oci-client",
    "object_store",
    "tungstenite",
    "mcap",
    "reflex-policy",
    "reflex-registry",
    "reflex-ros",
    "reflex-telemetry",
    "reflex-cloud",
    "reflex-runner",
    "reflex-sim",
];

#[test]
fn the_rt_crate_has_no_ort_ros_tokio_or_simulator() {
    assert_none_of("reflex-rt", &[], NOT_IN_RT);
    assert_none_of("reflex-core", &[], NOT_IN_RT);
    // And what it does depend on is the short list its lib.rs names.
    let deps: BTreeSet<String> = tree("reflex-rt", &[])
        .into_iter()
        .filter(|d| d.starts_with("reflex-"))
        .collect();
    assert_eq!(
        deps,
        ["reflex-core", "reflex-rt", "reflex-safety"]
            .map(String::from)
            .into(),
    );
}

#[test]
fn only_the_cli_hil_tests_and_benches_depend_on_the_simulator() {
    for (package, features) in [
        ("reflex-safety", &[][..]),
        ("reflex-core", &[]),
        ("reflex-policy", &["cuda", "tensorrt"]),
        ("reflex-registry", &[]),
        ("reflex-rt", &[]),
        ("reflex-ros", &["dds", "ros2-doc-only"]),
        ("reflex-telemetry", &[]),
        ("reflex-cloud", &[]),
        ("reflex-runner", &[]),
    ] {
        assert_none_of(package, features, &["reflex-sim"]);
    }
    // The other way round: every package that depends on the simulator, workspace-wide.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "tree",
            "--locked",
            "--workspace",
            "-e",
            "normal,dev",
            "-i",
            "reflex-sim",
            "--prefix",
            "none",
            "-f",
            "{p}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dependents: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    assert_eq!(
        dependents,
        ["reflex-benches", "reflex-cli", "reflex-hil", "reflex-sim"]
            .map(String::from)
            .into(),
    );
}

/// `crate::module` references of each module of the crate at `src` (comments left out).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let name = |p: &Path| -> String {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let rel = rel.to_string_lossy().replace('/', "::");
        rel.strip_suffix("::mod").unwrap_or(&rel).to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|p| name(p)).collect();
    let mut graph = BTreeMap::new();
    for p in &files {
        let me = name(p);
        let mut uses = BTreeSet::new();
        for line in std::fs::read_to_string(p).unwrap().lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let m: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if m != me && modules.contains(&m) && !me.starts_with(&format!("{m}::")) {
                    uses.insert(m);
                }
            }
        }
        graph.insert(me, uses);
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn find_cycle_finds_one() {
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]
            .into_iter()
            .map(|(k, v)| (k.into(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = g.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    for krate in [
        "safety",
        "models/policy",
        "models/registry",
        "runtime/core",
        "runtime/rt",
        "runtime/ros",
        "runtime/telemetry",
        "runtime/cloud",
        "runtime/runner",
        "runtime/sim",
        "runtime",
        "hil-tests",
        "benches",
    ] {
        let graph = module_graph(&repo().join(krate).join("src"));
        assert!(
            graph.len() > 1 || krate == "runtime/cloud",
            "{krate}: {graph:?}"
        );
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" -> "));
        }
    }
}
