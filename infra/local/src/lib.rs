//! `winmdm-local`: every function's handler on one port, on the embedded store and local
//! CA. Requests go through the same `winmdm_http` handlers the Lambda functions run; this
//! crate only does what API Gateway does on AWS (TCP, TLS, routing, body limits, and the
//! limits that keep slow or numerous clients from exhausting the server: a connection cap
//! and timeouts on the TLS handshake, request headers, request bodies and response writes).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};
use winmdm_core::config::{EnrollmentConfig, PreferredAuth};
use winmdm_http::manage::ClientCertificate;
use winmdm_http::respond::MAX_BODY_BYTES;
use winmdm_http::state::{AwsBackends, admin_token_path};
use winmdm_http::{AppState, router};

/// Command-line options of `winmdm-local`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "winmdm-local",
    about = "Run every winmdm endpoint on one port with the embedded store and local CA"
)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the store, the CA and the generated secrets live.
    #[arg(long, default_value = ".winmdm")]
    pub data_dir: PathBuf,
    /// Base URL devices use to reach this server (default: derived from --listen).
    #[arg(long)]
    pub public_url: Option<url::Url>,
    /// Base URL of the management endpoint (default: the public URL).
    #[arg(long)]
    pub management_url: Option<url::Url>,
    /// Preferred enrollment auth policy: federated or onpremise.
    #[arg(long, default_value = "federated", value_parser = parse_auth)]
    pub auth_policy: PreferredAuth,
    /// An https appru the federated login page may post to (repeatable).
    #[arg(long = "appru-allow")]
    pub appru_allow: Vec<String>,
    /// Lifetime of issued device certificates, in days.
    #[arg(long, default_value_t = 365)]
    pub cert_validity_days: i64,
    /// How long a renewed-away certificate is still accepted, in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub renewal_grace_seconds: i64,
    /// TLS certificate chain (PEM); serve HTTPS when given with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that device client certificates must chain to, when serving
    /// HTTPS (default: the local CA). Client certificates are optional, as on a shared
    /// enrollment and management host.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// Keep devices in this DynamoDB table instead of the embedded store.
    #[arg(long)]
    pub table: Option<String>,
    /// DynamoDB endpoint override (an emulator such as moto).
    #[arg(long, requires = "table")]
    pub dynamodb_endpoint: Option<String>,
    /// Create the DynamoDB table if it does not exist (for emulators and first runs).
    #[arg(long, requires = "table")]
    pub create_table: bool,
    /// Sign device certificates with this ACM Private CA instead of the local CA.
    #[arg(long)]
    pub pca_arn: Option<String>,
    /// ACM PCA endpoint override (an emulator such as moto).
    #[arg(long, requires = "pca_arn")]
    pub pca_endpoint: Option<String>,
    /// Sign device certificates with this KMS key (RSA_2048 or ECC_NIST_P256,
    /// SIGN_VERIFY) instead of the local CA; needs --kms-ca-cert.
    #[arg(long, conflicts_with = "pca_arn", requires = "kms_ca_cert")]
    pub kms_key_id: Option<String>,
    /// The KMS key's CA certificate (PEM). If the file does not exist, a self-signed root
    /// is made through KMS and written there (once).
    #[arg(long, requires = "kms_key_id")]
    pub kms_ca_cert: Option<PathBuf>,
    /// KMS endpoint override (an emulator such as moto).
    #[arg(long, requires = "kms_key_id")]
    pub kms_endpoint: Option<String>,
    /// The local CA's key: `rsa-2048` (what a new CA gets by default) or `ecdsa-p256`
    /// (signs about ten times faster). Chosen when the CA is made in the data directory;
    /// an existing CA with another key is refused, not replaced.
    #[arg(long, conflicts_with_all = ["pca_arn", "kms_key_id"])]
    pub ca_key: Option<winmdm_embedded::LocalCaKey>,
    /// Accept Entra ID enrollments from this tenant (id; repeat or comma-separate for more).
    #[arg(
        long = "entra-tenant",
        value_delimiter = ',',
        requires = "entra_audiences"
    )]
    pub entra_tenants: Vec<String>,
    /// The MDM application's ID URI and/or client id Entra tokens must be for.
    #[arg(
        long = "entra-audience",
        value_delimiter = ',',
        requires = "entra_tenants"
    )]
    pub entra_audiences: Vec<String>,
    /// Where Entra's signing keys are read (default Microsoft's common JWKS).
    #[arg(long, requires = "entra_tenants")]
    pub entra_jwks_url: Option<String>,
    /// The text of the terms-of-use page (paragraphs separated by blank lines).
    #[arg(long, requires = "entra_tenants")]
    pub entra_terms_text: Option<String>,
    /// AWS region for DynamoDB and ACM PCA (default: the standard AWS configuration).
    #[arg(long)]
    pub region: Option<String>,
    /// Most connections served at once; further clients wait in the listen backlog until
    /// one closes.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Longest a TLS handshake may take (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Longest the server waits for a request's headers, counted from when the connection
    /// opens or the previous response went out: also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Longest a request's body may take to arrive once its headers are in (answered 408).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// A response write (or TLS handshake write) that makes no progress for this long
    /// closes the connection: a client that stops reading cannot hold it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,
}

