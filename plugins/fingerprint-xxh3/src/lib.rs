//! The default fingerprinter of tusflow, with xxh3.
//!
//! - [`Mode::Fast`]: the size, the modification time, and the first and last 64 KiB of
//!   the file. Reads 128 KiB whatever the size; a file rewritten with the same size
//!   and time in the same second but new middle bytes is the one case it misses.
//! - [`Mode::Content`]: every byte, streamed in 1 MiB blocks.
//!
//! Both include the endpoint, so one file sent to two servers is two uploads. Bytes in
//! memory are hashed whole in both modes; a stream read once has no fingerprint.

use std::fmt;
use std::io;
use std::time::UNIX_EPOCH;

use tusflow_core::body::RandomAccess;
use tusflow_core::store::{Fingerprinter, SourceInfo};
use tusflow_core::{Error, Result};
use xxhash_rust::xxh3::Xxh3;

/// How much of each end of a file the fast mode reads.
pub const EDGE: u64 = 64 * 1024;

/// What the fingerprint covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Size, modification time, first and last 64 KiB.
    #[default]
    Fast,
    /// The whole content.
    Content,
}

/// xxh3 fingerprints.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Xxh3Fingerprinter {
    mode: Mode,
}

impl fmt::Debug for Xxh3Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xxh3Fingerprinter({:?})", self.mode)
    }
}

impl Xxh3Fingerprinter {
    /// Fingerprints in `mode`.
    pub fn new(mode: Mode) -> Self {
        Xxh3Fingerprinter { mode }
    }

    /// The fast mode.
    pub fn fast() -> Self {
        Self::new(Mode::Fast)
    }

    /// The content mode.
    pub fn content() -> Self {
        Self::new(Mode::Content)
    }
}

fn hash_range(h: &mut Xxh3, src: &dyn RandomAccess, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (end - start).min(1 << 20) as usize];
    let mut pos = start;
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read",
            ));
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(())
}

/// xxh3-128 of the whole of `src`'s `[0, len)`, streamed (what content mode hashes).
pub fn content_hash(src: &dyn RandomAccess, len: u64) -> io::Result<u128> {
    let mut h = Xxh3::new();
    hash_range(&mut h, src, 0, len)?;
    Ok(h.digest128())
}

impl Fingerprinter for Xxh3Fingerprinter {
    fn fingerprint(&self, s: &SourceInfo) -> Result<Option<String>> {
        let mut h = Xxh3::new();
        h.update(s.endpoint.as_deref().unwrap_or("").as_bytes());
        h.update(&[0]);
        h.update(&s.len.to_le_bytes());
        if let Some(bytes) = &s.bytes {
            h.update(bytes);
            return Ok(Some(format!("xxh3-bytes-{:032x}", h.digest128())));
        }
        let Some(file) = &s.file else {
            return Ok(None);
        };
        let io = |e: io::Error| Error::io(file.path(), e);
        match self.mode {
            Mode::Fast => {
                let meta = file.metadata()?;
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                h.update(&mtime.map_or(0, |d| d.as_nanos()).to_le_bytes());
                hash_range(&mut h, file.as_ref(), 0, s.len.min(EDGE)).map_err(io)?;
                hash_range(
                    &mut h,
                    file.as_ref(),
                    s.len.saturating_sub(EDGE).max(EDGE.min(s.len)),
                    s.len,
                )
                .map_err(io)?;
                Ok(Some(format!("xxh3-fast-{:032x}", h.digest128())))
            }
            Mode::Content => {
                hash_range(&mut h, file.as_ref(), 0, s.len).map_err(io)?;
                Ok(Some(format!("xxh3-content-{:032x}", h.digest128())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tusflow_core::FileSource;

    fn info(path: &std::path::Path, endpoint: &str) -> SourceInfo {
        let f = Arc::new(FileSource::open(path).unwrap());
        let len = f.size().unwrap();
        SourceInfo::file(path.to_path_buf(), f, len, Some(endpoint.into()))
    }

    #[test]
    fn same_file_same_fingerprint_and_changes_change_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&a, &data).unwrap();
        for fp in [Xxh3Fingerprinter::fast(), Xxh3Fingerprinter::content()] {
            let one = fp
                .fingerprint(&info(&a, "http://h/files/"))
                .unwrap()
                .unwrap();
            assert_eq!(
                one,
                fp.fingerprint(&info(&a, "http://h/files/"))
                    .unwrap()
                    .unwrap()
            );
            assert_ne!(
                one,
                fp.fingerprint(&info(&a, "http://other/files/"))
                    .unwrap()
                    .unwrap()
            );
        }
        // Same name, same size, another middle: only content mode sees it (unless mtime
        // moved, which it usually does).
        let b = dir.path().join("b.bin");
        let mut other = data.clone();
        other[150_000] ^= 1;
        std::fs::write(&b, &other).unwrap();
        let c = Xxh3Fingerprinter::content();
        assert_ne!(
            c.fingerprint(&info(&a, "e")).unwrap(),
            c.fingerprint(&info(&b, "e")).unwrap()
        );
        // Different ends: the fast mode sees it.
        let mut tail = data.clone();
        *tail.last_mut().unwrap() ^= 1;
        std::fs::write(&b, &tail).unwrap();
        let f = Xxh3Fingerprinter::fast();
        assert_ne!(
            f.fingerprint(&info(&a, "e")).unwrap(),
            f.fingerprint(&info(&b, "e")).unwrap()
        );
        // Streams have none; bytes have one.
        let s = SourceInfo::bytes(bytes::Bytes::from_static(b"abc"), None);
        assert!(
            f.fingerprint(&s)
                .unwrap()
                .unwrap()
                .starts_with("xxh3-bytes-")
        );
    }
}
