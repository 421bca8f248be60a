//! `winmdm-local`: every function's handler on one port, on the embedded store and local
//! CA. Requests go through the same `winmdm_http` handlers the Lambda functions run; this
//! crate only does what API Gateway does on AWS (TCP, TLS, routing, body limits).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
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
    /// AWS region for DynamoDB and ACM PCA (default: the standard AWS configuration).
    #[arg(long)]
    pub region: Option<String>,
}

fn parse_auth(s: &str) -> Result<PreferredAuth, String> {
    s.parse()
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
        dynamodb_endpoint: opts.dynamodb_endpoint.clone(),
        pca_arn: opts.pca_arn.clone(),
        pca_endpoint: opts.pca_endpoint.clone(),
    };
    if let (true, Some(table)) = (opts.create_table, &opts.table) {
        let sdk = winmdm_aws::sdk_config(opts.region.clone(), None).await;
        let client = winmdm_aws::dynamodb_client(&sdk, opts.dynamodb_endpoint.as_deref());
        winmdm_aws::DynamoStore::new(client, table.clone())
            .create_table_if_missing()
            .await
            .map_err(|e| LocalError::Options(format!("creating table {table}: {e}")))?;
    }
    let state = Arc::new(AppState::with_aws(&opts.data_dir, config, &aws, None, None).await?);
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

    let (shutdown, mut stop) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            connections.spawn(serve_connection(
                state.clone(),
                tls.clone(),
                stream,
                peer,
                stop.clone(),
            ));
        }
        // Stop accepting, let in-flight requests finish, close idle keep-alive connections,
        // and only then drop the state (releasing the store's file lock).
        while connections.join_next().await.is_some() {}
    });
    Ok(LocalServer {
        addr,
        base_url,
        data_dir: opts.data_dir,
        shutdown,
        task,
    })
}

async fn serve_connection(
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let service = |cert: Option<Arc<Vec<u8>>>| {
        service_fn(move |req| {
            let state = state.clone();
            let cert = cert.clone();
            async move { Ok::<_, Infallible>(handle(&state, req, cert).await) }
        })
    };
    let result = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(s) => {
                // Verified against the client CA during the handshake.
                let cert = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.as_ref().to_vec()));
                let conn = http1::Builder::new().serve_connection(TokioIo::new(s), service(cert));
                drive(conn, &mut stop).await
            }
            Err(e) => {
                warn!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        },
        None => {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service(None));
            drive(conn, &mut stop).await
        }
    };
    if let Err(e) = result {
        warn!(%peer, error = %e, "connection error");
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
) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    if let Some(c) = client_cert {
        parts
            .extensions
            .insert(ClientCertificate(c.as_ref().clone()));
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
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
