//! A moto server (the AWS emulator from PyPI) for tests: started on a loopback port the
//! system picks, stopped when dropped. `infra/test.sh` installs it into `.venv`; `WINMDM_MOTO_SERVER`
//! points elsewhere.
//!
//! The server is run single-threaded. `moto_server` serves requests on threads, and moto's
//! TransactWriteItems takes no lock, so two concurrent transactions can interleave — which
//! DynamoDB, whose transactions are serializable, never allows. Serving one request at a
//! time restores that guarantee while the code under test still sends concurrently.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    Asn1Subject, CertificateAuthorityConfiguration, CertificateAuthorityType, KeyAlgorithm,
    SigningAlgorithm, Validity, ValidityPeriodType,
};

/// moto's own server entry point, with `threaded=False`, on a port the system picks: the
/// socket is bound and listening before its port is printed, so no other process can take
/// the port in between and a connection made after the print waits in the backlog.
const SERIAL_MOTO: &str = r#"
import sys
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
server = make_server(sys.argv[1], 0, DomainDispatcherApplication(create_backend_app),
                     threaded=False, request_handler=MotoRequestHandler)
print(server.server_port, flush=True)
server.serve_forever()
"#;

/// The credentials and region moto accepts, in the environment, where the AWS SDK's
/// default chain — which `winmdm-local` uses, as on AWS — reads them.
///
/// `infra/test.sh` exports these same values before any test starts, so under it this
/// writes nothing. Run bare (`cargo test`), the first caller in a test binary sets them:
/// a write to the environment while other tests' threads may be reading it, which glibc
/// does not make safe — the reason the script exports them.
pub fn aws_test_environment() {
    const VARS: [(&str, &str); 3] = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in VARS {
            if std::env::var_os(name).is_none_or(|v| v != value) {
                // SAFETY: see above; never reached under infra/test.sh.
                unsafe { std::env::set_var(name, value) };
            }
        }
    });
}

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

/// The Python of the venv moto is installed in (its PyYAML also reads template.yaml).
pub fn venv_python() -> PathBuf {
    moto_binary().with_file_name("python")
}

impl Moto {
    pub async fn start() -> Self {
        let python = venv_python();
        let mut child = Command::new(python)
            .args(["-c", SERIAL_MOTO, "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let stdout = child.stdout.take().expect("moto_server's stdout");
        // From here on, dropping it (a panic included) stops the process.
        let mut moto = Self {
            child,
            endpoint: String::new(),
        };
        let first_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(60), first_line)
            .await
            .expect("moto_server printed its port within 60 s")
            .expect("reading moto_server's port")
            .expect("moto_server's stdout");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("moto_server did not start (printed {line:?})"));
        moto.endpoint = format!("http://127.0.0.1:{port}");
        moto
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
