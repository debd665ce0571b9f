//! The proxy: takes every inbound message, asks the router where it goes, rewrites and sends;
//! keeps a transaction where a request leaves a reliable transport for UDP.

pub mod action;
pub mod branch;
pub mod clients;
pub mod decisions;
pub mod flood;
mod handler;
mod identity;
pub mod media;
mod moved;
pub mod rewrite;
pub mod router;
pub mod status;
pub mod token;
pub mod transaction;
mod trusted;

pub use handler::{Proxy, Services};

#[cfg(test)]
mod handler_tests;
#[cfg(test)]
mod tests;
