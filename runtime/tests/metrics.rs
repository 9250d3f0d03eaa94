//! The Prometheus endpoint, scraped while `reflex sim --realtime` runs: the counters move
//! between scrapes, every metric the issue names is there, and PyPI `prometheus-client`'s
//! parser accepts the exposition.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("{series} missing:\n{body}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_scraped_while_the_simulator_runs() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .current_dir(common::repo())
        .args([
            "sim",
            "--realtime",
            "--duration",
            "6",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .env("ORT_DYLIB_PATH", common::ort_library())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("reflex sim ended before serving metrics")
            .unwrap();
        if let Some(rest) = line.strip_prefix("reflex: metrics at http://") {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_millis(1500));
    let (status, first) = get(&addr, "/metrics");
    assert_eq!(status, 200, "{first}");
    std::thread::sleep(Duration::from_millis(1000));
    let (_, second) = get(&addr, "/metrics");
    // The loop runs at 100 Hz: about 100 ticks between the scrapes.
    let dt = value(&second, "reflex_ticks_total") - value(&first, "reflex_ticks_total");
    assert!((50.0..=200.0).contains(&dt), "{dt} ticks in 1 s");
    assert!(
        value(&second, "reflex_tick_duration_seconds_count")
            >= value(&second, "reflex_ticks_total") - 1.0
    );
    assert!(value(&second, "reflex_tick_lateness_seconds_count") > 0.0);
    assert!(value(&second, "reflex_inference_duration_seconds_count") > 0.0);
    assert!(value(&second, "reflex_chunks_merged_total") > 0.0);
    assert_eq!(
        value(&second, "reflex_estop_latched"),
        0.0,
        "started and reset"
    );
    let age = value(&second, "reflex_action_age_seconds");
    assert!((0.0..0.3).contains(&age), "action age {age}");
    for series in [
        "reflex_deadline_misses_total",
        "reflex_safety_reasons_total{reason=\"protective_zone\",action=\"stop\"}",
        "reflex_safety_reasons_total{reason=\"estop_latched\",action=\"estop\"}",
        "reflex_registry_link_up",
        "reflex_cloud_link_up",
        "reflex_recorder_queue_files",
        "reflex_watchdog_trips_total",
    ] {
        value(&second, series);
    }
    let digest =
        reflex_policy::PolicyPackage::open(&common::repo().join("models/demo/reflex-demo-vla"))
            .unwrap()
            .model_digest()
            .to_string();
    assert!(
        second.contains(&format!("digest=\"{digest}\"")),
        "model digest {digest} missing:\n{second}"
    );
    assert_eq!(get(&addr, "/").0, 404);
    // A real Prometheus parser accepts the exposition.
    let mut py = Command::new(common::repo().join(".venv/bin/python"))
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
             fams = list(p(sys.stdin.read()))\nprint(len(fams), sum(len(f.samples) for f in fams))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin
        .take()
        .unwrap()
        .write_all(second.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus-client refused the exposition"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let families: usize = text.split_whitespace().next().unwrap().parse().unwrap();
    assert!(families >= 20, "{text}");
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "reflex sim failed");
    assert!(t0.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_remote_metrics_bind_is_refused_without_consent() {
    let out = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .current_dir(common::repo())
        .args(["sim", "--duration", "1", "--metrics-bind", "0.0.0.0:9464"])
        .env("ORT_DYLIB_PATH", common::ort_library())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("telemetry.metrics_bind") && err.contains("metrics_allow_remote"),
        "{err}"
    );
}
