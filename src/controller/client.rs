//! The Kubernetes client serin talks to the API server with. Every request carries the
//! `User-Agent` `serin/<version>` (kube sends none of its own), so the API server's
//! audit log and its `apiserver_request_total` can tell serin's requests apart.

use kube::{Client, Config};
use reqwest::header::{HeaderName, HeaderValue, USER_AGENT};
use thiserror::Error;

/// What serin calls itself in the `User-Agent` of its requests.
pub fn user_agent() -> String {
    format!("serin/{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("finding the cluster's configuration (kubeconfig or in-cluster)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("building the Kubernetes client")]
    Build(#[source] kube::Error),
}

/// Sets serin's `User-Agent` on `config`, in place of any other.
pub fn identify(config: &mut Config) {
    identify_as(config, "serin");
}

/// Sets the `User-Agent` `<name>/<version>` on `config`, in place of any other.
fn identify_as(config: &mut Config, name: &str) {
    let agent = format!("{name}/{}", env!("CARGO_PKG_VERSION"));
    let value = HeaderValue::from_str(&agent).expect("the name and version are ASCII");
    let name: HeaderName = USER_AGENT;
    config.headers.retain(|(n, _)| *n != name);
    config.headers.push((name, value));
}

/// A client from the environment's kubeconfig or the Pod's service account, naming
/// itself `serin/<version>`.
pub async fn client() -> Result<Client, Error> {
    client_as("serin").await
}

/// A client naming itself `<name>/<version>` (the benchmark's own requests are told
/// apart from the controller's).
pub async fn client_as(name: &str) -> Result<Client, Error> {
    let mut config = Config::infer().await.map_err(Error::Infer)?;
    identify_as(&mut config, name);
    Client::try_from(config).map_err(Error::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_names_itself_with_its_version() {
        let mut config = Config::new("https://127.0.0.1:6443".parse().unwrap());
        config
            .headers
            .push((USER_AGENT, HeaderValue::from_static("other")));
        identify(&mut config);
        let agents: Vec<_> = config
            .headers
            .iter()
            .filter(|(n, _)| *n == USER_AGENT)
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(agents, vec![format!("serin/{}", env!("CARGO_PKG_VERSION"))]);
    }
}
