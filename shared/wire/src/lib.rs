//! Wire formats of Windows device enrollment and management: pure code, bytes in and typed
//! values out (and back). No I/O, no clocks, no randomness: callers pass those in.
//!
//! - [`soap`]: SOAP 1.2 envelopes, WS-Security headers, enrollment faults.
//! - [`discovery`]: MS-MDE2 Discover.
//! - [`xcep`]: MS-XCEP GetPolicies.
//! - [`wstep`]: MS-WSTEP RequestSecurityToken.
//! - [`provisioning`]: the wap-provisioningdoc returned on enrollment.

pub mod discovery;
pub mod ns;
pub mod provisioning;
pub mod soap;
pub mod syncml;
pub mod wstep;
pub mod xcep;
pub mod xml;
