//! The local certificate authority: a root generated on first start and kept in the data
//! directory, signing device certificates with SHA-256. Its key is RSA-2048 unless the
//! operator chose ECDSA P-256 when the CA was made ([`LocalCaKey`]); the key type is
//! fixed from then on, because every enrolled device's certificate chains to that root.

use std::path::Path;

use async_trait::async_trait;
use rcgen::{
    Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SignatureAlgorithm,
    SubjectPublicKeyInfo,
};
use time::{Duration, OffsetDateTime};
use winmdm_core::ca::{CaChain, CaError, CertificateAuthority, IssueRequest, IssuedCertificate};
use winmdm_core::cert_profile;

const KEY_FILE: &str = "ca-key.pem";
const CERT_FILE: &str = "ca-cert.der";
const ROOT_VALIDITY: Duration = Duration::days(20 * 365);

pub struct LocalCa {
    chain: std::sync::Arc<CaChain>,
    issuer: Issuer<'static, KeyPair>,
    key: LocalCaKey,
}

/// The local CA's key type. Both are key types Windows, API Gateway's mTLS truststore and
/// the KMS-keyed CA accept; the device's own key stays whatever its CSR holds (RSA-2048
/// from Windows).
///
/// RSA-2048 is the default. An ECDSA P-256 signature costs about a tenth of an RSA-2048
/// one (27 µs against 258 µs here, BENCHMARKS.md), which is most of a federated
/// enrollment's CPU on a busy small host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalCaKey {
    #[default]
    Rsa2048,
    EcdsaP256,
}

impl LocalCaKey {
    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Self::Rsa2048 => &PKCS_RSA_SHA256,
            Self::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
        }
    }

    /// The key type of a stored CA key, or `None` for any other.
    fn of(key: &KeyPair) -> Option<Self> {
        [Self::Rsa2048, Self::EcdsaP256]
            .into_iter()
            .find(|k| key.algorithm() == k.signature_algorithm())
    }
}

impl std::fmt::Display for LocalCaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rsa2048 => "rsa-2048",
            Self::EcdsaP256 => "ecdsa-p256",
        })
    }
}

impl std::str::FromStr for LocalCaKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rsa-2048" => Ok(Self::Rsa2048),
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            other => Err(format!("CA key {other:?}: rsa-2048 or ecdsa-p256")),
        }
    }
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalCaError {
    #[error("CA file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("CA material in {0} is unusable: {1}")]
    Invalid(String, String),
    #[error(
        "the CA in {dir} has an {found} key, not {wanted}: its key type is fixed when it is \
         made (every enrolled device chains to it); move the directory away to make a new CA"
    )]
    OtherKey {
        dir: String,
        found: LocalCaKey,
        wanted: LocalCaKey,
    },
}

impl LocalCa {
    /// Loads the CA from `dir`, generating and persisting a new RSA-2048 root on first use.
    pub fn open_or_create(dir: &Path) -> Result<Self, LocalCaError> {
        Self::open(dir, None)
    }

    /// Loads the CA from `dir`, which must have a `key` key, or makes one with such a key.
    pub fn open_or_create_with(dir: &Path, key: LocalCaKey) -> Result<Self, LocalCaError> {
        Self::open(dir, Some(key))
    }

    /// The CA's key type.
    pub fn key(&self) -> LocalCaKey {
        self.key
    }

    /// `wanted`: the key a new CA gets (RSA-2048 if `None`), and an existing one must have.
    fn open(dir: &Path, wanted: Option<LocalCaKey>) -> Result<Self, LocalCaError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LocalCaError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let invalid =
            |e: rcgen::Error| LocalCaError::Invalid(dir.display().to_string(), e.to_string());
        if !key_path.exists() {
            let key = KeyPair::generate_for(wanted.unwrap_or_default().signature_algorithm())
                .map_err(invalid)?;
            let params = cert_profile::device_root(
                "winmdm device root CA",
                OffsetDateTime::now_utc(),
                ROOT_VALIDITY,
            );
            let cert = params.self_signed(&key).map_err(invalid)?;
            // Certificate first, key last: the key's presence marks a complete CA.
            write_file(&cert_path, cert.der(), false).map_err(io(&cert_path))?;
            write_file(&key_path, key.serialize_pem().as_bytes(), true).map_err(io(&key_path))?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_der = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(invalid)?;
        let found = LocalCaKey::of(&key).ok_or_else(|| {
            LocalCaError::Invalid(
                dir.display().to_string(),
                "the key is neither RSA-2048 nor ECDSA P-256".into(),
            )
        })?;
        if let Some(wanted) = wanted.filter(|w| *w != found) {
            return Err(LocalCaError::OtherKey {
                dir: dir.display().to_string(),
                found,
                wanted,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key).map_err(invalid)?;
        Ok(Self {
            chain: std::sync::Arc::new(CaChain {
                root_der: cert_der,
                intermediate_der: None,
            }),
            issuer,
            key: found,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

#[async_trait]
impl CertificateAuthority for LocalCa {
    async fn chain(&self) -> Result<std::sync::Arc<CaChain>, CaError> {
        Ok(self.chain.clone())
    }

    async fn issue(&self, req: &IssueRequest<'_>) -> Result<IssuedCertificate, CaError> {
        let public_key = SubjectPublicKeyInfo::from_der(req.csr.spki_der())
            .map_err(|e| CaError::Rejected(format!("unusable public key: {e}")))?;
        let params = cert_profile::device_certificate(req);
        let serial_hex = params
            .serial_number
            .as_ref()
            .map(cert_profile::serial_hex)
            .unwrap_or_default();
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| CaError::Internal(e.to_string()))?;
        Ok(IssuedCertificate {
            der: cert.der().to_vec(),
            serial_hex,
            not_after: req.not_after,
        })
    }
}
