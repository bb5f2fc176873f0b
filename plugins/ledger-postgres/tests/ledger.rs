//! The ledger against a real PostgreSQL 15, started for these tests on 127.0.0.1 on a
//! free port in a temporary directory (as the `postgres` system user when run as root:
//! `initdb` refuses root), and stopped by PID.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tusflow_core::ledger::{Ledger, NewEntry};
use tusflow_ledger_postgres::{PgLedger, SCHEMA_VERSION};

const PASSWORD: &str = "pw-S3CRET-x";

/// A PostgreSQL server of this test process, one for all its tests.
struct Pg {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Pg {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT), then wait for it; SIGKILL only if it hangs.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let dir = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join(name).exists())
                .max()
        })
        .expect("PostgreSQL is installed (the Debian package postgresql; .ci/run installs it)");
    dir.join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `cmd` as the `postgres` user when this process is root.
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

/// The server, shared by the tests running at the same time; the last of them to end
/// stops it (a static would never be dropped, and would leave it running).
fn server() -> Arc<Pg> {
    static PG: Mutex<std::sync::Weak<Pg>> = Mutex::new(std::sync::Weak::new());
    let mut weak = PG.lock().unwrap();
    if let Some(pg) = weak.upgrade() {
        return pg;
    }
    let pg = Arc::new(start());
    *weak = Arc::downgrade(&pg);
    pg
}

