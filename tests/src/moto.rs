//! A moto server (the AWS emulator from PyPI) for tests: started on a free loopback port,
//! stopped when dropped. `infra/test.sh` installs it into `.venv`; `WINMDM_MOTO_SERVER`
//! points elsewhere.
//!
//! The server is run single-threaded. `moto_server` serves requests on threads, and moto's
//! TransactWriteItems takes no lock, so two concurrent transactions can interleave — which
//! DynamoDB, whose transactions are serializable, never allows. Serving one request at a
//! time restores that guarantee while the code under test still sends concurrently.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    Asn1Subject, CertificateAuthorityConfiguration, CertificateAuthorityType, KeyAlgorithm,
    SigningAlgorithm, Validity, ValidityPeriodType,
};

/// moto's own server entry point, with `threaded=False`.
const SERIAL_MOTO: &str = r#"
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"#;

pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WINMDM_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join(".venv/bin/moto_server");
    assert!(
        p.exists(),
        "moto_server not found at {}: run infra/test.sh (it installs moto into .venv) or set WINMDM_MOTO_SERVER",
        p.display()
    );
    p
}

/// Whether moto answers on `port`: its own API, not just anything listening there (the
/// port was free when chosen, but another test's server may have taken it since).
async fn moto_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut c) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let probe = b"GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut answer = Vec::new();
    let read = async {
        c.write_all(probe).await?;
        c.read_to_end(&mut answer).await
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(_)) => {
            let head = String::from_utf8_lossy(&answer);
            head.starts_with("HTTP/1.0 200") && head.contains("Werkzeug")
        }
        _ => false,
    }
}

impl Moto {
    pub async fn start() -> Self {
        // A port is free when chosen and taken by moto a second later; if something else
        // took it in between, moto exits and is started again on another.
        for _ in 0..3 {
            if let Some(moto) = Self::start_on_a_free_port().await {
                return moto;
            }
        }
        panic!("moto_server did not start (three ports tried)");
    }

