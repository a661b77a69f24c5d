//! outflow's command implementations, as a library so that the end-to-end tests and the
//! benches drive exactly the code the binary runs.

pub mod certs;
pub mod config;
pub mod estimate;
pub mod inspect;
pub mod json;
pub mod relay;
pub mod tail;
pub mod verify;
