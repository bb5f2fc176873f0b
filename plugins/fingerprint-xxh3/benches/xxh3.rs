//! xxh3 fingerprint throughput: the content mode over a 256 MiB file (from the page
//! cache), and the fast mode.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tusflow_core::FileSource;
use tusflow_core::store::{Fingerprinter, SourceInfo};
use tusflow_fingerprint_xxh3::Xxh3Fingerprinter;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.bin");
    let len: u64 = 256 << 20;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for _ in 0..(len >> 20) {
            f.write_all(&block).unwrap();
        }
    }
    let file = Arc::new(FileSource::open(&path).unwrap());
    let info = SourceInfo::file(
        path.clone(),
        file,
        len,
        Some("http://127.0.0.1/files/".into()),
    );

    let mut g = c.benchmark_group("xxh3");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(len));
    g.bench_function("content 256 MiB", |b| {
        let fp = Xxh3Fingerprinter::content();
        b.iter(|| fp.fingerprint(&info).unwrap())
    });
    g.finish();
    c.bench_function("xxh3 fast (256 MiB file)", |b| {
        let fp = Xxh3Fingerprinter::fast();
        b.iter(|| fp.fingerprint(&info).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