    async fn start_on_a_free_port() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let python = moto_binary().with_file_name("python");
        let mut child = Command::new(python)
            .args(["-c", SERIAL_MOTO, "127.0.0.1", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().expect("moto_server's status").is_some() {
                return None;
            }
            if moto_answers(port).await {
                return Some(Self { child, endpoint });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("moto_server did not answer within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    /// A DynamoDB store on a fresh table.
    pub async fn dynamo_store(&self, table: &str) -> winmdm_aws::DynamoStore {
        let client = aws_sdk_dynamodb::Client::new(&self.sdk_config().await);
        let store = winmdm_aws::DynamoStore::new(client, table);
        store
            .create_table_if_missing()
            .await
            .expect("table created");
        store
    }

    /// Creates and activates a root CA the way one does on AWS: create, sign its CSR with
    /// the RootCACertificate template, import the certificate. Returns its ARN.
    pub async fn root_ca(&self) -> String {
        let pca = aws_sdk_acmpca::Client::new(&self.sdk_config().await);
        let arn = pca
            .create_certificate_authority()
            .certificate_authority_type(CertificateAuthorityType::Root)
            .certificate_authority_configuration(
                CertificateAuthorityConfiguration::builder()
                    .key_algorithm(KeyAlgorithm::Rsa2048)
                    .signing_algorithm(SigningAlgorithm::Sha256Withrsa)
                    .subject(
                        Asn1Subject::builder()
                            .common_name("winmdm test root")
                            .organization("winmdm")
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("create CA")
            .certificate_authority_arn
            .unwrap();
        let csr = pca
            .get_certificate_authority_csr()
            .certificate_authority_arn(&arn)
            .send()
            .await
            .unwrap()
            .csr
            .unwrap();
        let cert_arn = pca
            .issue_certificate()
            .certificate_authority_arn(&arn)
            .csr(Blob::new(csr))
            .signing_algorithm(SigningAlgorithm::Sha256Withrsa)
            .template_arn("arn:aws:acm-pca:::template/RootCACertificate/V1")
            .validity(
                Validity::builder()
                    .r#type(ValidityPeriodType::Years)
                    .value(10)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("issue root")
            .certificate_arn
            .unwrap();
        let cert = pca
            .get_certificate()
            .certificate_authority_arn(&arn)
            .certificate_arn(cert_arn)
            .send()
            .await
            .unwrap()
            .certificate
            .unwrap();
        pca.import_certificate_authority_certificate()
            .certificate_authority_arn(&arn)
            .certificate(Blob::new(cert))
            .send()
            .await
            .expect("import root");
        arn
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a table's stream the way the template's event source mapping does (device items
/// only, in order, from the start) and hands each batch to the `checkin-counts` handler's
/// code (`winmdm_aws::checkin_counts`): moto keeps streams but runs no triggers.
pub struct StreamPump {
    endpoint: String,
    http: crate::client::HttpClient,
    counts: winmdm_aws::checkin_counts::CheckinCounts,
    /// Each shard's next iterator.
    iterators: tokio::sync::Mutex<Vec<String>>,
    applied: tokio::sync::Mutex<winmdm_aws::checkin_counts::Applied>,
}

impl StreamPump {
    pub async fn new(moto: &Moto, table: &str) -> Self {
        let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
        let stream_arn = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the table has a stream");
        let mut pump = Self {
            endpoint: moto.endpoint.clone(),
            http: crate::client::HttpClient::new(),
            counts: winmdm_aws::checkin_counts::CheckinCounts::new(client, table),
            iterators: Default::default(),
            applied: Default::default(),
        };
        let shards = pump
            .call(
                "DescribeStream",
                serde_json::json!({"StreamArn": stream_arn}),
            )
            .await;
        let mut iterators = Vec::new();
        for shard in shards["StreamDescription"]["Shards"].as_array().unwrap() {
            let it = pump
                .call(
                    "GetShardIterator",
                    serde_json::json!({
                        "StreamArn": stream_arn,
                        "ShardId": shard["ShardId"],
                        "ShardIteratorType": "TRIM_HORIZON",
                    }),
                )
                .await;
            iterators.push(it["ShardIterator"].as_str().unwrap().to_owned());
        }
        assert!(!iterators.is_empty(), "the stream has shards");
        pump.iterators = tokio::sync::Mutex::new(iterators);
        pump
    }

    async fn call(&self, op: &str, body: serde_json::Value) -> serde_json::Value {
        let target = format!("DynamoDBStreams_20120810.{op}");
        let r = self
            .http
            .send(
                "POST",
                &format!("{}/", self.endpoint),
                &[
                    ("content-type", "application/x-amz-json-1.0"),
                    ("x-amz-target", &target),
                    // moto reads the region from the credential scope; it checks no signature.
                    (
                        "authorization",
                        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00",
                    ),
                ],
                body.to_string().into_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{op}: {}", r.text());
        r.json()
    }

    /// Delivers every record written since the last call, as one batch per shard.
    pub async fn pump(&self) -> winmdm_aws::checkin_counts::Applied {
        let mut iterators = self.iterators.lock().await;
        let mut total = winmdm_aws::checkin_counts::Applied::default();
        for it in iterators.iter_mut() {
            let out = self
                .call("GetRecords", serde_json::json!({"ShardIterator": *it}))
                .await;
            if let Some(next) = out["NextShardIterator"].as_str() {
                *it = next.to_owned();
            }
            let event: winmdm_aws::checkin_counts::StreamEvent =
                serde_json::from_value(out).unwrap();
            // The event source mapping's filter: device items only.
            let records: Vec<_> = event
                .records
                .into_iter()
                .filter(|r| r.is_device_item())
                .collect();
            if records.is_empty() {
                continue;
            }
            total += self.counts.apply(&records).await.unwrap();
        }
        *self.applied.lock().await += total.clone();
        total
    }

    /// Everything delivered so far.
    pub async fn applied(&self) -> winmdm_aws::checkin_counts::Applied {
        self.applied.lock().await.clone()
    }
}

#[async_trait::async_trait]
impl crate::conformance::Settle for StreamPump {
    async fn settle(&self) {
        self.pump().await;
    }
}
