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

/// The running health-check servers, by Service.
pub struct ServiceHealth {
    health: Arc<Health>,
    /// Where the servers listen (upstream: the NodePort addresses; all
    /// addresses by default).
    bind: IpAddr,
    servers: BTreeMap<ServiceRef, Server>,
}

struct Server {
    port: u16,
    local_endpoints: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    /// Aborting the task drops its listener: the port closes.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ServiceHealth {
    pub fn new(health: Arc<Health>, bind: IpAddr) -> ServiceHealth {
        ServiceHealth {
            health,
            bind,
            servers: BTreeMap::new(),
        }
    }

    /// Serves exactly `wanted`: closes the servers of Services gone (or
    /// moved to another port), opens the new ones, updates every count.
    /// Must run inside the agent's tokio runtime. The problems are those
    /// of ports that could not be bound.
    pub fn sync(&mut self, wanted: &BTreeMap<ServiceRef, HealthCheck>) -> Vec<Problem> {
        self.servers.retain(|service, server| {
            let keep = wanted
                .get(service)
                .is_some_and(|check| check.port == server.port);
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
            match self.open(service, check) {
                Ok(server) => {
                    self.servers.insert(service.clone(), server);
                }
                Err(err) => problems.push(Problem::error(
                    format!("Service {service}"),
                    ProblemCode::HealthCheckPortUnavailable,
                    format!(
                        "spec.healthCheckNodePort {} cannot be listened on ({}:{}: {err}): load balancers probing it see this node as down; free the port (another process or Service holds it), it is retried at each sync",
                        check.port, self.bind, check.port
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

    fn open(&self, service: &ServiceRef, check: &HealthCheck) -> std::io::Result<Server> {
        let address = SocketAddr::new(self.bind, check.port);
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local_endpoints = Arc::new(AtomicUsize::new(check.local_endpoints));
        let (count, health, name) = (
            local_endpoints.clone(),
            self.health.clone(),
            service.clone(),
        );
        let handler: http::Handler = Arc::new(move |_path| {
            response::answer(&name, count.load(Ordering::Relaxed), health.is_healthy())
        });
        info!(%service, %address, "serving the health-check port");
        Ok(Server {
            port: check.port,
            local_endpoints,
            task: http::serve_listener(listener, "health-check", handler),
        })
    }
}

#[cfg(test)]
mod tests;
