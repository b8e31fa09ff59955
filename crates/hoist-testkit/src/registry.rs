use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TestCa;
use crate::token_issuer::TokenIssuer;
use crate::tools::require;

/// A real distribution registry on `127.0.0.1:<free port>`, killed on drop.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    tls: bool,
}

/// How to configure a [`TestRegistry`]: anonymous plain HTTP unless told.
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    basic: Option<(String, String)>,
    token: Option<TokenAuth>,
    tls: Option<(PathBuf, PathBuf)>,
    client_ca: Option<PathBuf>,
}

#[derive(Debug)]
struct TokenAuth {
    realm: String,
    service: String,
    issuer: String,
    bundle: PathBuf,
}

impl RegistryBuilder {
    /// htpasswd authentication with one user (bcrypt, as distribution wants).
    #[must_use]
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Token authentication against `issuer` (which must outlive the registry's start).
    #[must_use]
    pub fn token_auth(mut self, issuer: &TokenIssuer) -> Self {
        self.token = Some(TokenAuth {
            realm: issuer.realm(),
            service: issuer.service().to_owned(),
            issuer: issuer.issuer().to_owned(),
            bundle: issuer.root_cert_bundle(),
        });
        self
    }

    /// Token authentication against `issuer`, but with the challenge naming
    /// `realm` instead: to test what a client does with a realm it must not trust.
    #[must_use]
    pub fn token_auth_with_realm(mut self, issuer: &TokenIssuer, realm: &str) -> Self {
        self = self.token_auth(issuer);
        if let Some(token) = &mut self.token {
            realm.clone_into(&mut token.realm);
        }
        self
    }

    /// Serve HTTPS with `ca`'s server certificate (for 127.0.0.1 and localhost).
    #[must_use]
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.server_cert(), ca.server_key()));
        self
    }

    /// Serve HTTPS and require a client certificate signed by `ca`.
    #[must_use]
    pub fn require_client_cert(mut self, ca: &TestCa) -> Self {
        self.client_ca = Some(ca.ca_cert());
        self.tls(ca)
    }

    pub fn start(self) -> TestRegistry {
        TestRegistry::start_with(&self)
    }

    fn extra_yaml(&self, dir: &Path) -> (String, String) {
        let mut top = String::new();
        let mut http = String::new();
        if let Some((user, password)) = &self.basic {
            let hash = bcrypt::hash(password, 4).expect("bcrypt the test password");
            let path = dir.join("htpasswd");
            std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
            let _ = write!(top, "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n", path.display());
        }
        if let Some(token) = &self.token {
            let _ = write!(
                top,
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                token.service,
                token.issuer,
                token.bundle.display()
            );
        }
        if let Some((cert, key)) = &self.tls {
            let _ = write!(http, "  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
            if let Some(ca) = &self.client_ca {
                let _ = write!(http, "    clientcas:\n      - {}\n", ca.display());
            }
        }
        (top, http)
    }
}

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

impl TestRegistry {
    /// Starts an anonymous registry over plain HTTP.
    pub fn start() -> Self {
        Self::start_with(&RegistryBuilder::default())
    }

    /// A registry with authentication or TLS: `TestRegistry::builder().basic_auth("u", "p").start()`.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    fn start_with(builder: &RegistryBuilder) -> Self {
        require("docker-registry", "docker-registry");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir for the registry");
            let port = free_port();
            let config = dir.path().join("config.yml");
            let (top, http) = builder.extra_yaml(dir.path());
            // `http` continues the http section that config_yaml ends with; `top` adds sections.
            let yaml = format!("{}{http}{top}", config_yaml(&dir.path().join("storage"), port));
            std::fs::write(&config, yaml).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            let mut registry = Self { child, port, dir, tls: builder.tls.is_some() };
            if registry.wait_ready() {
                return registry;
            }
            last_log = std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default();
            // Another process may have taken the port between probe and bind: try another.
        }
        panic!("docker-registry did not start after {START_ATTEMPTS} attempts; its log:\n{last_log}");
    }

    /// `127.0.0.1:<port>`: the registry part of a reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `localhost:<port>`: the same registry by name (its certificate names both).
    pub fn localhost(&self) -> String {
        format!("localhost:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the registry keeps its blobs and manifests.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// A plain `GET` on a path of the registry; returns status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_request(self.port, "GET", path, None).expect("registry GET")
    }

    /// A plain `PUT` of `body` with `content_type` (a hand-written manifest,
    /// say); returns status and body.
    pub fn put(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
        http_request(self.port, "PUT", path, Some((content_type, body))).expect("registry PUT")
    }

    /// Upload sessions the registry holds open, in every repository: each is
    /// a directory under the repository's `_uploads` with its `startedat`
    /// file (distribution 2.8 leaves the directory of a cancelled session,
    /// with only its hash state, behind).
    pub fn open_uploads(&self) -> usize {
        fn walk(dir: &Path, found: &mut usize) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                if path.file_name().is_some_and(|n| n == "_uploads") {
                    let sessions = std::fs::read_dir(&path).into_iter().flatten().flatten();
                    *found += sessions.filter(|s| s.path().join("startedat").exists()).count();
                } else {
                    walk(&path, found);
                }
            }
        }
        let mut found = 0;
        walk(&self.storage().join("docker/registry/v2/repositories"), &mut found);
        found
    }

    /// Blobs the registry stores (manifests included), in all repositories.
    pub fn blob_count(&self) -> usize {
        let root = self.storage().join("docker/registry/v2/blobs/sha256");
        let Ok(prefixes) = std::fs::read_dir(root) else { return 0 };
        prefixes.flatten().map(|p| std::fs::read_dir(p.path()).map_or(0, Iterator::count)).sum()
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.tls {
                // No TLS client here: a listening port means distribution is serving.
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return true;
                }
            } else if let Ok((200 | 401, _)) = http_request(self.port, "GET", "/v2/", None) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn config_yaml(storage: &Path, port: u16) -> String {
    // Listens on loopback only; never the packaged config, which listens on all interfaces.
    format!(
        "version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: hoist-test-secret
",
        storage.display()
    )
}

/// Every manifest type, as a registry client asks for them.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json";

/// A minimal HTTP/1.0 request, enough to probe or feed a loopback registry
/// without pulling an HTTP client into the testkit.
fn http_request(port: u16, method: &str, path: &str, body: Option<(&str, &[u8])>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n")?;
    // Without it distribution serves an old manifest schema in place of what was pushed.
    write!(stream, "Accept: {MANIFEST_TYPES}\r\n")?;
    match body {
        Some((content_type, bytes)) => {
            write!(stream, "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", bytes.len())?;
            stream.write_all(bytes)?;
        }
        None => write!(stream, "\r\n")?,
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text_end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(response.len());
    let head = String::from_utf8_lossy(&response[..text_end]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.get(text_end + 4..).unwrap_or_default().to_vec();
    Ok((status, body))
}
