//! A JSON Web Key Set read over HTTPS ([`crate::outbound`]) and cached: fetched on first
//! use (never at start-up), and again when a token names a key it does not hold — at most
//! once per `min_refetch`, so tokens with made-up `kid`s cannot make us hammer the issuer.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;
use winmdm_core::jwt::KeySet;

use crate::outbound;

pub struct JwksCache {
    url: String,
    min_refetch: Duration,
    state: Mutex<(KeySet, Option<Instant>)>,
}

impl JwksCache {
    pub fn new(url: String, min_refetch: Duration) -> Self {
        Self {
            url,
            min_refetch,
            state: Mutex::new((KeySet::default(), None)),
        }
    }
}

#[async_trait]
impl winmdm_core::entra::KeySource for JwksCache {
    async fn keys(&self, refresh: bool) -> Result<KeySet, String> {
        let mut st = self.state.lock().await;
        let due = match st.1 {
            None => true,
            Some(at) => refresh && at.elapsed() >= self.min_refetch,
        };
        if due {
            let got = outbound::fetch(&self.url, None, None)
                .await
                .map_err(|e| e.to_string())?;
            if !got.status.is_success() {
                return Err(format!("{}: HTTP {}", self.url, got.status));
            }
            st.0 = KeySet::from_json(&got.body).map_err(|e| format!("{}: {e}", self.url))?;
            st.1 = Some(Instant::now());
            tracing::info!(url = %self.url, keys = st.0.keys.len(), "key set fetched");
        }
        Ok(st.0.clone())
    }
}
