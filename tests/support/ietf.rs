//! The IETF draft's test server (`tests/server/ietf-server.mjs`, written from the
//! draft's text; no dependencies but Node.js), and the real tus-js-client run against
//! it. Started on 127.0.0.1 on a free port; stopped by PID when dropped.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::root;

/// A running draft server.
pub struct IetfServer {
    child: Child,
    /// The target resource, `http://127.0.0.1:PORT/uploads`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Where it keeps upload resources: `<id>` (the bytes) and `<id>.json` (the state).
    pub dir: tempfile::TempDir,
}

impl IetfServer {
    /// Start a server of interop version `interop` with extra options
    /// (`--max-append-size N`, `--max-size N`, `--no-104`, ...).
    pub fn start(interop: u8, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("node")
            .arg(root().join("tests/server/ietf-server.mjs"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--interop", &interop.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let info = super::json_line(&mut child, Duration::from_secs(30))
            .expect("the draft server did not start");
        IetfServer {
            child,
            endpoint: info["endpoint"].as_str().unwrap().to_owned(),
            addr: format!("127.0.0.1:{}", info["port"]),
            dir,
        }
    }

    fn id(url: &str) -> &str {
        url.trim_end_matches('/').rsplit('/').next().unwrap()
    }

    /// The bytes stored for the upload resource at `url`.
    pub fn stored_path(&self, url: &str) -> PathBuf {
        self.dir.path().join(Self::id(url))
    }

    /// The server's state of the upload at `url`: offset, length, complete, ...
    pub fn state(&self, url: &str) -> serde_json::Value {
        let p = self.dir.path().join(format!("{}.json", Self::id(url)));
        serde_json::from_slice(&std::fs::read(p).expect("the upload's state")).unwrap()
    }

    /// Every upload's state.
    pub fn states(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect()
    }

    /// Assert that the upload at `url` is complete (the client said `?1`) with exactly
    /// the bytes of `source`.
    pub fn assert_complete(&self, url: &str, source: &Path) {
        let st = self.state(url);
        assert_eq!(st["complete"], true, "{st}");
        super::assert_same_files(&self.stored_path(url), source);
    }
}

impl Drop for IetfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upload `file` with the real tus-js-client 4.3.1 (`protocol: 'ietf-draft-05'`),
/// reading it whole (`buffer`) or as a stream; its JSON line.
pub fn tus_js_upload(endpoint: &str, file: &Path, chunk: u64, buffer: bool) -> serde_json::Value {
    super::ensure_installed();
    let out = Command::new("node")
        .arg(root().join("tests/server/tus-js-upload.mjs"))
        .arg(endpoint)
        .arg(file)
        .arg(chunk.to_string())
        .env("TUS_JS_INPUT", if buffer { "buffer" } else { "stream" })
        .stderr(Stdio::inherit())
        .output()
        .expect("run node");
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("tus-js-client said: {line}"))
}
