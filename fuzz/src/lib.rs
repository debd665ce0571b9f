//! Shared code of the fuzz targets: see [`oracles`]. `tests/torture.rs` includes the same file
//! to replay crash inputs, so the regression tests check exactly what the targets check.

pub mod oracles;
