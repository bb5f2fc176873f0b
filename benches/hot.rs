//! Micro-benchmarks of the hot pieces of an upload: reading the body in blocks,
//! parsing tus headers, the metadata codec, and each checksum algorithm. (xxh3
//! fingerprints: `cargo bench -p tusflow-fingerprint-xxh3`.)
//!
//! `cargo bench --bench hot`; `scripts/bench` runs the end-to-end comparison.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use tusflow::checksum::{Algorithm, digest};
use tusflow::core::{Body, FileSource, RandomAccess};
use tusflow::{Capabilities, Metadata, protocol};

const FILE_LEN: u64 = 256 << 20;

fn file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.bin");
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut f = std::fs::File::create(&path).unwrap();
    for _ in 0..(FILE_LEN >> 20) {
        std::io::Write::write_all(&mut f, &block).unwrap();
    }
    (dir, path)
}

/// A file window read frame by frame, as the transport reads a `PATCH` body.
fn body(c: &mut Criterion) {
    let (_dir, path) = file();
    let src: Arc<dyn RandomAccess> = Arc::new(FileSource::open(&path).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("body");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(FILE_LEN));
    g.bench_function("file window 256 MiB, frames", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut body = Body::window(Arc::clone(&src), 0, FILE_LEN);
                let mut n = 0usize;
                while let Some(frame) = body.frame().await {
                    n += frame.unwrap().into_data().map_or(0, |d| d.len());
                }
                assert_eq!(n as u64, FILE_LEN);
            })
        })
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let mut h = HeaderMap::new();
    h.insert("upload-offset", HeaderValue::from_static("1073741824"));
    h.insert("upload-length", HeaderValue::from_static("10737418240"));
    h.insert(
        "tus-extension",
        HeaderValue::from_static(
            "creation,creation-with-upload,creation-defer-length,termination,concatenation,checksum,expiration",
        ),
    );
    h.insert("tus-version", HeaderValue::from_static("1.0.0,0.2.2"));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static("md5,sha1,sha256,sha512"),
    );
    h.insert(
        "location",
        HeaderValue::from_static("/files/24e533e02ec3bc40c387f1a0e460e216"),
    );
    let endpoint = "http://127.0.0.1:1080/files/".parse().unwrap();
    c.bench_function("headers: Upload-Offset", |b| {
        b.iter(|| protocol::upload_offset(std::hint::black_box(&h)).unwrap())
    });
    c.bench_function("headers: capabilities", |b| {
        b.iter(|| Capabilities::from_headers(std::hint::black_box(&h)).unwrap())
    });
    c.bench_function("headers: relative Location", |b| {
        b.iter(|| protocol::resolve_location(&endpoint, std::hint::black_box(&h)).unwrap())
    });

    let mut m = Metadata::new();
    m.insert("filename", "holiday video 2026 (final).mp4")
        .unwrap();
    m.insert("filetype", "video/mp4").unwrap();
    m.insert("album", "summer").unwrap();
    m.insert("empty", "").unwrap();
    m.insert("owner", "ops@example.com").unwrap();
    let encoded = m.encode();
    c.bench_function("metadata: encode 5 pairs", |b| {
        b.iter(|| std::hint::black_box(&m).encode())
    });
    c.bench_function("metadata: parse 5 pairs", |b| {
        b.iter(|| Metadata::parse(std::hint::black_box(&encoded)).unwrap())
    });
}

/// Each checksum algorithm over 64 MiB in 1 MiB frames, as the checksum layer hashes
/// a chunk.
fn checksums(c: &mut Criterion) {
    let data = bytes::Bytes::from(
        (0..64u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect::<Vec<u8>>(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("checksum");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for algo in [
        Algorithm::Sha256,
        Algorithm::Sha1,
        Algorithm::Sha512,
        Algorithm::Md5,
        Algorithm::Crc32,
    ] {
        g.bench_function(algo.as_str(), |b| {
            b.iter(|| rt.block_on(digest(algo, Body::from(data.clone()))).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, body, headers, checksums);
criterion_main!(benches);
