//! Structured JSON logs (one object per line, CloudWatch-friendly). Spans carry the
//! request id, endpoint and, once known, the device id. Secrets are never logged: the wire
//! types redact passwords and tokens in their Debug output.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber on stdout; `RUST_LOG` overrides the default `info` level.
pub fn init() {
    init_with_writer(std::io::stdout);
}

/// The same subscriber writing elsewhere: the benchmarks time handlers with their logging
/// but send the lines to a sink.
pub fn init_with_writer<W>(writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
