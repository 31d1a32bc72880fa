//! Traffic routers: the mesh objects that split traffic between primary and canary.
//! One implementation per provider; a new provider is a new file.

pub mod istio;

use kube::Client;
use thiserror::Error;

use crate::api::Canary;

#[derive(Debug, Error)]
pub enum Error {
    #[error("writing {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("provider {0} is not supported yet")]
    Unsupported(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How traffic is split, in percent; the two always add up to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub primary: u32,
    pub canary: u32,
}

impl Weights {
    /// The split that sends `canary` percent to the canary.
    pub fn with_canary(canary: u32) -> Weights {
        let canary = canary.min(100);
        Weights {
            primary: 100 - canary,
            canary,
        }
    }
}

/// A mesh that can route a Canary's traffic.
pub trait TrafficRouter {
    /// Creates or updates the routes (and their auxiliary objects) with this split.
    fn apply(
        &self,
        client: &Client,
        canary: &Canary,
        weights: Weights,
    ) -> impl Future<Output = Result<()>> + Send;
}