fn parse_auth(s: &str) -> Result<PreferredAuth, String> {
    s.parse()
}

/// `500ms`, `10s`, `2m`, or a bare number of seconds; must be positive.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 10s or 2m"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?} is not a duration such as 500ms, 10s or 2m")),
    };
    if d.is_zero() {
        return Err("a timeout must be positive".into());
    }
    Ok(d)
}

/// The connection limits of a running server.
#[derive(Debug, Clone, Copy)]
struct Limits {
    tls_handshake: Duration,
    header: Duration,
    body: Duration,
    write: Duration,
}

impl Options {
    /// Defaults for tests and embedding: an ephemeral port on loopback.
    pub fn ephemeral(data_dir: PathBuf) -> Self {
        let mut o = Options::parse_from(["winmdm-local"]);
        o.listen = "127.0.0.1:0".parse().expect("valid address");
        o.data_dir = data_dir;
        o
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Init(#[from] winmdm_http::state::InitError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid option: {0}")]
    Options(String),
}

/// A running server; dropping it (or calling [`LocalServer::shutdown`]) stops it.
pub struct LocalServer {
    pub addr: SocketAddr,
    pub base_url: url::Url,
    pub data_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    pub fn admin_token_path(&self) -> PathBuf {
        admin_token_path(&self.data_dir)
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.admin_token_path())
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Runs until the process gets Ctrl-C.
    pub async fn wait_for_ctrl_c(self) {
        let _ = tokio::signal::ctrl_c().await;
        info!("shutting down");
        self.shutdown().await;
    }
}

/// Binds, builds the state and starts serving in the background.
pub async fn start(opts: Options) -> Result<LocalServer, LocalError> {
    if opts.cert_validity_days <= 0 {
        return Err(LocalError::Options(
            "--cert-validity-days must be positive".into(),
        ));
    }
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| LocalError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LocalError::Listen {
        addr: opts.listen,
        source,
    })?;
    let scheme = if opts.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let base_url = match &opts.public_url {
        Some(u) => u.clone(),
        None => url::Url::parse(&format!("{scheme}://{addr}")).expect("valid URL"),
    };
    let mut config = EnrollmentConfig::new(base_url.clone());
    if let Some(m) = &opts.management_url {
        config.management_base_url = m.clone();
    }
    config.auth_policy = opts.auth_policy;
    config.appru_allow_list = opts.appru_allow.clone();
    config.cert_validity = time::Duration::days(opts.cert_validity_days);
    config.renewal_grace = time::Duration::seconds(opts.renewal_grace_seconds.max(0));
    let aws = AwsBackends {
        region: opts.region.clone(),
        table: opts.table.clone(),
        // No stream consumer runs beside winmdm-local: its writes keep every counter.
        checkin_counts_from_stream: false,
        dynamodb_endpoint: opts.dynamodb_endpoint.clone(),
        pca_arn: opts.pca_arn.clone(),
        pca_endpoint: opts.pca_endpoint.clone(),
        kms: match (&opts.kms_key_id, &opts.kms_ca_cert) {
            (Some(key_id), Some(path)) => Some(kms_ca(&opts, key_id, path).await?),
            _ => None,
        },
    };
    if let (true, Some(table)) = (opts.create_table, &opts.table) {
        let sdk = winmdm_aws::sdk_config(opts.region.clone(), None).await;
        let client = winmdm_aws::dynamodb_client(&sdk, opts.dynamodb_endpoint.as_deref());
        winmdm_aws::DynamoStore::new(client, table.clone())
            .create_table_if_missing()
            .await
            .map_err(|e| LocalError::Options(format!("creating table {table}: {e}")))?;
    }
    if let Some(key) = opts.ca_key {
        winmdm_http::state::prepare_local_ca(&opts.data_dir, key)?;
    }
    let mut state = AppState::with_aws(&opts.data_dir, config, &aws, None, None).await?;
    if !opts.entra_tenants.is_empty() {
        let mut entra = winmdm_http::state::EntraSettings::new(
            opts.entra_tenants.clone(),
            opts.entra_audiences.clone(),
        );
        if let Some(u) = &opts.entra_jwks_url {
            entra.jwks_url = u.clone();
        }
        entra.terms_text = opts.entra_terms_text.clone();
        state.enable_entra(entra);
    }
    let state = Arc::new(state);
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            let client_roots = match &opts.client_ca {
                Some(path) => tls::read_certs(path)?,
                None => {
                    let chain = state
                        .ca
                        .chain()
                        .await
                        .map_err(|e| LocalError::Tls(format!("CA certificate: {e}")))?;
                    vec![chain.root_der.clone().into()]
                }
            };
            Some(tls::acceptor(cert, key, client_roots)?)
        }
        _ => None,
    };

    let limits = Limits {
        tls_handshake: opts.tls_handshake_timeout,
        header: opts.header_timeout,
        body: opts.body_timeout,
        write: opts.write_timeout,
    };
    let permits = Arc::new(Semaphore::new(opts.max_connections as usize));
    let (shutdown, stop) = watch::channel(false);
    let conn_stop = stop.clone();
    let task = tokio::spawn(accept_loop(listener, permits, stop, move |stream, peer| {
        serve_connection(
            state.clone(),
            tls.clone(),
            limits,
            stream,
            peer,
            conn_stop.clone(),
        )
    }));
    Ok(LocalServer {
        addr,
        base_url,
        data_dir: opts.data_dir,
        shutdown,
        task,
    })
}

