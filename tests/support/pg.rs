//! A real PostgreSQL for tests: `initdb` and `postgres` from the Debian package (as the
//! `postgres` system user when the tests run as root: `initdb` refuses root), on
//! 127.0.0.1 on a free port, in a temporary directory; stopped by PID (a fast shutdown)
//! when the last test holding it ends. Databases are made with `psql`.
//!
//! Shared by the ledger crate's tests and the CLI's (`#[path]`): std and tempfile only.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The password of the `tus` user (scram over TCP).
pub const PASSWORD: &str = "pw-S3CRET-x";

/// A running server; dropping the last `Arc` of it stops it.
pub struct Pg {
    child: Mutex<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// With TLS: the CA that signed its certificate (for 127.0.0.1), a PEM file.
    pub ca: Option<PathBuf>,
}

/// A fast shutdown (SIGINT), then wait for it; SIGKILL only if it hangs.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

impl Drop for Pg {
    fn drop(&mut self) {
        stop(self.child.get_mut().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Pg {
    /// Stop the server, wait `down`, and start it again on the same port and data
    /// (its clients lose their connections).
    pub fn restart(&self, down: Duration) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        stop(&mut child);
        std::thread::sleep(down);
        *child = spawn(self.dir.path(), self.port, self.ca.is_some());
        drop(child);
        wait_ready(self.port);
    }

    /// A URL for `db` with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://tus:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Run one SQL statement on `db` with `psql`.
    pub fn sql(&self, db: &str, statement: &str) {
        self.psql(db, "-q", statement);
    }

    /// The first value of the first row of `query` on `db`, as text.
    pub fn value(&self, db: &str, query: &str) -> String {
        self.psql(db, "-At", query)
    }

    fn psql(&self, db: &str, flags: &str, statement: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url(db))
            .args(["-v", "ON_ERROR_STOP=1", flags, "-c", statement])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {statement:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A fresh, empty database `name`; its URL.
    pub fn database(&self, name: &str) -> String {
        self.sql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }
}

fn bin(name: &str) -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join(name).exists())
                .max()
        })
        .expect("PostgreSQL is installed (the Debian package postgresql; .ci/run installs it)")
        .join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `dir` and all in it owned by the `postgres` user, when this process is root.
fn give_to_postgres(dir: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

/// `program` as the `postgres` user when this process is root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The server, shared by the tests running at the same time.
pub fn server() -> Arc<Pg> {
    static PG: Mutex<Weak<Pg>> = Mutex::new(Weak::new());
    let mut weak = PG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pg) = weak.upgrade() {
        return pg;
    }
    let pg = Arc::new(start(false));
    *weak = Arc::downgrade(&pg);
    pg
}

fn start(tls: bool) -> Pg {
    let dir = tempfile::Builder::new()
        .prefix("tusflow-pg-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("data");
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    give_to_postgres(dir.path());
    let out = as_postgres(&bin("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "tus",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ca = tls.then(|| certificates(dir.path()));
    if tls {
        give_to_postgres(dir.path());
    }
    let child = spawn(dir.path(), port, tls);
    let pg = Pg {
        child: Mutex::new(child),
        port,
        dir,
        ca,
    };
    wait_ready(port);
    pg
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with openssl in `dir`
/// (`server.crt`, `server.key`); the CA's PEM file.
fn certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=tusflow test CA",
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
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    dir.join("ca.crt")
}

/// The server of the data under `dir`, on `port`.
fn spawn(dir: &Path, port: u16, tls: bool) -> Child {
    let mut c = as_postgres(&bin("postgres"));
    if tls {
        c.args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!(
                "ssl_cert_file={}",
                dir.join("server.crt").display()
            ))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()));
    }
    c.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(dir)
        .args(["-c", "fsync=off", "-c", "max_connections=80"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server of its own (for a test that restarts it).
pub fn private() -> Pg {
    start(false)
}

/// A server of its own that speaks TLS, with a certificate for 127.0.0.1 signed by
/// [`Pg::ca`].
pub fn private_tls() -> Pg {
    start(true)
}
