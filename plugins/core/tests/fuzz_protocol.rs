//! Property tests of everything that parses what a server sends (headers, metadata,
//! `Location`) and of the metadata codec: arbitrary input never panics, and what is
//! encoded parses back the same. `PROPTEST_CASES=100000 cargo test -p tusflow-core
//! --test fuzz_protocol` runs longer; CI runs the default below.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tusflow_core::protocol::{self, Capabilities, Metadata, header};

/// Cases per property: `PROPTEST_CASES`, else 2,000.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig::with_cases(cases)
}

/// Header values as servers may send them: any visible ASCII and spaces, digits and
/// signs often, sometimes obs-text bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            prop_oneof![
                Just(b'0'),
                Just(b'9'),
                Just(b'-'),
                Just(b'+'),
                Just(b' '),
                Just(b','),
                0x20u8..0x7f
            ],
            0..40
        ),
        proptest::collection::vec(0x20u8..=0xff, 0..200),
        "[0-9]{1,30}".prop_map(String::into_bytes),
    ]
}

fn headers(name: &HeaderName, v: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(v) {
        h.insert(name.clone(), v);
    }
    h
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn numeric_headers_never_panic(v in value()) {
        for name in [header::UPLOAD_OFFSET, header::UPLOAD_LENGTH, header::TUS_MAX_SIZE] {
            let h = headers(&name, &v);
            let _ = protocol::upload_offset(&h);
            let _ = protocol::upload_length(&h);
            let _ = protocol::is_length_deferred(&h);
            let _ = Capabilities::from_headers(&h);
        }
        if let Ok(s) = std::str::from_utf8(&v) {
            match protocol::parse_u64("Upload-Offset", s) {
                // Accepted only as plain decimal digits.
                Ok(n) => prop_assert_eq!(s.trim().parse::<u64>().ok(), Some(n)),
                Err(e) => prop_assert!(e.to_string().contains("Upload-Offset")),
            }
        }
    }

    #[test]
    fn informational_headers_never_panic(v in value()) {
        let _ = protocol::upload_expires(&headers(&header::UPLOAD_EXPIRES, &v));
        let _ = protocol::upload_metadata(&headers(&header::UPLOAD_METADATA, &v));
        let _ = protocol::retry_after(&headers(&http::header::RETRY_AFTER, &v), SystemTime::now());
        for name in [header::TUS_EXTENSION, header::TUS_VERSION, header::TUS_CHECKSUM_ALGORITHM] {
            let _ = protocol::comma_list(&headers(&name, &v), &name);
        }
    }

    #[test]
    fn metadata_parse_never_panics(s in "\\PC{0,300}") {
        let _ = Metadata::parse(&s);
    }

    #[test]
    fn metadata_round_trips(pairs in proptest::collection::btree_map("[a-zA-Z0-9._~-]{1,20}", proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let mut m = Metadata::new();
        for (k, v) in &pairs {
            m.insert(k, v).unwrap();
        }
        let back = Metadata::parse(&m.encode()).unwrap();
        prop_assert_eq!(back.len(), pairs.len());
        for (k, v) in &pairs {
            prop_assert_eq!(back.get(k), Some(&v[..]));
        }
    }

    #[test]
    fn locations_resolve_to_http_urls_or_errors(v in value()) {
        let endpoint: reqwest::Url = "https://tus.example/files/".parse().unwrap();
        if let Ok(url) = protocol::resolve_location(&endpoint, &headers(&http::header::LOCATION, &v)) {
            prop_assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        }
    }
}
