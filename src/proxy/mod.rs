//! The proxy: takes every inbound message, asks the router where it goes, rewrites and sends.
