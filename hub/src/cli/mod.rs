//! One-shot technician commands (`profiles`, `scan`, `read`, `simulate`, `keygen`), the `loadgen` benchmark
//! tool, the completion scripts and manual pages (`completions`), and shared CLI plumbing
//! (logging is `crate::logging`).

pub mod completions;
pub mod keygen;
pub mod loadgen;
pub mod profiles;
pub mod read;
pub mod scan;
pub mod simulate;
