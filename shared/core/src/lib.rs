//! winmdm's enrollment logic. It talks to storage and the certificate authority only
//! through the [`store::Store`] and [`ca::CertificateAuthority`] traits, and to time
//! through [`clock::Clock`], so the same code runs on the embedded adapters and on AWS.

pub mod ca;
mod catalog_cache;
pub mod cert_profile;
pub mod clock;
pub mod commands;
pub mod config;
pub mod csr;
pub mod device_listing;
pub mod digest;
pub mod dm_auth;
pub mod enrollment;
pub mod entra;
pub mod federated;
pub mod fleet_stats;
pub mod identity;
pub mod jwt;
pub mod management;
pub mod model;
pub mod password;
pub mod pkcs7;
pub mod profile_engine;
pub mod profile_templates;
pub mod profiles;
pub mod session;
pub mod store;
pub mod throttle;
pub mod token;
