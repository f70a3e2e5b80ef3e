//! Stage 1, identity: who this host is (SPEC §7.1).
//! `IdentitySource` has two implementations chosen from `[identity]` in agent.toml:
//! IMDSv2 (`imds.rs`) and a fixed identity from the config (`fixed.rs`).

pub mod fixed;
pub mod imds;

use std::future::Future;

use serde::Serialize;

/// What the host knows about itself: enough to find its entry in the role map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Instance id (`i-…`) or, off EC2, any stable id; the key of the host in the map.
    pub id: String,
    /// Primary private IPv4 address.
    pub address: String,
    /// Availability zone (or rack).
    pub az: String,
    /// Region (or data centre).
    pub region: String,
    /// EC2 instance type, when known.
    pub instance_type: Option<String>,
    /// AMI id the host was booted from, when known.
    pub ami_id: Option<String>,
}

/// Errors of the identity stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Instance metadata could not be read before the deadline.
    #[error("reading instance metadata {path} from {endpoint}")]
    Imds {
        /// Endpoint used (the SDK default or `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
        endpoint: String,
        /// Metadata path being read.
        path: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Instance metadata has no such path (HTTP 404).
    #[error("instance metadata {path} not found at {endpoint}")]
    Missing {
        /// Endpoint used.
        endpoint: String,
        /// Metadata path.
        path: String,
    },
    /// Instance metadata answered with something that is not usable.
    #[error("instance metadata {path} returned an unusable value {value:?}")]
    BadValue {
        /// Metadata path.
        path: String,
        /// The value it returned.
        value: String,
    },
}

/// A way of learning the host's identity.
pub trait IdentitySource {
    /// Learn the identity, retrying inside the source's own deadline.
    fn identify(&self) -> impl Future<Output = Result<Identity, Error>> + Send;
}

/// The identity source chosen by agent.toml.
#[derive(Debug)]
pub enum AnyIdentity {
    /// IMDSv2.
    Imds(imds::Imds),
    /// Fixed values.
    Fixed(fixed::Fixed),
}

impl AnyIdentity {
    /// Build the source `config` names.
    pub fn from_config(config: &crate::config::IdentityConfig) -> AnyIdentity {
        match config {
            crate::config::IdentityConfig::Imds { deadline } => {
                AnyIdentity::Imds(imds::Imds::new(*deadline))
            }
            crate::config::IdentityConfig::Static(id) => {
                AnyIdentity::Fixed(fixed::Fixed(id.clone()))
            }
        }
    }
}

impl IdentitySource for AnyIdentity {
    async fn identify(&self) -> Result<Identity, Error> {
        match self {
            AnyIdentity::Imds(s) => s.identify().await,
            AnyIdentity::Fixed(s) => s.identify().await,
        }
    }
}
