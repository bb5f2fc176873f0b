//! The ledger against a real PostgreSQL 15 (`tests/support/pg.rs`: started on
//! 127.0.0.1 on a free port in a temporary directory, as the `postgres` system user
//! when run as root, and stopped by PID).

#[path = "../../../tests/support/pg.rs"]
mod pg;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg::{PASSWORD, Pg};
use tusflow_core::ledger::{Ledger, NewEntry};
use tusflow_ledger_postgres::{PgLedger, SCHEMA_VERSION};

/// A fresh database of its own for a test, its URL, and the server to hold while the
/// test runs.
fn database(name: &str) -> (String, Arc<Pg>) {
    let pg = pg::server();
    (pg.database(name), pg)
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
                    let got = ledger
                        .claim(&owner, 7, Duration::from_secs(30), &[])
                        .unwrap();
                    assert!(got.len() <= 7, "claimed {} of 7 asked", got.len());
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
    let a = ledger
        .claim("a", 1, Duration::from_millis(300), &[])
        .unwrap();
    assert_eq!(a.len(), 1);
    let key = a[0].key.clone();
    assert!(ledger.record("a", &key, "http://tus/files/1", 400).unwrap());
    // Held: nobody else gets it.
    assert!(
        ledger
            .claim("b", 1, Duration::from_secs(30), &[])
            .unwrap()
            .is_empty()
    );
    std::thread::sleep(Duration::from_millis(500));
    // Worker a paused past its lease: b takes the file over, with a's upload URL.
    let b = ledger.claim("b", 1, Duration::from_secs(30), &[]).unwrap();
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
    let got = ledger.claim("w", 3, Duration::from_secs(30), &[]).unwrap();
    assert!(
        ledger
            .fail("w", &got[0].key, "server answered 500")
            .unwrap()
    );
    assert!(ledger.release("w", &got[1].key).unwrap());
    let t = ledger.totals().unwrap();
    assert_eq!((t.failed, t.pending, t.active), (1, 1, 1));
    // A failed file is not claimed again until asked.
    let next = ledger.claim("w2", 3, Duration::from_secs(30), &[]).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].key, got[1].key);
    assert_eq!(ledger.retry_failed().unwrap(), 1);
    assert_eq!(
        ledger
            .claim("w2", 3, Duration::from_secs(30), &[])
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

#[test]
fn tls_to_the_database_is_verified_with_rustls() {
    let pg = pg::private_tls();
    let url = pg.database("tls");
    let ca = pg.ca.clone().unwrap();
    let required = format!("{url}?sslmode=require");
    // Not trusted: the platform's roots do not know the test CA, and the message says
    // how to trust it (and never the password).
    let e = PgLedger::connect(&required, "b").unwrap_err().to_string();
    assert!(e.contains("sslrootcert=PATH"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
    // Trusted with sslrootcert: connects, which `sslmode=require` allows only over TLS.
    let trusted = format!("{required}&sslrootcert={}", ca.display());
    let ledger = PgLedger::connect(&trusted, "b").unwrap();
    assert_eq!(ledger.enqueue(&entries(3)).unwrap(), 3);
    assert!(!format!("{ledger:?}").contains(PASSWORD));
    // Without sslmode (prefer), as libpq and psql: encrypted, the certificate not
    // checked.
    assert!(PgLedger::connect(&url, "b").is_ok());
    // A missing CA file is named.
    let e = PgLedger::connect(&format!("{required}&sslrootcert=/nonexistent/ca.pem"), "b")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{e}"
    );
}

#[test]
fn a_version_1_schema_is_migrated_and_keeps_its_rows() {
    let (url, pg) = database("migrate");
    pg.sql(
        "migrate",
        "CREATE TABLE tusflow_schema (id INT PRIMARY KEY CHECK (id = 1), version INT NOT NULL);
         INSERT INTO tusflow_schema VALUES (1, 1);
         CREATE TABLE tusflow_files (batch TEXT NOT NULL, key TEXT NOT NULL, size BIGINT NOT NULL,
             fingerprint TEXT, url TEXT, acked BIGINT NOT NULL DEFAULT 0,
             state TEXT NOT NULL DEFAULT 'pending', owner TEXT, lease_until TIMESTAMPTZ,
             attempts INT NOT NULL DEFAULT 0, last_error TEXT,
             created TIMESTAMPTZ NOT NULL DEFAULT now(), updated TIMESTAMPTZ NOT NULL DEFAULT now(),
             PRIMARY KEY (batch, key));
         INSERT INTO tusflow_files (batch, key, size) VALUES ('old', 'a', 5);",
    );
    let ledger = PgLedger::connect(&url, "old").unwrap();
    assert_eq!(ledger.totals().unwrap().total, 1);
    assert_eq!(
        pg.value("migrate", "SELECT version FROM tusflow_schema"),
        SCHEMA_VERSION.to_string()
    );
    let store = tusflow_ledger_postgres::PgStore::connect(&url).unwrap();
    assert!(tusflow_core::UrlStore::list(&store).unwrap().is_empty());
}

#[test]
fn a_key_enqueued_with_another_size_is_refused() {
    let (url, _pg) = database("conflict");
    let ledger = PgLedger::connect(&url, "b").unwrap();
    ledger.enqueue(&[NewEntry::new("x/a.bin", 10)]).unwrap();
    let e = ledger
        .enqueue(&[NewEntry::new("x/b.bin", 1), NewEntry::new("x/a.bin", 11)])
        .unwrap_err();
    assert!(e.is_invalid());
    assert!(
        e.to_string()
            .contains("already has \"x/a.bin\" with 10 bytes, but here it is 11 bytes"),
        "{e}"
    );
}

#[test]
fn the_store_is_shared_and_sources_are_per_machine() {
    use tusflow_core::UrlStore;
    let (url, pg) = database("store");
    let a = tusflow_ledger_postgres::PgStore::connect(&url).unwrap();
    let b = tusflow_ledger_postgres::PgStore::connect(&url).unwrap();
    let mut r = tusflow_core::UploadRecord::new("fp1", "http://h/files/1");
    r.source = Some("in/a.bin".into());
    r.endpoint = Some("http://h/files/".into());
    r.offset = Some(7);
    a.add(&r).unwrap();
    // Another connection (another machine) finds it by fingerprint.
    let found = b.find("fp1").unwrap();
    assert_eq!(found, vec![r.clone()]);
    assert_eq!(
        b.find_by_source(Some("http://h/files/"), "in/a.bin")
            .unwrap()
            .len(),
        1
    );
    // A record another host wrote is not this machine's file of the same path.
    pg.sql("store", "UPDATE tusflow_uploads SET host = 'elsewhere'");
    assert!(
        b.find_by_source(Some("http://h/files/"), "in/a.bin")
            .unwrap()
            .is_empty()
    );
    assert_eq!(b.find("fp1").unwrap().len(), 1);
    r.offset = Some(9);
    a.add(&r).unwrap();
    assert_eq!(b.list().unwrap()[0].offset, Some(9));
    assert_eq!(b.remove_url("http://h/files/1").unwrap(), 1);
    assert!(!a.remove("fp1", "http://h/files/1").unwrap());
    assert!(a.location().contains("/store"), "{}", a.location());
}