/// Where connections come from: a TCP listener, or a fake one in tests.
trait Listener: Send + 'static {
    type Io: Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// Accepts connections until shutdown, serving each on its own task while holding one of
/// `permits`: at the cap it waits for a connection to end rather than accepting (the
/// kernel's backlog holds the rest). On shutdown it stops accepting and waits for the
/// connections to finish their requests in flight.
async fn accept_loop<L, F, Fut>(
    mut listener: L,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    mut serve: F,
) where
    L: Listener,
    F: FnMut(L::Io, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        // Forget finished connections, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((io, peer)) => {
                backoff.reset();
                let conn = serve(io, peer);
                connections.spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => {
                drop(permit);
                let Some(delay) = backoff.on_error(&e) else {
                    debug!(error = %e, "accept failed for one connection");
                    continue;
                };
                // Out of file descriptors, memory or buffers: retrying at once would spin
                // (and log) as fast as the CPU allows, so wait, longer each time.
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    // Stop accepting, let in-flight requests finish, close idle keep-alive connections,
    // and only then drop the state (releasing the store's file lock).
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The wait after a failed accept: none for errors that concern one connection (it was
/// reset or aborted before we took it), otherwise 10 ms doubling up to 1 s, until an
/// accept succeeds.
#[derive(Debug, Default)]
struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn reset(&mut self) {
        self.delay = None;
    }

    fn on_error(&mut self, e: &io::Error) -> Option<Duration> {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
        ) {
            return None;
        }
        let next = match self.delay {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.delay = Some(next);
        Some(next)
    }
}

async fn serve_connection<S>(
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stream: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = WriteTimeout::new(stream, limits.write);
    let service = |cert: Option<Arc<Vec<u8>>>| {
        service_fn(move |mut req: hyper::Request<Incoming>| {
            // The TCP peer, for the password-guess limiter (see winmdm_http::client_addr).
            req.extensions_mut()
                .insert(winmdm_http::client_addr::ClientAddr(peer));
            let state = state.clone();
            let cert = cert.clone();
            async move { Ok::<_, Infallible>(handle(&state, req, cert, limits.body).await) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header);
    let result = match tls {
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout(limits.tls_handshake, acceptor.accept(stream)) => r,
                _ = stop.changed() => return,
            };
            match handshake {
                Ok(Ok(s)) => {
                    // Verified against the client CA during the handshake.
                    let cert = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(c.as_ref().to_vec()));
                    let conn = builder.serve_connection(TokioIo::new(s), service(cert));
                    drive(conn, &mut stop).await
                }
                Ok(Err(e)) => {
                    warn!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    info!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
        None => {
            let conn = builder.serve_connection(TokioIo::new(stream), service(None));
            drive(conn, &mut stop).await
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => info!(%peer, error = %e, "connection timed out"),
        Err(e) => warn!(%peer, error = %e, "connection error"),
    }
}

/// A stream whose writes fail with `TimedOut` once one has made no progress for the
/// limit: a client that stops reading (its receive window full) loses its connection
/// instead of holding it, and its connection permit, forever.
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a write-side poll through, timing how long it stays pending.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// Serves a connection until it ends, or until shutdown, when it finishes the request in
/// flight and closes.
async fn drive<I, S>(
    conn: http1::Connection<I, S>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Turns a hyper request into the `lambda_http::Request` the handlers take, as API Gateway
/// would, and the handler's response back.
async fn handle(
    state: &AppState,
    req: hyper::Request<Incoming>,
    client_cert: Option<Arc<Vec<u8>>>,
    body_timeout: Duration,
) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    if let Some(c) = client_cert {
        parts
            .extensions
            .insert(ClientCertificate(c.as_ref().clone()));
    }
    let collected =
        tokio::time::timeout(body_timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Err(_) => {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                b"the request body took too long to arrive\n",
            )));
            *r.status_mut() = hyper::StatusCode::REQUEST_TIMEOUT;
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return r;
        }
        Ok(Err(e)) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, msg) = if too_big {
                (
                    hyper::StatusCode::PAYLOAD_TOO_LARGE,
                    "request body is larger than 1 MiB\n",
                )
            } else {
                (
                    hyper::StatusCode::BAD_REQUEST,
                    "could not read the request body\n",
                )
            };
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(msg.as_bytes())));
            *r.status_mut() = status;
            return r;
        }
    };
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else {
        lambda_http::Body::Binary(bytes.to_vec())
    };
    let resp = router::dispatch(state, http::Request::from_parts(parts, body)).await;
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(t) => Bytes::from(t),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::server::WebPkiClientVerifier;

    use super::LocalError;

    fn read(p: &Path) -> Result<Vec<u8>, LocalError> {
        std::fs::read(p).map_err(|e| LocalError::Tls(format!("{}: {e}", p.display())))
    }

    pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LocalError> {
        let certs = rustls_pemfile::certs(&mut read(path)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LocalError::Tls(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(LocalError::Tls(format!(
                "{}: no certificates",
                path.display()
            )));
        }
        Ok(certs)
    }

    /// HTTPS with optional client certificates: enrollment requests come without one,
    /// management requests with the device's certificate.
    pub fn acceptor(
        cert: &Path,
        key: &Path,
        client_roots: Vec<CertificateDer<'static>>,
    ) -> Result<TlsAcceptor, LocalError> {
        let certs = read_certs(cert)?;
        let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(|e| LocalError::Tls(format!("{}: {e}", key.display())))?
            .ok_or_else(|| LocalError::Tls(format!("{}: no private key", key.display())))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for c in client_roots {
            roots
                .add(c)
                .map_err(|e| LocalError::Tls(format!("client CA: {e}")))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| LocalError::Tls(e.to_string()))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LocalError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| LocalError::Tls(e.to_string()))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// The KMS CA's settings: its certificate from `path`, made through KMS (a self-signed
/// root, 20 years) and written there the first time.
async fn kms_ca(
    opts: &Options,
    key_id: &str,
    path: &std::path::Path,
) -> Result<winmdm_http::state::KmsCaConfig, LocalError> {
    let ca_der = match std::fs::read_to_string(path) {
        Ok(pem) => {
            let mut certs = winmdm_aws::pem_certificates(&pem);
            match (certs.pop(), certs.is_empty()) {
                (Some(der), true) => der,
                _ => {
                    return Err(LocalError::Options(format!(
                        "{} must hold exactly one PEM certificate",
                        path.display()
                    )));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let sdk = winmdm_aws::sdk_config(opts.region.clone(), None).await;
            let client = winmdm_aws::kms_client(&sdk, opts.kms_endpoint.as_deref());
            let der = winmdm_aws::kms_ca::create_root(
                &client,
                key_id,
                "winmdm device root CA",
                time::Duration::days(20 * 365),
            )
            .await
            .map_err(|e| LocalError::Options(format!("making the KMS CA certificate: {e}")))?;
            std::fs::write(path, winmdm_aws::kms_ca::pem(&der))
                .map_err(|e| LocalError::Options(format!("{}: {e}", path.display())))?;
            info!(path = %path.display(), "made the KMS CA certificate");
            der
        }
        Err(e) => return Err(LocalError::Options(format!("{}: {e}", path.display()))),
    };
    Ok(winmdm_http::state::KmsCaConfig {
        key_id: key_id.to_owned(),
        certificate: winmdm_http::state::KmsCaCertificate::Given {
            ca_der,
            root_der: None,
        },
        endpoint: opts.kms_endpoint.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn accept_backoff_grows_to_a_second_and_resets() {
        let emfile = io::Error::from_raw_os_error(24);
        let mut b = AcceptBackoff::default();
        let delays: Vec<u64> = (0..9)
            .map(|_| b.on_error(&emfile).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.on_error(&emfile), Some(Duration::from_millis(10)));
        // A connection reset before we took it is that connection's problem: no wait.
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.on_error(&aborted), None);
    }

    /// A listener whose every accept fails as when the process is out of file descriptors.
    struct OutOfFds(Arc<AtomicUsize>);

    impl Listener for OutOfFds {
        type Io = ();
        fn accept(&mut self) -> impl Future<Output = io::Result<((), SocketAddr)>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            // EMFILE
            std::future::ready(Err(io::Error::from_raw_os_error(24)))
        }
    }

    /// Before the backoff, a failing accept was retried at once, forever: millions of
    /// attempts (and log lines) a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_accepts_back_off() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            OutOfFds(calls.clone()),
            Arc::new(Semaphore::new(4)),
            stop,
            |_, _| async {},
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let n = calls.load(Ordering::SeqCst);
        // 0, 10, 30, 70, 150, 310 ms: six attempts in the first 400 ms.
        assert!((2..=8).contains(&n), "{n} accept attempts in 400 ms");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the loop stops during a backoff")
            .unwrap();
    }

    #[tokio::test]
    async fn a_stalled_write_times_out_and_a_slow_one_does_not() {
        // The peer never reads: the 64-byte pipe fills and the write stalls.
        let (server, _client) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(server, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(2), w.write_all(&[0u8; 4096]))
            .await
            .expect("the write gives up")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(1));

        // The peer reads slowly but steadily: every stall is shorter than the limit.
        let (server, mut client) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match client.read(&mut buf).await.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        // A limit 15 times the reader's 20 ms pace, so that a pause of the test's one
        // thread (a loaded machine) does not read as a stall; 4 KiB take ≈ 1.3 s in all,
        // well past the limit, so only a limit on each stall lets the write through.
        let mut w = WriteTimeout::new(server, Duration::from_millis(300));
        w.write_all(&[0u8; 4096]).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 4096);
    }
}
