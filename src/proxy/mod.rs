//! The proxy: takes every inbound message, asks the router where it goes, rewrites and sends.

pub mod clients;
pub mod flood;
mod handler;
pub mod rewrite;
pub mod router;
pub mod token;
mod trusted;

pub use handler::Proxy;

#[cfg(test)]
mod tests;
