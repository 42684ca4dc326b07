//! One-shot technician commands (`profiles`, `scan`, `read`, `simulate`, `keygen`), the `loadgen` benchmark
//! tool, the completion scripts and manual pages (`completions`), and shared CLI plumbing.

pub mod completions;
pub mod keygen;
pub mod loadgen;
pub mod profiles;
pub mod read;
pub mod scan;
pub mod simulate;

/// Log to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
