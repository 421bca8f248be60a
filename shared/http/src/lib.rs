//! HTTP handlers, one per endpoint. Each takes the process's [`state::AppState`] and a
//! `lambda_http::Request` and returns a response: the Lambda functions call exactly one of
//! them, `winmdm-local` calls them all through [`router::dispatch`].
//!
//! | endpoint | module |
//! |---|---|
//! | `/EnrollmentServer/Discovery.svc` | [`discovery`] |
//! | `/EnrollmentServer/Policy.svc` (XCEP) | [`policy`] |
//! | `/EnrollmentServer/Enrollment.svc` (WSTEP) | [`enroll`] |
//! | `/EnrollmentServer/Auth` (federated login page) | [`auth`] |
//! | `/EnrollmentServer/TermsOfUse` (Entra ID enrollment's terms page) | [`terms`] |
//! | `/ManagementServer/MDM.svc` (OMA-DM) | [`manage`] |
//! | `/ManagementServer/Renew.svc` (certificate renewal) | [`renew`] |
//! | `/admin/v1/…` | [`admin`] |
//! | `/console/…` (web console, served by the admin function) | [`console`] |

pub mod admin;
pub mod admin_profiles;
pub mod auth;
#[cfg(feature = "ca-setup")]
pub mod ca_setup;
#[cfg(feature = "dynamodb")]
pub mod checkin_counts;
pub mod client_addr;
pub mod console;
pub mod discovery;
pub mod enroll;
pub mod jwks;
pub mod logging;
pub mod manage;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod renew;
pub mod request_id;
pub mod respond;
pub mod router;
mod soap_endpoint;
pub mod state;
pub mod terms;
pub mod unconfigured;

pub use state::AppState;

/// Runs one endpoint's handler as a Lambda function, with state built once at init.
///
/// The functions' `main` runs it on tokio's current-thread runtime: a Lambda instance
/// serves one request at a time, so a worker pool would only add threads (and their
/// first-touch memory) to every cold start; password hashing still runs off the
/// executor, on tokio's blocking pool.
pub async fn run_lambda<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(&'static AppState, lambda_http::Request) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = respond::Response> + Send,
{
    logging::init();
    let state: &'static AppState = Box::leak(Box::new(AppState::from_env().await?));
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, std::convert::Infallible>(handler(state, req).await)
    }))
    .await
}
