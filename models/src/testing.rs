//! Test support shared by the crates' integration tests and the benchmarks: a real OCI
//! registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1 with its own storage,
//! stopped by PID. Not part of the runtime.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where `bash scripts/test` installs it (`apt-get install docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A registry process, killed by PID when dropped.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// The registry's storage root (tests corrupt blobs under it).
    pub storage: PathBuf,
}

impl TestRegistry {
    /// Starts a registry on a free loopback port with storage under `dir`.
    ///
    /// # Panics
    /// When the binary is missing or the registry does not listen within 5 s (a test set-up
    /// failure, said plainly).
    pub fn start(dir: &Path) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} missing: `bash scripts/test` installs Debian's docker-registry (apt-get install docker-registry)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        Self::spawn(dir, port)
    }

    fn spawn(dir: &Path, port: u16) -> Self {
        let storage = dir.join("registry-storage");
        std::fs::create_dir_all(&storage).expect("registry storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .expect("registry config");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Self {
            child,
            dir: dir.to_path_buf(),
            port,
            storage,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on 127.0.0.1:{port} within 5 s");
    }

    /// `oci://127.0.0.1:<port>/<repo_tag>`.
    pub fn url(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// Kills the registry process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) -> Self {
        self.kill();
        Self::spawn(&self.dir.clone(), self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}
