use std::{net::Ipv4Addr, time::Duration};

use super::*;
use crate::agent::http::get;

fn service(name: &str) -> ServiceRef {
    ServiceRef {
        namespace: "hc".to_owned(),
        name: name.to_owned(),
    }
}

/// A port free right now on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn servers() -> ServiceHealth {
    ServiceHealth::new(
        Health::new(Duration::from_secs(60)),
        Listen::On(Ipv4Addr::LOCALHOST.into()),
    )
}

/// Upstream: `SyncServices` opens a server per Service that needs one and
/// closes the others; `SyncEndpoints` changes the count each answer
/// reports (200 with an endpoint, 503 once it is gone).
#[tokio::test]
async fn servers_follow_the_services_and_their_counts() {
    let mut servers = servers();
    let port = free_port();
    let check = |local_endpoints| HealthCheck {
        port,
        local_endpoints,
    };
    let problems = servers.sync(&BTreeMap::from([(service("web"), check(1))]), &[]);
    assert_eq!(problems, vec![]);
    let (status, body) = get(at(port), "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"name\": \"web\""), "{body}");

    servers.sync(&BTreeMap::from([(service("web"), check(0))]), &[]);
    let (status, body) = get(at(port), "/any/path").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"localEndpoints\": 0"), "{body}");

    servers.sync(&BTreeMap::new(), &[]);
    assert!(servers.ports().is_empty());
    // The aborted task drops its listener: the port closes.
    let mut closed = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(at(port)).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "port {port} still accepts after its Service left");
}

/// A port something else holds is a named problem of that Service, not a
/// crash; the other Services are served, and it is retried.
#[tokio::test]
async fn a_port_that_cannot_be_bound_is_a_problem_of_its_service() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let free = free_port();
    let mut servers = servers();
    let wanted = BTreeMap::from([
        (
            service("blocked"),
            HealthCheck {
                port: taken_port,
                local_endpoints: 1,
            },
        ),
        (
            service("fine"),
            HealthCheck {
                port: free,
                local_endpoints: 1,
            },
        ),
    ]);
    let problems = servers.sync(&wanted, &[]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].code, ProblemCode::HealthCheckPortUnavailable);
    assert_eq!(problems[0].object, "Service hc/blocked");
    assert_eq!(get(at(free), "/").await.0, 200);
    drop(taken);
    assert_eq!(servers.sync(&wanted, &[]), vec![]);
    assert_eq!(get(at(taken_port), "/").await.0, 200);
}

/// Upstream: `serviceProxyHealthy` is the proxy's own health
/// (`healthzServer.Health().Healthy`), read at each request: a change
/// queued longer than the health timeout makes every health-check port
/// answer 503 though the endpoint is there, until a sync applies it.
#[tokio::test]
async fn an_unhealthy_agent_fails_every_health_check() {
    let health = Health::new(Duration::from_millis(1));
    let mut servers = ServiceHealth::new(health.clone(), Listen::On(Ipv4Addr::LOCALHOST.into()));
    let port = free_port();
    let wanted = BTreeMap::from([(
        service("web"),
        HealthCheck {
            port,
            local_endpoints: 1,
        },
    )]);
    assert_eq!(servers.sync(&wanted, &[]), vec![]);
    assert_eq!(get(at(port), "/").await.0, 200);
    health.queued_update();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = get(at(port), "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"serviceProxyHealthy\": false"), "{body}");
    health.updated();
    assert_eq!(get(at(port), "/").await.0, 200);
}

/// Upstream: `newServiceHealthServer` listens on every address unless
/// `--nodeport-addresses` narrows the NodePort addresses, then on each of
/// them; when the node's addresses change, the servers move with them.
#[tokio::test]
async fn with_nodeport_addresses_the_port_listens_on_each_of_them() {
    let mut servers = ServiceHealth::new(
        Health::new(Duration::from_secs(60)),
        Listen::NodePortAddresses,
    );
    let port = free_port();
    let second = Ipv4Addr::new(127, 0, 0, 2);
    let wanted = BTreeMap::from([(
        service("web"),
        HealthCheck {
            port,
            local_endpoints: 1,
        },
    )]);
    assert_eq!(servers.sync(&wanted, &[Ipv4Addr::LOCALHOST.into()]), vec![]);
    assert_eq!(get(at(port), "/").await.0, 200);
    let elsewhere = SocketAddr::from((second, port));
    assert!(tokio::net::TcpStream::connect(elsewhere).await.is_err());
    assert_eq!(servers.sync(&wanted, &[second.into()]), vec![]);
    assert_eq!(get(elsewhere, "/").await.0, 200);
}
