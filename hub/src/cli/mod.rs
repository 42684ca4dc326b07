//! One-shot technician commands (`profiles`, `scan`, `read`, `simulate`, `keygen`), the `loadgen` benchmark
//! tool, and shared CLI plumbing (logging is `crate::logging`).

pub mod keygen;
pub mod loadgen;
pub mod profiles;
pub mod read;
pub mod scan;
pub mod simulate;
