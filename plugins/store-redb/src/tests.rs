use super::*;

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/uploads.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        let mut r = UploadRecord::new("fp1", "http://h/files/a");
        r.length = Some(10);
        r.offset = Some(4);
        s.add(&r).unwrap();
        s.add(&UploadRecord::new("fp2", "http://h/files/b"))
            .unwrap();
        r.offset = Some(8);
        s.add(&r).unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    let found = s.find("fp1").unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].offset, Some(8));
    assert_eq!(s.list().unwrap().len(), 2);
    let mut by_src = UploadRecord::new("fp3", "http://h/files/c");
    by_src.source = Some("/data/x.bin".into());
    by_src.endpoint = Some("http://h/files/".into());
    s.add(&by_src).unwrap();
    let found = s
        .find_by_source(Some("http://h/files/"), "/data/x.bin")
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        s.find_by_source(Some("http://other/"), "/data/x.bin")
            .unwrap()
            .is_empty()
    );
    assert!(
        s.find_by_source(Some("http://h/files/"), "/data/x.bi")
            .unwrap()
            .is_empty()
    );
    assert!(s.remove("fp3", "http://h/files/c").unwrap());
    assert!(
        s.find_by_source(Some("http://h/files/"), "/data/x.bin")
            .unwrap()
            .is_empty()
    );
    assert!(s.remove("fp1", "http://h/files/a").unwrap());
    assert_eq!(s.remove_url("http://h/files/b").unwrap(), 1);
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn a_store_is_created_whole_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.redb");
    let s = RedbStore::open(&path).unwrap();
    s.add(&UploadRecord::new("fp", "http://h/1")).unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["u.redb"], "no temporary file is left");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}

#[test]
fn what_is_not_a_store_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let mut cases = vec![
        (empty.clone(), "an empty file"),
        (sub.clone(), "a directory"),
    ];
    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            cases.push((fifo, "not a regular file"));
        }
    }
    for (path, what) in cases {
        let e = RedbStore::open(&path).unwrap_err();
        let msg = e.to_string();
        assert!(e.is_invalid(), "{msg}");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(what),
            "{msg}"
        );
        assert!(
            std::fs::symlink_metadata(&path).is_ok(),
            "{} was removed",
            path.display()
        );
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
}

#[test]
fn concurrent_changes_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("u.redb")).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut r = UploadRecord::new(format!("fp{t}"), format!("http://h/{i}"));
                    r.source = Some(format!("s{t}"));
                    store.add(&r).unwrap();
                    if i % 2 == 1 {
                        assert!(
                            store
                                .remove(&format!("fp{t}"), &format!("http://h/{i}"))
                                .unwrap()
                        );
                        assert!(
                            !store
                                .remove(&format!("fp{t}"), &format!("http://h/{i}"))
                                .unwrap()
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store.release();
    let reopened = RedbStore::open(dir.path().join("u.redb")).unwrap();
    assert_eq!(reopened.list().unwrap().len(), 8 * 25);
    assert_eq!(reopened.find_by_source(None, "s3").unwrap().len(), 25);
}

#[test]
fn stores_share_the_file_and_a_long_lock_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uploads.redb");
    let a = RedbStore::open(&path).unwrap();
    let b = RedbStore::open(&path).unwrap();
    a.add(&UploadRecord::new("fp", "http://h/files/1")).unwrap();
    // b waits until a lets go (idle).
    assert_eq!(b.find("fp").unwrap().len(), 1);
    a.release();
    b.release();

    // Someone holds the file open: a short wait, then an error naming it.
    let held = Database::create(&path).unwrap();
    let c = RedbStore::unopened(path.clone(), Duration::from_millis(100));
    let e = c.list().unwrap_err().to_string();
    assert!(
        e.contains("stayed in use by another process") && e.contains("uploads.redb"),
        "{e}"
    );
    drop(held);
    assert_eq!(c.list().unwrap().len(), 1);

    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 10_000]).unwrap();
    let e = RedbStore::open(&junk).unwrap_err().to_string();
    assert!(e.contains("junk.redb"), "{e}");
}

#[test]
fn updates_are_read_back_at_once_and_written_by_the_next_change_or_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uploads.redb");
    let mut r = UploadRecord::new("fp", "http://h/files/a");
    r.source = Some("/d/a.bin".into());
    {
        let s = RedbStore::open(&path).unwrap();
        assert!(s.queues_updates());
        s.add(&r).unwrap();
        r.offset = Some(5);
        s.update(&r).unwrap();
        // Read back by this process before any commit.
        assert_eq!(s.find("fp").unwrap()[0].offset, Some(5));
        assert_eq!(
            s.find_by_source(None, "/d/a.bin").unwrap()[0].offset,
            Some(5)
        );
        assert_eq!(s.list().unwrap()[0].offset, Some(5));
        // A removal is not undone by the queued update.
        let mut gone = UploadRecord::new("fp2", "http://h/files/b");
        s.add(&gone).unwrap();
        gone.offset = Some(1);
        s.update(&gone).unwrap();
        assert!(s.remove("fp2", "http://h/files/b").unwrap());
        assert!(s.find("fp2").unwrap().is_empty());
    }
    // Dropped: written.
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.find("fp").unwrap()[0].offset, Some(5));
    assert!(s.find("fp2").unwrap().is_empty());
    // The next change writes the queued ones with it.
    r.offset = Some(9);
    s.update(&r).unwrap();
    s.add(&UploadRecord::new("fp3", "http://h/files/c"))
        .unwrap();
    assert!(s.lazy().is_empty());
}
