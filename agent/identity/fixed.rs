//! The fixed identity (`identity.source = "static"`): physical hosts and tests name
//! themselves in agent.toml. Pure.

use super::{Error, Identity, IdentitySource};

/// An identity known in advance.
#[derive(Debug, Clone)]
pub struct Fixed(pub Identity);

impl IdentitySource for Fixed {
    async fn identify(&self) -> Result<Identity, Error> {
        Ok(self.0.clone())
    }
}
