//! Upload of flight recordings to S3-compatible storage: a moto server (PyPI `moto[server]`)
//! started here on 127.0.0.1 with credential and SigV4 signature checks on, stopped by PID.
//! Wrong or missing credentials keep every recording queued; right ones upload each one once
//! (content-checked); a recording already in the bucket (an upload whose local removal a crash
//! prevented) is not uploaded again.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(common::repo().join(".venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Four unauthenticated set-up calls (IAM user, policy, key, bucket), then every
            // request must carry a known key and a valid signature.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server missing: run `bash scripts/test` (installs moto[server] into .venv)",
            );
        let endpoint = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3(args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::repo().join(".venv/bin/python"))
        .arg(common::repo().join("runtime/tests/upload/s3.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reflex(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reflex"));
    c.current_dir(common::repo())
        .args(args)
        .env("ORT_DYLIB_PATH", common::ort_library())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn queued(dir: &Path) -> Vec<PathBuf> {
    reflex_telemetry::upload::queued(&dir.join("rec/queue"))
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn recordings_reach_s3_once_and_stay_queued_until_they_do() {
    let moto = Moto::start();
    let keys = s3(&["setup", &moto.endpoint, "recordings"]);
    let (key, secret) = (
        keys["key"].as_str().unwrap(),
        keys["secret"].as_str().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("reflex-upload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("reflex.toml");
    let base = std::fs::read_to_string(common::repo().join("launch/reflex.example.toml")).unwrap();
    std::fs::write(
        &config,
        format!(
            "{base}\n[recorder]\ndir = {:?}\nrobot_id = \"r1\"\ntriggers = [\"slowdown_zone\"]\n[recorder.upload]\nbucket = \"recordings\"\nendpoint = {:?}\n",
            dir.join("rec").display().to_string(),
            moto.endpoint
        ),
    )
    .unwrap();
    let c = config.display().to_string();
    let (code, _, err) = reflex(&["sim", "--config", &c, "--duration", "20", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let files = queued(&dir);
    assert!(files.len() >= 2, "{files:?} {err}");
    let sums: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                sha256(f),
            )
        })
        .collect();
    let keep = dir.join("copy.mcap");
    std::fs::copy(&files[0], &keep).unwrap();

    // No credentials: refused before any request, naming the variables.
    let (code, _, err) = reflex(&["upload", "--config", &c], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    // A wrong secret: the server checks the signature (403); nothing leaves the queue.
    let (code, _, err) = reflex(
        &["upload", "--config", &c],
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("refused the credentials") && err.contains("403"),
        "{err}"
    );
    assert_eq!(queued(&dir).len(), files.len());
    assert!(
        s3(&["list", &moto.endpoint, "recordings", key, secret])["objects"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    // Right credentials: every recording uploaded, content-identical, queue empty.
    let good = [
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ];
    let (code, out, err) = reflex(&["upload", "--config", &c], &good);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["uploaded"].as_array().unwrap().len(),
        files.len(),
        "{report}"
    );
    assert!(queued(&dir).is_empty());
    let listed = s3(&["list", &moto.endpoint, "recordings", key, secret]);
    let objects = listed["objects"].as_object().unwrap();
    assert_eq!(objects.len(), files.len(), "{listed}");
    for (name, sum) in &sums {
        let o = &objects[&format!("recordings/r1/{name}")];
        assert_eq!(o["sha256"], sum.as_str(), "{listed}");
    }
    // A crash after an upload but before the local removal: the file is back in the queue.
    // It is not uploaded a second time (the object stays as it was), and leaves the queue.
    std::fs::rename(&keep, &files[0]).unwrap();
    let (code, out, err) = reflex(&["upload", "--config", &c], &good);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["uploaded"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        report["already_uploaded"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert!(queued(&dir).is_empty());
    let again = s3(&["list", &moto.endpoint, "recordings", key, secret]);
    assert_eq!(again, listed, "an object was rewritten");
    drop(moto);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reflex_run_uploads_its_recordings_while_driving() {
    use std::io::BufRead;
    let moto = Moto::start();
    let keys = s3(&["setup", &moto.endpoint, "fleet"]);
    let (key, secret) = (
        keys["key"].as_str().unwrap(),
        keys["secret"].as_str().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("reflex-upload-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("reflex.toml");
    let base = std::fs::read_to_string(common::repo().join("launch/reflex.example.toml")).unwrap();
    std::fs::write(
        &config,
        format!(
            "{base}\n[recorder]\ndir = {:?}\nrobot_id = \"r2\"\nwindow_s = 2.0\npost_s = 0.5\ntriggers = [\"operator_mark\"]\n[recorder.upload]\nbucket = \"fleet\"\nendpoint = {:?}\n",
            dir.join("rec").display().to_string(),
            moto.endpoint
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reflex"))
        .current_dir(common::repo())
        .args([
            "run",
            "--io",
            "sim",
            "--policy",
            "models/demo/reflex-demo-vla",
            "--duration",
            "8",
        ])
        .arg("--config")
        .arg(&config)
        .env("ORT_DYLIB_PATH", common::ort_library())
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("flight recorder:") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:#?}");
    let listed = s3(&["list", &moto.endpoint, "fleet", key, secret]);
    let objects = listed["objects"].as_object().unwrap();
    assert_eq!(objects.len(), 1, "{listed} {rest:#?}");
    assert!(
        objects
            .keys()
            .all(|k| k.starts_with("recordings/r2/r2-") && k.ends_with("-operator_mark.mcap"))
    );
    assert!(
        queued(&dir).is_empty(),
        "uploaded recordings leave the queue"
    );
    drop(moto);
    std::fs::remove_dir_all(&dir).unwrap();
}
