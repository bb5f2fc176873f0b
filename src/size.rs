//! Human byte sizes: `1048576`, `8MiB`, `16 MiB`, `1.5 GB` (see
//! [`tusflow_core::config::parse_size`]).

pub use crate::core::config::{parse_duration, parse_size};
