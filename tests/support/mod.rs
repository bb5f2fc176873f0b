//! Test support: the real tus server (the official Node `@tus/server` with
//! `@tus/file-store`), installed from the npm registry by `scripts/install-test-server`
//! and started on 127.0.0.1 on a free port, plus helpers to make and compare files.
#![allow(dead_code, unreachable_pub)]

pub mod ietf;
pub mod proxy;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The project root (the workspace's: these tests run in the library's package and in
/// the CLI's, `cli/`).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("scripts/install-test-server").exists())
        .unwrap_or(&here)
        .to_path_buf()
}

/// Install the test server once (across threads and test processes).
pub(crate) fn ensure_installed() {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = root().join("tests/server");
    let installed = || {
        ["@tus/server", "@tus/file-store", "tus-js-client"]
            .iter()
            .all(|m| {
                dir.join("node_modules")
                    .join(m)
                    .join("package.json")
                    .exists()
            })
    };
    if installed() {
        return;
    }
    // Serialize with other test processes through a lock file.
    let lock = File::create(std::env::temp_dir().join("tusflow-test-server-install.lock")).unwrap();
    lock.lock().unwrap();
    if !installed() {
        let status = Command::new("bash")
            .arg(root().join("scripts/install-test-server"))
            .status()
            .expect("run scripts/install-test-server");
        assert!(status.success(), "scripts/install-test-server failed");
    }
}

/// The JSON line a server started as `child` prints when it listens, within `limit`;
/// `None` (and the child ended) if it prints none.
pub fn json_line(child: &mut Child, limit: Duration) -> Option<serde_json::Value> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(limit) {
        Ok(l) if !l.is_empty() => Some(serde_json::from_str(&l).expect("server's JSON line")),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

/// A running tus server; stopped (by its PID) when dropped.
pub struct TusServer {
    child: Child,
    /// The creation endpoint, `http://127.0.0.1:PORT/files/`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Where the server stores uploads.
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl TusServer {
    /// Start a server with default options.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a server with extra options for `tests/server/server.mjs`
    /// (`--relative-location`, `--max-size N`).
    pub fn start_with(args: &[&str]) -> Self {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, info) =
            Self::spawn(dir.path(), 0, &args).expect("the tus test server did not start");
        TusServer {
            child,
            endpoint: info["endpoint"].as_str().unwrap().to_owned(),
            addr: format!("127.0.0.1:{}", info["port"]),
            dir,
            args,
        }
    }

    /// Kill the server (SIGKILL, mid-request or not) and start it again on the same
    /// port and directory, as after a crash.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port: u16 = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        // The port may take a moment to be free again.
        for _ in 0..50 {
            match Self::spawn(self.dir.path(), port, &self.args) {
                Some((child, _)) => {
                    self.child = child;
                    return;
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!("the tus test server did not restart on port {port}");
    }

    /// Start node; `None` if it exits without listening (e.g. the port is taken).
    fn spawn(dir: &Path, port: u16, args: &[String]) -> Option<(Child, serde_json::Value)> {
        let mut child = Command::new("node")
            .arg(root().join("tests/server/server.mjs"))
            .arg("--dir")
            .arg(dir)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let info = json_line(&mut child, Duration::from_secs(60))?;
        Some((child, info))
    }

    /// Where the server stored the upload at `url`.
    pub fn stored_path(&self, url: &str) -> PathBuf {
        let id = url.trim_end_matches('/').rsplit('/').next().unwrap();
        self.dir.path().join(id)
    }

    /// Assert that the bytes the server stored for `url` are those of `source`.
    pub fn assert_stored_file(&self, url: &str, source: &Path) {
        assert_same_files(&self.stored_path(url), source);
    }

    /// Assert that the server stored exactly `bytes` for `url`.
    pub fn assert_stored(&self, url: &str, bytes: &[u8]) {
        let stored = std::fs::read(self.stored_path(url)).expect("stored upload");
        assert!(
            stored == bytes,
            "stored {} bytes differ from the {} expected",
            stored.len(),
            bytes.len()
        );
    }

    /// The size of every upload the server holds (its data files; `.json` files are
    /// its records).
    pub fn stored_sizes(&self) -> Vec<u64> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .collect()
    }

    /// How many uploads the server holds with every byte of their declared length.
    pub fn complete_count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter(|e| {
                // A server killed while writing its record can leave it torn.
                let Ok(info) = serde_json::from_slice::<serde_json::Value>(
                    &std::fs::read(e.path()).unwrap_or_default(),
                ) else {
                    return false;
                };
                let data = e.path().with_extension("");
                let len = std::fs::metadata(data).map_or(0, |m| m.len());
                info["size"].as_u64() == Some(len)
            })
            .count()
    }

    /// How many uploads the server holds.
    pub fn upload_count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                !name.to_string_lossy().ends_with(".json")
            })
            .count()
    }
}

