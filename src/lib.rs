//! tusflow: a resumable-upload client for the [tus](https://tus.io) 1.0 protocol, built
//! as a plugin framework on tower.
//!
//! Every request of an upload flows through a tower `Service` stack: layers you add
//! (any tower or tower-http layer, or tusflow's own middleware) wrap one core
//! [`TusService`](core::TusService) that speaks HTTP over a pooled connection.
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tusflow::Error> {
//! # // `scripts/test` starts a real tus server for this example; elsewhere it is skipped.
//! # let Ok(endpoint) = std::env::var("TEST_TUS_ENDPOINT") else { return Ok(()) };
//! # let path = std::env::temp_dir().join("holiday.mp4");
//! # std::fs::write(&path, vec![7u8; 300_000]).unwrap();
//! use tusflow::Client;
//!
//! let client = Client::builder()
//!     .endpoint(endpoint)                     // e.g. "http://127.0.0.1:1080/files/"
//!     .header("Authorization", "Bearer s3cr3t")
//!     .build()?;
//! let done = client
//!     .uploader(&path)                        // a path, Bytes, or tusflow::Source::reader(..)
//!     .metadata("album", "summer")?           // filename and filetype are added for paths
//!     .upload()                               // one streaming PATCH on a kept-alive connection
//!     .await?;
//! assert!(done.complete);
//! println!("{} bytes stored at {}", done.offset, done.url);
//! # std::fs::remove_file(&path).ok();
//! # Ok(()) }
//! ```
//!
//! To resume later, keep `done.url` and call `.url(url)` on a new uploader of the same
//! source: it asks the server for its offset (`HEAD`) and sends only the rest.

pub use tusflow_core as core;
pub use tusflow_core::{
    Body, Capabilities, Error, Metadata, Operation, Request, Response, Result, protocol,
};

pub mod batch;
pub mod blocking;
pub mod client;
mod endpoint;
pub mod fleet;
pub mod plugins;
pub mod size;
pub mod upload;

#[cfg(feature = "auth")]
pub use tusflow_auth as auth;
#[cfg(feature = "checksum")]
pub use tusflow_checksum as checksum;
#[cfg(feature = "fingerprint-xxh3")]
pub use tusflow_fingerprint_xxh3 as fingerprint;
#[cfg(feature = "log")]
pub use tusflow_log as log;
#[cfg(feature = "rate-limit")]
pub use tusflow_rate_limit as rate_limit;
#[cfg(feature = "retry")]
pub use tusflow_retry as retry;

/// Batches shared by workers: the [`Ledger`](ledger::Ledger) trait, and the PostgreSQL
/// ledger (feature `ledger-postgres`).
pub mod ledger {
    pub use crate::core::ledger::*;
    #[cfg(feature = "ledger-postgres")]
    pub use tusflow_ledger_postgres as postgres;
}

/// URL storage: the [`UrlStore`](store::UrlStore) trait, the memory store, the redb
/// store (feature `store-redb`), and the PostgreSQL store that many machines share
/// (feature `ledger-postgres`).
pub mod store {
    pub use crate::core::store::*;
    #[cfg(feature = "ledger-postgres")]
    pub mod postgres {
        //! Upload URLs on PostgreSQL, shared by every machine.
        pub use tusflow_ledger_postgres::{PgStore, shown};
    }
    #[cfg(feature = "store-redb")]
    pub use tusflow_store_redb as redb;
}

pub use client::{Appended, Client, ClientBuilder, Created, UploadStatus};
pub use reqwest::Url;
pub use upload::{AbortHandle, Progress, Source, Uploaded, Uploader};
