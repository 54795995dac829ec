//! The connection to the API server: a kubeconfig, or what kube-rs infers.

use std::path::Path;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot use the kubeconfig {path}: {source}; check the file given with --kubeconfig (or KUBECONFIG)"
    )]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot find how to reach the API server: {0}; give --kubeconfig, set KUBECONFIG, \
         or run in a pod (in-cluster config)"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a client for the API server at {server}: {source}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
}

/// A client and the server's URL (for the status and the logs). Without a
/// path: KUBECONFIG or ~/.kube/config, else the in-cluster service account
/// (`Config::infer`).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<(Client, String), ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => Config::infer().await.map_err(ClientError::Infer)?,
    };
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_owned();
    let client = Client::try_from(config).map_err(|source| ClientError::Client {
        server: server.clone(),
        source,
    })?;
    Ok((client, server))
}
