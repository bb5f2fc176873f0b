use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tower::ServiceExt;
use tusflow_core::Stack;

use super::*;

/// A fake server that verifies sha1 checksums; it corrupts the first `flips` appends.
fn server(
    extensions: &'static str,
    algos: &'static str,
    flips: u32,
    log: Arc<Mutex<Vec<String>>>,
) -> Stack {
    let flips = Arc::new(AtomicU32::new(flips));
    Stack::new(tower::service_fn(move |req: Request| {
        let log = Arc::clone(&log);
        let flips = Arc::clone(&flips);
        async move {
            let op = *req.extensions().get::<Operation>().unwrap();
            if op == Operation::Discover {
                log.lock().unwrap().push("options".into());
                return Ok(http::Response::builder()
                    .header("tus-extension", extensions)
                    .header("tus-checksum-algorithm", algos)
                    .body(Bytes::new())
                    .unwrap());
            }
            let offset = protocol::upload_offset(req.headers()).unwrap();
            let sum = req
                .headers()
                .get("upload-checksum")
                .map(|v| v.to_str().unwrap().to_owned());
            let data = req.into_body().collect().await?.to_bytes();
            log.lock().unwrap().push(format!(
                "append {offset} {} {}",
                data.len(),
                sum.clone().unwrap_or_default()
            ));
            if let Some(sum) = sum {
                let mut data = data.to_vec();
                if flips.load(Ordering::SeqCst) > 0 {
                    flips.fetch_sub(1, Ordering::SeqCst);
                    data[0] ^= 1;
                }
                let (algo, b64) = sum.split_once(' ').unwrap();
                let mut h = algo.parse::<Algorithm>().unwrap().hasher();
                h.update(&data);
                if protocol::base64_encode(&h.finish()) != b64 {
                    return Err(Error::from_status(
                        http::StatusCode::from_u16(460).unwrap(),
                        b"",
                        None,
                    ));
                }
            }
            Ok(http::Response::builder()
                .status(204)
                .header("upload-offset", offset + data.len() as u64)
                .body(Bytes::new())
                .unwrap())
        }
    }))
}

fn append(offset: u64, data: &'static [u8]) -> Request {
    http::Request::patch("http://h/files/1")
        .extension(Operation::Append)
        .extension(Endpoint("http://h/files/".parse().unwrap()))
        .header("upload-offset", offset)
        .body(Body::from_static(data))
        .unwrap()
}

#[tokio::test]
async fn chunks_carry_their_own_digest_and_negotiation_happens_once() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = ChecksumLayer::negotiate([Algorithm::Sha256, Algorithm::Sha1]).chunk_size(4);
    let svc = layer.layer(server("creation,checksum", "md5,sha1", 0, Arc::clone(&log)));
    let r = svc
        .clone()
        .oneshot(append(10, b"abcdefghij"))
        .await
        .unwrap();
    assert_eq!(protocol::upload_offset(r.headers()).unwrap(), 20);
    svc.oneshot(append(20, b"xy")).await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log[0], "options");
    assert!(log[1].starts_with("append 10 4 sha1 "), "{log:?}");
    assert!(log[2].starts_with("append 14 4 sha1 "), "{log:?}");
    assert!(log[3].starts_with("append 18 2 sha1 "), "{log:?}");
    assert!(log[4].starts_with("append 20 2 sha1 "), "{log:?}");
    assert_eq!(log.len(), 5);
}

#[tokio::test]
async fn a_mismatch_resends_the_chunk() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = ChecksumLayer::sha1().layer(server("checksum", "sha1", 2, Arc::clone(&log)));
    svc.oneshot(append(0, b"hello")).await.unwrap();
    assert_eq!(
        log.lock().unwrap().len(),
        4,
        "options, two corrupted tries, one good"
    );

    let log = Arc::new(Mutex::new(Vec::new()));
    let svc =
        ChecksumLayer::sha1()
            .resend(1)
            .layer(server("checksum", "sha1", 5, Arc::clone(&log)));
    let err = svc.oneshot(append(0, b"hello")).await.unwrap_err();
    assert!(err.is_checksum_mismatch());
}

#[tokio::test]
async fn a_server_without_checksums_is_an_error_or_skipped() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = ChecksumLayer::sha256().layer(server("creation", "", 0, Arc::clone(&log)));
    let err = svc.oneshot(append(0, b"hello")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support the tus checksum extension"),
        "{err}"
    );

    let svc = ChecksumLayer::sha256().layer(server("checksum", "md5", 0, Arc::clone(&log)));
    let err = svc.oneshot(append(0, b"hello")).await.unwrap_err();
    assert!(err.to_string().contains("it offers: md5"), "{err}");

    let log = Arc::new(Mutex::new(Vec::new()));
    let svc =
        ChecksumLayer::sha256()
            .required(false)
            .layer(server("creation", "", 0, Arc::clone(&log)));
    svc.oneshot(append(0, b"hello")).await.unwrap();
    assert_eq!(log.lock().unwrap()[1], "append 0 5 ");
}

#[tokio::test]
async fn a_required_checksum_refuses_a_server_without_it_before_creating() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = ChecksumLayer::sha256().layer(server("creation", "", 0, Arc::clone(&log)));
    let create = http::Request::post("http://h/files/")
        .extension(Operation::Create)
        .extension(Endpoint("http://h/files/".parse().unwrap()))
        .header("upload-length", 10)
        .body(Body::empty())
        .unwrap();
    let err = svc.oneshot(create).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support the tus checksum extension"),
        "{err}"
    );
    // Asked for its capabilities; no creation reached it.
    assert_eq!(*log.lock().unwrap(), ["options"]);
}
