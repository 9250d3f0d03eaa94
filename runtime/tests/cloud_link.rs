//! The cloud policy link against an openpi-protocol server (`tests/cloud/server.py`: PyPI
//! `websockets` + `openpi_client.msgpack_numpy`, TLS from a test CA, an API key) started here
//! on 127.0.0.1 and stopped by PID, with `reflex sim --realtime` as the robot: cloud actions
//! drive through the arbiter and safety; a wrong key, slow answers, malformed frames, a flood
//! and a dropped link never reach the actuators and never slow the loop.
//!
//! The tests take turns (`ONE_AT_A_TIME`): each runs a real-time loop, and three of them plus
//! their servers on a 2-core CI host would measure each other, not the cloud link. The loop's
//! timing is asserted by its p95 lateness, its p99 tick cost and the watchdog: a stall caused
//! by the link comes back with the link's traffic (a request every ~10 ticks, a malformed
//! frame every ~16), which lifts p95 lateness or the tick cost. Late ticks from the host are
//! reported, not failed: on this CI VM `cyclictest -p 80 -i 10000` alone sees the host stall
//! 4–10 ms now and then (10,238 µs max in the 45 s these tests ran, while Reflex's loop saw
//! 143 µs; a fresh-clone run on 2026-11-23 saw ≥ 4 such stalls in one 4 s run, p99 lateness
//! 4.5 ms with tick p99 109 µs), so deadline misses are measured where they belong, side by
//! side with cyclictest in the benches/ harness.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop kept its rhythm: p95 lateness and p99 tick cost under a tenth of the 10 ms period
/// and no watchdog trip (three misses in a row); the host's few late ticks are printed.
fn assert_on_time(v: &serde_json::Value, what: &str) {
    let p95 = v["lateness_p95_us"].as_f64().unwrap();
    let tick_p99 = v["tick_p99_us"].as_f64().unwrap();
    assert!(p95 < 1000.0, "{what}: lateness p95 {p95} µs: {v}");
    assert!(tick_p99 < 1000.0, "{what}: tick p99 {tick_p99} µs: {v}");
    assert_eq!(v["watchdog_trips"], 0, "{what}: {v}");
    println!(
        "{what}: lateness p50 {} µs, p95 {p95} µs, p99 {} µs, max {} µs, tick p99 {tick_p99} µs, \
         deadline misses {}",
        v["lateness_p50_us"], v["lateness_p99_us"], v["lateness_max_us"], v["deadline_misses"]
    );
}

struct Server {
    child: Child,
    port: u16,
    ca: String,
}

impl Server {
    fn start(mode: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("reflex-cloud-{mode}-{}", std::process::id()));
        let mut child = Command::new(common::repo().join(".venv/bin/python"))
            .arg(common::repo().join("runtime/tests/cloud/server.py"))
            .args([
                "--dir",
                &dir.display().to_string(),
                "--api-key",
                "test-key",
                "--mode",
                mode,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("READY"), "{line}");
        let port = parts.next().unwrap().parse().unwrap();
        let ca = parts.next().unwrap().to_string();
        Server { child, port, ca }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `reflex sim --realtime` for `seconds` with the cloud link; the JSON summary.
fn run(server: &Server, key: &str, seconds: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .current_dir(common::repo())
        .args(["sim", "--realtime", "--json", "--duration", seconds])
        .args(["--cloud-url", &format!("wss://127.0.0.1:{}", server.port)])
        .args(["--cloud-ca", &server.ca])
        .env("ORT_DYLIB_PATH", common::ort_library())
        .env("REFLEX_CLOUD_API_KEY", key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v["cloud"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: {v}"))
}

#[test]
fn cloud_actions_drive_through_arbitration_and_safety() {
    let _turn = turn();
    let server = Server::start("normal");
    let v = run(&server, "test-key", "5");
    assert!(n(&v, "commands") >= 30, "{v}");
    assert!(v["cloud_ticks"].as_u64().unwrap() >= 350, "{v}");
    assert_on_time(&v, "normal");
    assert_eq!(v["collisions"], 0, "{v}");
    // Driven at the cloud's 0.3 m/s (the demo policy alone heads elsewhere, faster).
    let x = v["final_pose"][0].as_f64().unwrap();
    assert!((1.0..=1.6).contains(&x), "{v}");
    // A wrong API key: refused (401), nothing from the cloud; the local policy drives.
    let v = run(&server, "wrong-key", "3");
    assert!(
        n(&v, "connect_failures") >= 1 && n(&v, "commands") == 0,
        "{v}"
    );
    assert_eq!(v["cloud_ticks"], 0, "{v}");
}

#[test]
fn late_malformed_and_flooding_answers_never_drive() {
    let _turn = turn();
    let server = Server::start("slow");
    let v = run(&server, "test-key", "4");
    assert!(n(&v, "dropped_late") >= 3 && n(&v, "commands") == 0, "{v}");
    assert_eq!(v["cloud_ticks"], 0, "{v}");
    drop(server);

    let server = Server::start("malformed");
    let v = run(&server, "test-key", "4");
    assert!(n(&v, "dropped_malformed") >= 10, "{v}");
    assert!(n(&v, "server_errors") >= 3, "{v}");
    assert!(n(&v, "commands") >= 3, "the good answers still count: {v}");
    assert_on_time(&v, "malformed");
    drop(server);

    let server = Server::start("flood");
    let v = run(&server, "test-key", "4");
    assert!(n(&v, "dropped_unsolicited") >= 1000, "{v}");
    assert!(n(&v, "commands") >= 20, "{v}");
    assert_on_time(&v, "flood");
    println!(
        "flood: {} unsolicited frames dropped",
        n(&v, "dropped_unsolicited")
    );
}

#[test]
fn a_dropped_link_is_reconnected() {
    let _turn = turn();
    let server = Server::start("drop");
    let v = run(&server, "test-key", "6");
    assert!(n(&v, "connects") >= 2, "{v}");
    assert!(n(&v, "commands") >= 25, "{v}");
    assert_on_time(&v, "dropped link");
}
