//! outflow's source side (placeholder docs, replaced below).

pub mod ddl;
pub mod filter;
pub mod schema;
