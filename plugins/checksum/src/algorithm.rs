//! The checksum algorithms.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
use tusflow_core::Error;

/// A checksum algorithm of the tus checksum extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1 (every server with the extension must support it).
    Sha1,
    /// MD5.
    Md5,
    /// CRC-32 (IEEE), as 4 big-endian bytes.
    Crc32,
}

impl Algorithm {
    /// Every algorithm, in the default order of preference.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Sha256,
        Algorithm::Sha512,
        Algorithm::Sha1,
        Algorithm::Md5,
        Algorithm::Crc32,
    ];

    /// The name in `Upload-Checksum` and `Tus-Checksum-Algorithm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Sha1 => "sha1",
            Algorithm::Md5 => "md5",
            Algorithm::Crc32 => "crc32",
        }
    }

    /// Its name in RFC 9530's registry (`Content-Digest`, the IETF draft), for the
    /// algorithms the registry has as standard: SHA-256 and SHA-512.
    pub fn digest_name(self) -> Option<&'static str> {
        match self {
            Algorithm::Sha256 => Some("sha-256"),
            Algorithm::Sha512 => Some("sha-512"),
            _ => None,
        }
    }

    /// A fresh hasher.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
            Algorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            Algorithm::Md5 => State::Md5(md5::Md5::new()),
            Algorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown checksum algorithm {s:?}: expected one of sha256, sha512, sha1, md5, crc32"
                ))
            })
    }
}

enum State {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
}

/// An incremental digest.
pub struct Hasher(State);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Md5(h) => h.update(data),
            State::Crc32(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        match self.0 {
            State::Sha256(h) => h.finalize().to_vec(),
            State::Sha512(h) => h.finalize().to_vec(),
            State::Sha1(h) => h.finalize().to_vec(),
            State::Md5(h) => h.finalize().to_vec(),
            State::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusflow_core::protocol::base64_encode;

    #[test]
    fn known_digests() {
        let digest = |a: Algorithm| {
            let mut h = a.hasher();
            h.update(b"hello ");
            h.update(b"world");
            base64_encode(&h.finish())
        };
        assert_eq!(digest(Algorithm::Sha1), "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(digest(Algorithm::Md5), "XrY7u+Ae7tCTyyK7j1rNww==");
        assert_eq!(
            digest(Algorithm::Sha256),
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
        );
        assert_eq!(digest(Algorithm::Crc32), "DUoRhQ==");
        assert_eq!("SHA1".parse::<Algorithm>().unwrap(), Algorithm::Sha1);
        assert!(
            "sha3"
                .parse::<Algorithm>()
                .unwrap_err()
                .to_string()
                .contains("\"sha3\"")
        );
    }
}