impl Drop for TusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rustus (a tus server in Rust) built with `hashers`, so it verifies checksums.
/// Installed (and cached) by `scripts/install-rustus`; stopped by PID when dropped.
pub struct RustusServer {
    child: Child,
    /// The creation endpoint, `http://127.0.0.1:PORT/files/`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Where rustus stores uploads.
    pub dir: tempfile::TempDir,
}

impl RustusServer {
    /// Start rustus with extra arguments (e.g. `--max-body-size`).
    pub fn start(args: &[&str]) -> Self {
        static LOCK: Mutex<Option<PathBuf>> = Mutex::new(None);
        let bin = {
            let mut guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                let lock =
                    File::create(std::env::temp_dir().join("tusflow-rustus-install.lock")).unwrap();
                lock.lock().unwrap();
                let out = Command::new("bash")
                    .arg(root().join("scripts/install-rustus"))
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("run scripts/install-rustus");
                assert!(out.status.success(), "scripts/install-rustus failed");
                *guard = Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()));
            }
            guard.clone().unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        // A free port: bind, note it, release it for rustus.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--info-dir")
            .arg(dir.path())
            .args(["--log-level", "ERROR", "--workers", "2"])
            .args(args)
            .stdout(Stdio::null())
            // Its banner and log go to a file of its own, shown if it fails to start.
            .stderr(File::create(dir.path().join("rustus.log")).unwrap())
            .spawn()
            .expect("start rustus");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(dir.path().join("rustus.log")).unwrap_or_default();
                panic!("rustus did not start on {addr}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        RustusServer {
            child,
            endpoint: format!("http://{addr}/files/"),
            addr,
            dir,
        }
    }

    /// Where rustus stored the upload at `url`.
    pub fn stored_path(&self, url: &str) -> PathBuf {
        let id = url.trim_end_matches('/').rsplit('/').next().unwrap();
        self.dir.path().join(id)
    }
}

impl Drop for RustusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xorshift64: seeded schedules (sizes, kills, restarts), the same on every run.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Write a file of `len` pattern bytes, in blocks (so large files cost no memory).
pub fn make_file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
    let block = pattern(1 << 20, seed);
    let mut left = len;
    let mut i = 0u8;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        // Vary each block so a shifted copy would not compare equal.
        let mut b = block[..n].to_vec();
        b[0] = i;
        f.write_all(&b).unwrap();
        left -= n as u64;
        i = i.wrapping_add(1);
    }
    f.flush().unwrap();
    path
}

/// Assert two files hold the same bytes, comparing block by block.
pub fn assert_same_files(a: &Path, b: &Path) {
    let la = std::fs::metadata(a)
        .unwrap_or_else(|e| panic!("{}: {e}", a.display()))
        .len();
    let lb = std::fs::metadata(b)
        .unwrap_or_else(|e| panic!("{}: {e}", b.display()))
        .len();
    assert_eq!(la, lb, "{} and {} differ in size", a.display(), b.display());
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                at + i as u64
            );
        }
        at += n as u64;
    }
}
