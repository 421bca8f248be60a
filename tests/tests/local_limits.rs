//! `winmdm-local` against clients that are slow or too many: each test performs the
//! attack over raw TCP and checks that the server hangs up (or holds the client back)
//! within the configured limit. The limits are shortened so the tests take a second or
//! two; without them every one of these clients would hold its connection forever.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use winmdm_e2e::TestServer;

const DISCOVERY_GET: &[u8] =
    b"GET /EnrollmentServer/Discovery.svc HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Reads until the server closes the connection (a reset counts as closed) and returns
/// what it sent; panics if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("the server still holds the connection after {within:?}"));
    got
}

/// Slowloris: request headers sent a byte at a time, never finishing in time.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let s = TestServer::start_with(|o| o.header_timeout = Duration::from_millis(500)).await;
    // From before the connection: the server's timer cannot have started earlier.
    let started = Instant::now();
    let mut c = TcpStream::connect(s.server.addr).await.unwrap();
    let (mut rd, mut wr) = c.split();
    // 100 bytes at one per 50 ms: 5 s to send the headers, ten times the limit.
    let headers = format!(
        "GET /EnrollmentServer/Discovery.svc HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40)
    );
    let trickle = async {
        for b in headers.as_bytes() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut got = Vec::new();
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::select! {
        _ = closed => {}
        _ = trickle => panic!("the server waited for the whole slow request"),
    }
    let elapsed = started.elapsed();
    assert!(
        got.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
}

/// A connection that opens and sends nothing, and a keep-alive connection left idle after
/// a response, are both closed after the header timeout.
#[tokio::test]
async fn idle_connections_are_closed() {
    let s = TestServer::start_with(|o| o.header_timeout = Duration::from_millis(500)).await;

    let mut silent = TcpStream::connect(s.server.addr).await.unwrap();
    let got = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(got.is_empty());

    let started = Instant::now();
    let mut keep_alive = TcpStream::connect(s.server.addr).await.unwrap();
    keep_alive.write_all(DISCOVERY_GET).await.unwrap();
    let got = closed_within(&mut keep_alive, Duration::from_secs(3)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// A body that stops arriving: the request is answered 408 and the connection closed.
#[tokio::test]
async fn slow_bodies_get_408() {
    let s = TestServer::start_with(|o| o.body_timeout = Duration::from_millis(500)).await;
    let started = Instant::now();
    let mut c = TcpStream::connect(s.server.addr).await.unwrap();
    c.write_all(
        b"POST /EnrollmentServer/Discovery.svc HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/soap+xml\r\nContent-Length: 1000\r\n\r\n<s:Envelope",
    )
    .await
    .unwrap();
    let got = closed_within(&mut c, Duration::from_secs(3)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// Over the connection cap, a client is not served until a connection closes.
#[tokio::test]
async fn connections_over_the_cap_wait() {
    let s = TestServer::start_with(|o| o.max_connections = 2).await;
    // Two connections that send nothing hold both permits (the header timeout is 20 s).
    let first = TcpStream::connect(s.server.addr).await.unwrap();
    let _second = TcpStream::connect(s.server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A third connection completes in the kernel's backlog but is not served.
    let mut third = TcpStream::connect(s.server.addr).await.unwrap();
    third
        .write_all(
            b"GET /EnrollmentServer/Discovery.svc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served while two were open"
    );

    // One closes: the third is taken and answered.
    drop(first);
    let got = closed_within(&mut third, Duration::from_secs(3)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// HTTPS: a client that connects and never completes the TLS handshake is dropped.
#[tokio::test]
async fn stalled_tls_handshakes_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server-key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_with(|o| {
        o.tls_cert = Some(cert_path.clone());
        o.tls_key = Some(key_path.clone());
        o.tls_handshake_timeout = Duration::from_millis(500);
    })
    .await;

    // Sends nothing at all.
    let started = Instant::now();
    let mut silent = TcpStream::connect(s.server.addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(400));

    // Starts a handshake record (a ClientHello of 512 bytes) and stops after its header.
    let mut partial = TcpStream::connect(s.server.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    closed_within(&mut partial, Duration::from_secs(3)).await;
}
