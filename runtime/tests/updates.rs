//! The model manager end to end: the real `reflex run` binary following a channel on a real
//! registry (Debian's docker-registry on 127.0.0.1, stopped by PID): hot swap while the loop
//! runs, golden and health-window rollbacks, another I/O contract refused, a tampered blob
//! refused, and SIGKILL in every activation state leaving exactly one consistent version active.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{ort_library, repo};
use reflex_registry::oci::{self, Layout};
use reflex_registry::registry::{self, RegistryOptions};
use reflex_registry::testing::TestRegistry;
use serde_json::Value;

/// These tests measure deadline misses of a real-time loop: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Bench {
    dir: PathBuf,
    registry: TestRegistry,
    layout: Layout,
    config: PathBuf,
    store: PathBuf,
}

impl Bench {
    fn new(test: &str, health: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("reflex-updates-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let registry = TestRegistry::start(&dir);
        let layout = Layout::open_or_create(&dir.join("build")).unwrap();
        let (secret, public) = oci::keygen().unwrap();
        std::fs::write(dir.join("release.key"), secret).unwrap();
        std::fs::create_dir_all(dir.join("trusted")).unwrap();
        std::fs::write(dir.join("trusted/release.pub"), public).unwrap();
        let store = dir.join("store");
        let example = std::fs::read_to_string(repo().join("launch/reflex.example.toml")).unwrap();
        // These tests are about updates, not the E-stop circuit. The simulated robot's I/O
        // thread stamps the hardware E-stop heartbeat; on a 2-core CI host, restarting the
        // registry and pushing a package once starved it past the shipped 100 ms, the E-stop
        // latched (as it must), every tick was stopped and the new version's health check
        // rolled it back. Heartbeat staleness is proven in safety/tests and the sim fault tests.
        let heartbeat = r#"{ name = "hardware", max_age_ms = 100.0 }"#;
        assert!(
            example.contains(heartbeat),
            "the example config changed: {heartbeat}"
        );
        let example = example.replace(heartbeat, r#"{ name = "hardware", max_age_ms = 2000.0 }"#);
        let config = dir.join("reflex.toml");
        std::fs::write(
            &config,
            format!(
                "{example}\n[updates]\nchannel = \"{}\"\nstore = \"{}\"\ntrusted_keys = \"{}\"\nrobot_id = \"test-robot\"\npoll_interval_s = 0.2\nmax_backoff_s = 1.0\nhold_file = \"{}\"\n\n[updates.health]\n{health}\n",
                registry.url("reflex/demo:stable"),
                store.display(),
                dir.join("trusted").display(),
                dir.join("hold").display(),
            ),
        )
        .unwrap();
        Self {
            dir,
            registry,
            layout,
            config,
            store,
        }
    }

    /// Packs, signs and pushes the demo policy as `version` to `reflex/demo:stable`; `tweak`
    /// may change the package directory first.
    fn publish(&self, version: &str, tweak: impl FnOnce(&Path)) -> String {
        self.publish_share(version, tweak, None)
    }

    /// `publish` with a rollout percentage annotated on the index.
    fn publish_share(
        &self,
        version: &str,
        tweak: impl FnOnce(&Path),
        share: Option<f64>,
    ) -> String {
        let dir = self.dir.join("packages").join(version);
        reflex_policy::derive_package(
            &repo().join("models/demo/reflex-demo-vla"),
            &dir,
            version,
            0,
        )
        .unwrap();
        tweak(&dir);
        let package = reflex_policy::PolicyPackage::open(&dir).unwrap();
        oci::pack(&package, &self.layout, version).unwrap();
        if let Some(percent) = share {
            oci::set_rollout(&self.layout, version, percent).unwrap();
        }
        oci::sign(&self.layout, version, &self.dir.join("release.key")).unwrap();
        registry::push(
            &self.layout,
            version,
            &self.registry.url("reflex/demo:stable"),
            &RegistryOptions::default(),
        )
        .unwrap()
    }

    fn reflex(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reflex"));
        c.current_dir(repo()).env("ORT_DYLIB_PATH", ort_library());
        c
    }

    fn run(&self, seconds: f64) -> Child {
        self.reflex()
            .args([
                "run",
                "--io",
                "sim",
                "--config",
                self.config.to_str().unwrap(),
                "--duration",
            ])
            .arg(seconds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn status(&self) -> Value {
        let out = self
            .reflex()
            .args(["status", "--store", self.store.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for a run to end; its JSON summary (last stdout line) and the whole output.
fn finish(child: Child) -> (Value, String) {
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {t}")),
        t,
    )
}

fn events(summary: &Value) -> Vec<Value> {
    summary["updates"]["events"].as_array().unwrap().clone()
}

fn event<'a>(events: &'a [Value], kind: &str, version: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["kind"] == kind && e["version"] == version)
}

fn active_version(status: &Value) -> String {
    status["active"]["version"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

fn wait_for(what: &str, timeout_s: f64, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs_f64(timeout_s);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_version_is_hot_swapped_while_the_loop_runs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bench = Bench::new("swap", "window_s = 1.0");
    bench.publish("0.1.0", |_| {});
    let child = bench.run(8.0);
    // First boot installs 0.1.0; then 0.2.0 appears on the channel.
    wait_for("0.1.0 committed", 30.0, || {
        bench.store.join("activation.json").exists() && active_version(&bench.status()) == "0.1.0"
    });
    std::thread::sleep(Duration::from_millis(500));
    let v2 = bench.publish("0.2.0", |_| {});
    let (summary, log) = finish(child);
    let events = events(&summary);
    let committed = event(&events, "committed", "0.2.0").unwrap_or_else(|| panic!("{log}"));
    println!("{committed}");
    assert_eq!(committed["index_digest"], v2.as_str());
    // The new model's first action reached the loop within one chunk period (0.4 s) …
    let first = committed["first_action_ms"].as_f64().unwrap();
    assert!(first > 0.0 && first <= 400.0, "{committed}");
    // … and the loop kept its rhythm during the swap and the health window (100 ticks of
    // 10 ms): no miss the VM's host does not explain (a whole period stolen per miss), and never
    // more than two — a shared 2-core CI host without SCHED_FIFO can preempt a tick; the swap's
    // own cost on the RT thread is measured in the benches (swap pause ≤ p99.9 tick).
    let misses = committed["misses_during_swap"].as_u64().unwrap();
    let stolen_ms = committed["host_steal_during_swap_ms"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        misses <= 2 || stolen_ms >= misses as f64 * 10.0,
        "{misses} deadline misses during the swap, {stolen_ms:.0} ms stolen by the host: {committed}"
    );
    assert_eq!(summary["collisions"], 0);
    let status = bench.status();
    assert_eq!(active_version(&status), "0.2.0", "{status}");
    assert_eq!(status["previous"][0]["version"], "0.1.0", "{status}");
    assert!(status["pending"].is_null());
}

#[test]
fn bad_versions_are_refused_or_rolled_back_and_the_old_one_keeps_running() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The health window fails when an inference takes more than 0.001 ms (always).
    let bench = Bench::new("rollback", "window_s = 1.0\nmax_inference_ms = 0.001");
    bench.publish("0.1.0", |_| {});
    let child = bench.run(18.0);
    wait_for("0.1.0 committed", 30.0, || {
        bench.store.join("activation.json").exists() && active_version(&bench.status()) == "0.1.0"
    });
    // 0.2.0: its golden pairs no longer match its model.
    bench.publish("0.2.0", |dir| {
        let golden = dir.join("golden.json");
        let mut pairs: Value = serde_json::from_slice(&std::fs::read(&golden).unwrap()).unwrap();
        let x = pairs[0]["outputs"]["actions"][0].as_f64().unwrap();
        pairs[0]["outputs"]["actions"][0] = (x + 1.0).into();
        std::fs::write(&golden, serde_json::to_vec(&pairs).unwrap()).unwrap();
        let policy = dir.join("policy.json");
        let mut p: Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
        p["golden"]["sha256"] = reflex_policy::sha256_file(&golden).unwrap().into();
        std::fs::write(&policy, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    });
    wait_for("0.2.0 rolled back", 20.0, || {
        bench.status()["last_rollback"]["version"] == "0.2.0"
    });
    // 0.3.0: a good model, but this robot's health window fails it.
    bench.publish("0.3.0", |_| {});
    wait_for("0.3.0 rolled back", 20.0, || {
        bench.status()["last_rollback"]["version"] == "0.3.0"
    });
    // 0.3.5: the same model, but its actions are meant 25 per second (over 0.8 s): the running
    // loop times them at 50 Hz, so taking it would run every action at twice its speed. Its
    // I/O contract differs: refused at `downloaded`, before a session is made from it.
    bench.publish("0.3.5", |dir| {
        let policy = dir.join("policy.json");
        let mut p: Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
        assert_eq!(p["control_rate_hz"], 50.0, "the demo policy changed");
        p["control_rate_hz"] = 25.0.into();
        p["chunk_horizon_s"] = 0.8.into();
        std::fs::write(&policy, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    });
    wait_for("0.3.5 rolled back", 20.0, || {
        bench.status()["last_rollback"]["version"] == "0.3.5"
    });
    // 0.4.0: its model blob is corrupted in the registry's storage.
    let model_hex = {
        let dir = bench.dir.join("packages/0.4.0-src");
        reflex_policy::derive_package(
            &repo().join("models/demo/reflex-demo-vla"),
            &dir,
            "0.4.0",
            1024,
        )
        .unwrap();
        reflex_policy::sha256_file(&dir.join("model.onnx")).unwrap()
    };
    // An operator holds updates while the blob is corrupted, so the robot cannot see 0.4.0
    // before the damage.
    let hold = bench.dir.join("hold");
    std::fs::write(&hold, "busy").unwrap();
    let v4 = bench.publish("0.4.0", |dir| {
        reflex_policy::derive_package(
            &repo().join("models/demo/reflex-demo-vla"),
            dir,
            "0.4.0",
            1024,
        )
        .unwrap();
    });
    let data = bench
        .registry
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&model_hex[..2])
        .join(&model_hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    // A few polls (0.2 s each) see 0.4.0 and defer it.
    std::thread::sleep(Duration::from_millis(800));
    std::fs::remove_file(&hold).unwrap();
    let (summary, log) = finish(child);
    let events = events(&summary);
    println!("{events:#?}");
    let golden = event(&events, "rolled_back", "0.2.0").unwrap_or_else(|| panic!("{log}"));
    assert!(
        golden["detail"].as_str().unwrap().contains("golden"),
        "{golden}"
    );
    let health = event(&events, "rolled_back", "0.3.0").unwrap_or_else(|| panic!("{log}"));
    assert!(
        health["detail"]
            .as_str()
            .unwrap()
            .contains("health: inference took"),
        "{health}"
    );
    let contract = event(&events, "rolled_back", "0.3.5").unwrap_or_else(|| panic!("{log}"));
    let detail = contract["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("at downloaded")
            && detail.contains("I/O contract differs")
            && detail.contains("`control_rate_hz`"),
        "{contract}"
    );
    assert!(
        event(&events, "held", "").is_some_and(|e| e["index_digest"] == v4.as_str()),
        "{log}"
    );
    let tampered = events
        .iter()
        .find(|e| e["kind"] == "refused" && e["index_digest"] == v4.as_str())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        tampered["detail"].as_str().unwrap().contains(&model_hex),
        "{tampered}"
    );
    // 0.1.0 drove the whole time and is still the one active.
    let status = bench.status();
    assert_eq!(active_version(&status), "0.1.0", "{status}");
    assert_eq!(summary["collisions"], 0);
    assert!(
        summary["chunks_merged"].as_u64().unwrap() > 100,
        "{summary}"
    );
}

#[test]
fn sigkill_in_every_activation_state_leaves_exactly_one_consistent_version() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bench = Bench::new("sigkill", "window_s = 0.5");
    bench.publish("1.0.0", |_| {});
    let (summary, log) = finish(bench.run(1.5));
    assert!(
        summary["updates"]["events"].as_array().unwrap().is_empty(),
        "{log}"
    );
    assert_eq!(active_version(&bench.status()), "1.0.0");
    let mut expected = "1.0.0".to_string();
    for (i, step) in [
        "downloaded",
        "verified",
        "prepared",
        "validated",
        "swapped",
        "health",
        "committed",
    ]
    .into_iter()
    .enumerate()
    {
        let version = format!("1.0.{}", i + 1);
        bench.publish(&version, |_| {});
        let mut child = bench
            .reflex()
            .args([
                "run",
                "--io",
                "sim",
                "--config",
                bench.config.to_str().unwrap(),
            ])
            .env("REFLEX_TEST_PAUSE_AT", step)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let want = format!("paused at {step}");
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(&want) => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!("{version}: never paused at {step}: {seen:#?}"),
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if step == "committed" {
            expected = version.clone();
        }
        let status = bench.status();
        assert_eq!(
            active_version(&status),
            expected,
            "killed at {step}: {status}"
        );
        assert!(status["pending"].is_null(), "killed at {step}: {status}");
        // The active package is complete: its files hash to policy.json's digests.
        let dir = PathBuf::from(status["active"]["dir"].as_str().unwrap());
        let package = reflex_policy::PolicyPackage::open(&dir).unwrap();
        assert_eq!(package.verify_files().unwrap(), 2);
        assert_eq!(package.manifest.version, expected);
    }
}

#[test]
fn the_current_policy_keeps_running_while_the_registry_is_unreachable() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bench = Bench::new("offline", "window_s = 0.5");
    bench.publish("0.1.0", |_| {});
    let child = bench.run(9.0);
    wait_for("0.1.0 committed", 30.0, || {
        bench.store.join("activation.json").exists() && active_version(&bench.status()) == "0.1.0"
    });
    bench.registry.kill();
    std::thread::sleep(Duration::from_secs(2));
    // Back, with a new version on the channel: the robot notices after its backoff (≤ 1 s).
    bench.registry = bench.registry.restart();
    bench.publish("0.2.0", |_| {});
    let (summary, log) = finish(child);
    let events = events(&summary);
    let offline = events
        .iter()
        .find(|e| e["kind"] == "unreachable")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        offline["detail"]
            .as_str()
            .unwrap()
            .contains("the current policy keeps running"),
        "{offline}"
    );
    assert!(event(&events, "committed", "0.2.0").is_some(), "{log}");
    // The loop drove on the whole time: chunks kept arriving, nothing was hit.
    assert_eq!(summary["collisions"], 0);
    assert_eq!(summary["watchdog_trips"], 0, "{summary}");
    assert!(
        summary["chunks_merged"].as_u64().unwrap() > 100,
        "{summary}"
    );
}

/// A release engineer's path with the CLI alone: keygen → pack → push → sign in the registry →
/// verify → pull on the robot (unsigned or wrongly signed refused).
#[test]
fn the_cli_publishes_signs_verifies_and_pulls_through_a_registry() {
    let dir = std::env::temp_dir().join(format!("reflex-updates-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("trusted")).unwrap();
    let registry = TestRegistry::start(&dir);
    let reflex = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let layout = format!("oci-layout:{}:0.1.0", d("build"));
    let url = registry.url("reflex/demo:stable");
    for args in [
        vec!["keygen", "--out", &d("release")],
        vec!["pack", "models/demo/reflex-demo-vla", "--out", &layout],
        vec!["push", &layout, &url],
    ] {
        let (ok, t) = reflex(&args);
        assert!(ok, "{args:?}: {t}");
    }
    std::fs::copy(d("release.pub"), dir.join("trusted/release.pub")).unwrap();
    // Unsigned in the registry: refused.
    let pull = |store: &str| {
        reflex(&[
            "pull",
            &url,
            "--store",
            &d(store),
            "--trusted-keys",
            &d("trusted"),
        ])
    };
    let (ok, t) = pull("store-a");
    assert!(!ok && t.contains("is unsigned"), "{t}");
    // Signed in place, verified, pulled.
    let (ok, t) = reflex(&["sign", &url, "--key", &d("release.key")]);
    assert!(ok && t.contains("signed"), "{t}");
    let (ok, t) = reflex(&["verify", &url, "--trusted-keys", &d("trusted")]);
    assert!(ok && t.contains("signed by key"), "{t}");
    let (ok, t) = pull("store-b");
    assert!(
        ok && t.contains("signature: ok") && t.contains("reflex-demo-vla 0.1.0"),
        "{t}"
    );
    // Another key only: refused.
    let (ok, t) = reflex(&["keygen", "--out", &d("other")]);
    assert!(ok, "{t}");
    std::fs::create_dir_all(dir.join("other-trusted")).unwrap();
    std::fs::copy(d("other.pub"), dir.join("other-trusted/other.pub")).unwrap();
    let (ok, t) = reflex(&["verify", &url, "--trusted-keys", &d("other-trusted")]);
    assert!(!ok && t.contains("not signed by any"), "{t}");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Staged rollout by robot-id hash: a version annotated for a share that leaves this robot out
/// is skipped (and stays skipped); raising the share past the robot's bucket brings it in.
#[test]
fn a_percentage_rollout_takes_only_the_robots_inside_the_share() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bench = Bench::new("rollout", "window_s = 0.5");
    let bucket = registry::robot_bucket("test-robot");
    bench.publish("0.1.0", |_| {});
    let child = bench.run(7.0);
    wait_for("0.1.0 committed", 30.0, || {
        bench.store.join("activation.json").exists() && active_version(&bench.status()) == "0.1.0"
    });
    let outside = bench.publish_share("0.2.0", |_| {}, Some((bucket - 0.01).max(0.0)));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(active_version(&bench.status()), "0.1.0");
    bench.publish_share("0.2.0-wider", |_| {}, Some((bucket + 0.01).min(100.0)));
    let (summary, log) = finish(child);
    let events = events(&summary);
    let skipped = events
        .iter()
        .filter(|e| e["kind"] == "skipped")
        .collect::<Vec<_>>();
    assert_eq!(skipped.len(), 1, "skipped once, not every poll: {log}");
    assert_eq!(skipped[0]["index_digest"], outside.as_str());
    assert!(
        event(&events, "committed", "0.2.0-wider").is_some(),
        "{log}"
    );
    assert_eq!(active_version(&bench.status()), "0.2.0-wider");
}
