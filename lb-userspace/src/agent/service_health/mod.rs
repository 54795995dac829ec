//! The `healthCheckNodePort` servers: one HTTP server per Service with
//! `externalTrafficPolicy: Local` (type LoadBalancer), as kube-proxy's
//! pkg/proxy/healthcheck/service_health.go runs them, so cloud load
//! balancers stop sending to nodes without a ready local endpoint.
//!
//! - Opened and closed as Services come and go (upstream's
//!   `SyncServices`), counts updated at each sync (`SyncEndpoints`).
//! - A port that cannot be bound is a problem of that Service
//!   (`health-check-port-unavailable`), retried at the next sync; the
//!   other Services and the datapath are unaffected.
//! - `serviceProxyHealthy` is the agent's own health (`/livez`'s rule:
//!   upstream's `healthzServer.Health().Healthy`), read at each request.
//! - The port is no frontend: the datapath passes its packets to the
//!   node's stack untranslated.
//! - Where it listens is upstream's `newServiceHealthServer` rule: on
//!   every address when `--nodeport-addresses` matches all (the default),
//!   else on each of the node's NodePort addresses.

mod response;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tracing::info;

use super::{health::Health, http};
use crate::{
    desired::{HealthCheck, ServiceRef},
    model::{Problem, ProblemCode},
};

/// Where the health-check ports listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// On this address (all addresses: `0.0.0.0`).
    On(IpAddr),
    /// On each of the node's NodePort addresses, as each sync gives them.
    NodePortAddresses,
}

/// The running health-check servers, by Service.
pub struct ServiceHealth {
    health: Arc<Health>,
    listen: Listen,
    servers: BTreeMap<ServiceRef, Server>,
}

struct Server {
    port: u16,
    addresses: Vec<IpAddr>,
    local_endpoints: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    /// Aborting the tasks drops their listeners: the port closes.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ServiceHealth {
    pub fn new(health: Arc<Health>, listen: Listen) -> ServiceHealth {
        ServiceHealth {
            health,
            listen,
            servers: BTreeMap::new(),
        }
    }

    /// Serves exactly `wanted`: closes the servers of Services gone (or
    /// moved to another port or address), opens the new ones, updates
    /// every count. `node_addresses`: the node's NodePort addresses now.
    /// Must run inside the agent's tokio runtime. The problems are those
    /// of ports that could not be bound.
    pub fn sync(
        &mut self,
        wanted: &BTreeMap<ServiceRef, HealthCheck>,
        node_addresses: &[IpAddr],
    ) -> Vec<Problem> {
        let addresses = match self.listen {
            Listen::On(address) => vec![address],
            Listen::NodePortAddresses => node_addresses.to_vec(),
        };
        self.servers.retain(|service, server| {
            let keep = wanted
                .get(service)
                .is_some_and(|check| check.port == server.port && server.addresses == addresses);
            if !keep {
                info!(%service, port = server.port, "closing the health-check port");
            }
            keep
        });
        let mut problems = Vec::new();
        for (service, check) in wanted {
            if let Some(server) = self.servers.get(service) {
                server
                    .local_endpoints
                    .store(check.local_endpoints, Ordering::Relaxed);
                continue;
            }
            match self.open(service, check, &addresses) {
                Ok(server) => {
                    self.servers.insert(service.clone(), server);
                }
                Err((address, err)) => problems.push(Problem::error(
                    format!("Service {service}"),
                    ProblemCode::HealthCheckPortUnavailable,
                    format!(
                        "spec.healthCheckNodePort {} cannot be listened on ({address}: {err}): load balancers probing it see this node as down; free the port (another process or Service holds it), it is retried at each sync",
                        check.port
                    ),
                )),
            }
        }
        problems
    }

    /// The ports served now, by Service (tests, the log).
    pub fn ports(&self) -> BTreeMap<ServiceRef, u16> {
        self.servers
            .iter()
            .map(|(service, server)| (service.clone(), server.port))
            .collect()
    }

    /// Binds every address first, so a port half bound is no server (the
    /// listeners bound so far close with the error).
    fn open(
        &self,
        service: &ServiceRef,
        check: &HealthCheck,
        addresses: &[IpAddr],
    ) -> Result<Server, (SocketAddr, std::io::Error)> {
        let mut listeners = Vec::with_capacity(addresses.len());
        for address in addresses {
            let address = SocketAddr::new(*address, check.port);
            listeners.push(bind(address).map_err(|err| (address, err))?);
        }
        let local_endpoints = Arc::new(AtomicUsize::new(check.local_endpoints));
        let (count, health, name) = (
            local_endpoints.clone(),
            self.health.clone(),
            service.clone(),
        );
        let handler: http::Handler = Arc::new(move |_path| {
            response::answer(&name, count.load(Ordering::Relaxed), health.is_healthy())
        });
        info!(%service, port = check.port, ?addresses, "serving the health-check port");
        Ok(Server {
            port: check.port,
            addresses: addresses.to_vec(),
            local_endpoints,
            tasks: listeners
                .into_iter()
                .map(|listener| http::serve_listener(listener, "health-check", handler.clone()))
                .collect(),
        })
    }
}

fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

#[cfg(test)]
mod tests;
