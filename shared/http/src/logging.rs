//! Structured JSON logs (one object per line, CloudWatch-friendly). Spans carry the
//! request id, endpoint and, once known, the device id. Secrets are never logged: the wire
//! types redact passwords and tokens in their Debug output.
//!
//! Every byte logged on Lambda is billed as CloudWatch Logs ingestion, once per request:
//! lines carry what an operator reads, nothing the log service already records (on Lambda
//! a line has no timestamp of its own: CloudWatch stamps each event).

use std::io::Write;
use std::sync::{Arc, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

type LineWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Where lines that are not tracing events (the metrics' EMF records) go: the same writer
/// as the logs.
static LINES: OnceLock<LineWriter> = OnceLock::new();

/// Installs the JSON subscriber on stdout; `RUST_LOG` overrides the default `info` level.
pub fn init() {
    init_with_writer(std::io::stdout);
}

/// The same subscriber writing elsewhere: the benchmarks time handlers with their logging
/// but send the lines to a sink (or count them).
pub fn init_with_writer<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(writer, on_lambda());
}

/// The subscriber as a Lambda function has it (no timestamps), writing elsewhere, with
/// metrics on: for the benchmark that measures the log bytes a request costs.
pub fn init_as_on_lambda<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    crate::metrics::enable();
    install(writer, true);
}

fn install<W>(writer: W, lambda: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let writer = Shared(Arc::new(writer));
    let lines = writer.0.clone();
    let _ = LINES.set(Box::new(move |line| {
        let _ = lines.make_writer().write_all(line);
    }));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false);
    let _ = if lambda {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Writes one line (a newline is added) where the logs go.
pub fn write_line(line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    match LINES.get() {
        Some(w) => w(&bytes),
        None => {
            let _ = std::io::stdout().lock().write_all(&bytes);
        }
    }
}

/// Whether this process is a Lambda function.
pub fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
}

/// One writer shared by the subscriber and [`write_line`].
struct Shared<W>(Arc<W>);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Shared<W> {
    type Writer = W::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }
}