fn start() -> Pg {
    let dir = tempfile::Builder::new()
        .prefix("tusflow-pg-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("data");
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, PASSWORD).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
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
    let child = as_postgres(&bin("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(dir.path())
        .args(["-c", "fsync=off", "-c", "max_connections=50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pg = Pg {
        child,
        port,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while postgres::Client::connect(&admin_url(port), postgres::NoTls).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg
}

fn admin_url(port: u16) -> String {
    format!("postgres://tus:{PASSWORD}@127.0.0.1:{port}/postgres")
}

/// A fresh database of its own for a test, its URL, and the server to hold while the
/// test runs.
fn database(name: &str) -> (String, Arc<Pg>) {
    let pg = server();
    let port = pg.port;
    let mut admin = postgres::Client::connect(&admin_url(port), postgres::NoTls).unwrap();
    // (One statement each: DROP and CREATE DATABASE cannot share a transaction.)
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    (
        format!("postgres://tus:{PASSWORD}@127.0.0.1:{port}/{name}"),
        pg,
    )
}

fn entries(n: usize) -> Vec<NewEntry> {
    (0..n)
        .map(|i| NewEntry::new(format!("dir/f{i:04}.bin"), 1000 + i as u64))
        .collect()
}

#[test]
fn workers_claim_each_file_once_and_totals_add_up() {
    let (url, _pg) = database("claims");
    let ledger = PgLedger::connect(&url, "b1").unwrap();
    assert_eq!(ledger.enqueue(&entries(300)).unwrap(), 300);
    // Enqueueing again (another worker bringing the same paths) adds nothing.
    assert_eq!(ledger.enqueue(&entries(300)).unwrap(), 0);
    let claimed: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (url, claimed) = (url.clone(), Arc::clone(&claimed));
            std::thread::spawn(move || {
                let ledger = PgLedger::connect(&url, "b1").unwrap();
                let owner = format!("worker-{w}");
                loop {
                    let got = ledger.claim(&owner, 7, Duration::from_secs(30)).unwrap();
                    if got.is_empty() {
                        return;
                    }
                    for c in got {
                        assert!(ledger.complete(&owner, &c.key).unwrap());
                        claimed.lock().unwrap().push(c.key);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut keys = claimed.lock().unwrap().clone();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, 300, "claimed {before} times");
    assert_eq!(keys.len(), 300, "a file was claimed twice");
    let t = ledger.totals().unwrap();
    assert_eq!((t.total, t.complete, t.pending, t.active), (300, 300, 0, 0));
    let bytes: u64 = entries(300).iter().map(|e| e.size).sum();
    assert_eq!((t.bytes_total, t.bytes_done), (bytes, bytes));
    // Another batch in the same database is its own.
    let other = PgLedger::connect(&url, "b2").unwrap();
    assert_eq!(other.totals().unwrap().total, 0);
}

#[test]
fn an_expired_lease_goes_to_a_new_owner_who_continues_its_upload() {
    let (url, _pg) = database("leases");
    let ledger = PgLedger::connect(&url, "b").unwrap();
    ledger.enqueue(&entries(1)).unwrap();
    let a = ledger.claim("a", 1, Duration::from_millis(300)).unwrap();
    assert_eq!(a.len(), 1);
    let key = a[0].key.clone();
    assert!(ledger.record("a", &key, "http://tus/files/1", 400).unwrap());
    // Held: nobody else gets it.
    assert!(
        ledger
            .claim("b", 1, Duration::from_secs(30))
            .unwrap()
            .is_empty()
    );
    std::thread::sleep(Duration::from_millis(500));
    // Worker a paused past its lease: b takes the file over, with a's upload URL.
    let b = ledger.claim("b", 1, Duration::from_secs(30)).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].url.as_deref(), Some("http://tus/files/1"));
    assert_eq!((b[0].offset, b[0].attempts), (400, 2));
    // a notices at its next heartbeat, and cannot complete over b.
    assert!(
        ledger
            .heartbeat("a", std::slice::from_ref(&key), Duration::from_secs(30))
            .unwrap()
            .is_empty()
    );
    assert!(!ledger.complete("a", &key).unwrap());
    assert!(!ledger.record("a", &key, "http://tus/files/2", 900).unwrap());
    assert_eq!(
        ledger
            .heartbeat("b", std::slice::from_ref(&key), Duration::from_secs(30))
            .unwrap(),
        std::slice::from_ref(&key)
    );
    assert!(ledger.complete("b", &key).unwrap());
    assert_eq!(ledger.totals().unwrap().complete, 1);
}

#[test]
fn failed_files_wait_for_retry_failed_and_forget_drops_the_batch() {
    let (url, _pg) = database("failures");
    let ledger = PgLedger::connect(&url, "b").unwrap();
    ledger.enqueue(&entries(3)).unwrap();
    let got = ledger.claim("w", 3, Duration::from_secs(30)).unwrap();
    assert!(
        ledger
            .fail("w", &got[0].key, "server answered 500")
            .unwrap()
    );
    assert!(ledger.release("w", &got[1].key).unwrap());
    let t = ledger.totals().unwrap();
    assert_eq!((t.failed, t.pending, t.active), (1, 1, 1));
    // A failed file is not claimed again until asked.
    let next = ledger.claim("w2", 3, Duration::from_secs(30)).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].key, got[1].key);
    assert_eq!(ledger.retry_failed().unwrap(), 1);
    assert_eq!(
        ledger
            .claim("w2", 3, Duration::from_secs(30))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ledger.forget().unwrap(), 3);
    assert_eq!(ledger.totals().unwrap().total, 0);
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let (url, _pg) = database("newer");
    drop(PgLedger::connect(&url, "b").unwrap());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.execute("UPDATE tusflow_schema SET version = 99", &[])
        .unwrap();
    let err = PgLedger::connect(&url, "b").unwrap_err().to_string();
    eprintln!("newer schema: {err}");
    assert!(
        err.contains("schema version 99")
            && err.contains(&format!("this tusflow's {SCHEMA_VERSION}")),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn connection_errors_name_host_and_port_never_the_password() {
    let (url, _pg) = database("errors");
    // A wrong password.
    let wrong = url.replace(PASSWORD, "not-it-9");
    let err = PgLedger::connect(&wrong, "b").unwrap_err().to_string();
    eprintln!("wrong password: {err}");
    assert!(
        err.contains("127.0.0.1:") && err.contains("/errors"),
        "{err}"
    );
    assert!(
        !err.contains("not-it-9") && !err.contains(PASSWORD),
        "{err}"
    );
    // Nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("postgres://tus:{PASSWORD}@127.0.0.1:{closed}/x");
    let err = PgLedger::connect(&dead, "b").unwrap_err();
    let text = err.to_string();
    eprintln!("nothing listening: {text}");
    assert!(text.contains(&format!("127.0.0.1:{closed}")), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!format!("{err:?}").contains(PASSWORD));
    // And the ledger's Debug holds no password either.
    let ok = PgLedger::connect(&url, "b").unwrap();
    assert!(!format!("{ok:?}").contains(PASSWORD));
}
