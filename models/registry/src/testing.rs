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
    tls: Option<Tls>,
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
        Self::start_with(dir, None)
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1 signed by a fresh test
    /// CA (`<dir>/tls/ca.pem`), requiring HTTP basic auth for `user`:`password` (htpasswd,
    /// bcrypt). Uses the `openssl` and `python3` command-line tools.
    pub fn start_tls(dir: &Path, user: &str, password: &str) -> Self {
        let tls = Tls::make(&dir.join("tls"), user, password);
        Self::start_with(dir, Some(tls))
    }

    /// Starts a registry (plain HTTP, loopback) that requires a bearer token (distribution's
    /// token auth: an RS256 JWT whose `x5c` certificate chains to a test CA). Returns the
    /// registry and a token granting pull and push on `repository`, made with `openssl` and
    /// `python3`.
    pub fn start_token(dir: &Path, repository: &str) -> (Self, String) {
        let tls = Tls::make(&dir.join("tls"), "unused", "unused");
        let token = tls.token(repository);
        let mut registry = Self::start_with(dir, None);
        // Restart with token auth (the config is written by spawn).
        registry.kill();
        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:9/token\n    service: reflex-test\n    issuer: reflex-test-issuer\n    rootcertbundle: {}/ca.pem\n",
            tls.dir.display()
        );
        let registry = Self::spawn_with(dir, registry.port, None, &auth);
        (registry, token)
    }

    /// The test CA (PEM) of a TLS registry.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.dir.join("ca.pem"))
    }

    /// Like [`TestRegistry::start`], with distribution's JSON request log (one line per
    /// response: method, URI, status, bytes written, user agent, time) in
    /// `<dir>/registry.log`, for benchmarks that count what a fleet asks of the registry.
    pub fn start_logged(dir: &Path) -> Self {
        Self::spawn_logged(dir, free_port(), None, "", true)
    }

    /// The request log of [`TestRegistry::start_logged`].
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    fn start_with(dir: &Path, tls: Option<Tls>) -> Self {
        Self::spawn(dir, free_port(), tls)
    }

    fn spawn(dir: &Path, port: u16, tls: Option<Tls>) -> Self {
        Self::spawn_with(dir, port, tls, "")
    }

    fn spawn_with(dir: &Path, port: u16, tls: Option<Tls>, extra: &str) -> Self {
        Self::spawn_logged(dir, port, tls, extra, false)
    }

    fn spawn_logged(dir: &Path, port: u16, tls: Option<Tls>, extra: &str, logged: bool) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} missing: `bash scripts/test` installs Debian's docker-registry (apt-get install docker-registry)"
        );
        let storage = dir.join("registry-storage");
        std::fs::create_dir_all(&storage).expect("registry storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: {}\n  formatter: json\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{}{extra}",
                if logged { "info" } else { "error" },
                storage.display(),
                tls.as_ref().map_or(String::new(), |t| format!(
                    "  tls:\n    certificate: {0}/server.pem\n    key: {0}/server.key\nauth:\n  htpasswd:\n    realm: reflex-test\n    path: {0}/htpasswd\n",
                    t.dir.display()
                ))
            ),
        )
        .expect("registry config");
        let (out, err) = if logged {
            let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
            let log2 = log.try_clone().expect("registry log");
            (Stdio::from(log), Stdio::from(log2))
        } else {
            (Stdio::null(), Stdio::null())
        };
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start docker-registry");
        let registry = Self {
            child,
            dir: dir.to_path_buf(),
            tls,
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
        Self::spawn(&self.dir.clone(), self.port, self.tls.clone())
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test CA, a server certificate for 127.0.0.1 and an htpasswd file.
#[derive(Debug, Clone)]
struct Tls {
    dir: PathBuf,
}

impl Tls {
    fn make(dir: &Path, user: &str, password: &str) -> Self {
        std::fs::create_dir_all(dir).expect("tls dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (Debian package openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=reflex-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        let out = Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                password,
            ])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            hash.starts_with("$2"),
            "no bcrypt from python3's crypt: {hash}"
        );
        std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// An RS256 JWT signed by the CA key, with the CA certificate as its `x5c` chain.
    fn token(&self, repository: &str) -> String {
        let script = r#"
import base64, json, subprocess, sys, time
ca_dir, repo = sys.argv[1], sys.argv[2]
def b64url(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
der = subprocess.run(["openssl", "x509", "-in", ca_dir + "/ca.pem", "-outform", "DER"], check=True, capture_output=True).stdout
header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
now = int(time.time())
claims = {"iss": "reflex-test-issuer", "sub": "robot", "aud": "reflex-test", "exp": now + 3600, "nbf": now - 60, "iat": now, "jti": "reflex-test-" + str(now),
          "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]}
signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", ca_dir + "/ca.key"], input=signing_input.encode(), check=True, capture_output=True).stdout
print(signing_input + "." + b64url(sig))
"#;
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&self.dir)
            .arg(repository)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
