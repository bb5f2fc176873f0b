//! A middleware of your own, composed with tusflow's built-ins.
//!
//! `Meter` counts the requests and bytes of each tus operation; it reads the typed
//! `Operation` extension instead of sniffing methods. It sits between the built-in
//! retry (outside) and checksum (inside, skipped if the server has no checksums), so it
//! sees every try.
//!
//!     cargo run --example custom_middleware -- http://127.0.0.1:1080/files/ FILE

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower::{Layer, Service};
use tusflow::checksum::ChecksumLayer;
use tusflow::retry::RetryLayer;
use tusflow::{Client, Operation, Request, Response};

/// Requests and body bytes per operation.
type Counts = Arc<Mutex<BTreeMap<&'static str, (u64, u64)>>>;

#[derive(Clone)]
struct MeterLayer(Counts);

impl<S> Layer<S> for MeterLayer {
    type Service = Meter<S>;
    fn layer(&self, inner: S) -> Meter<S> {
        Meter {
            inner,
            counts: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
struct Meter<S> {
    inner: S,
    counts: Counts,
}

impl<S> Service<Request> for Meter<S>
where
    S: Service<Request, Response = Response, Error = tusflow::Error>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = tusflow::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tusflow::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> S::Future {
        let op = req
            .extensions()
            .get::<Operation>()
            .map_or("other", |o| o.as_str());
        let mut counts = self.counts.lock().unwrap();
        let entry = counts.entry(op).or_default();
        entry.0 += 1;
        entry.1 += req.body().len();
        drop(counts);
        self.inner.call(req)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(endpoint), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: custom_middleware ENDPOINT FILE");
        std::process::exit(2);
    };
    let counts = Counts::default();
    let client = Client::builder()
        .endpoint(endpoint)
        .layer(RetryLayer::new()) // outermost
        .layer(MeterLayer(Arc::clone(&counts)))
        .layer(ChecksumLayer::any().required(false)) // innermost
        .build()?;
    let done = client
        .uploader(file.as_str())
        .chunk_size(4 << 20)
        .upload()
        .await?;
    println!("uploaded {} bytes to {}", done.offset, done.url);
    for (op, (requests, bytes)) in counts.lock().unwrap().iter() {
        println!("{op:>10}: {requests} requests, {bytes} body bytes");
    }
    Ok(())
}
