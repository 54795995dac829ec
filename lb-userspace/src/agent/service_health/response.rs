//! One health-check answer, as kube-proxy's `hcHandler.ServeHTTP`
//! (pkg/proxy/healthcheck/service_health.go) writes it: 200 when the node
//! has a ready local endpoint *and* the proxy is healthy, else 503; the
//! endpoint count also in `X-Load-Balancing-Endpoint-Weight` (cloud load
//! balancers weigh nodes by it); the body upstream's dedented JSON.

use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes};

use crate::desired::ServiceRef;

/// The answer for `service` with `local_endpoints` ready local endpoints,
/// whatever the path asked (upstream serves "/" and everything below it).
pub(super) fn answer(
    service: &ServiceRef,
    local_endpoints: usize,
    proxy_healthy: bool,
) -> Response<Full<Bytes>> {
    let status = if local_endpoints != 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Load-Balancing-Endpoint-Weight", local_endpoints)
        .body(Full::new(Bytes::from(body(
            service,
            local_endpoints,
            proxy_healthy,
        ))))
        .expect("a response of valid parts")
}

/// Upstream's body after `dedent.Dedent` and trimming the newlines: tab
/// indented, no trailing newline; names quoted as Go's `%q` quotes them
/// (Kubernetes names are plain ASCII, where JSON's quoting is the same).
fn body(service: &ServiceRef, local_endpoints: usize, proxy_healthy: bool) -> String {
    let quote = |text: &str| serde_json::to_string(text).unwrap_or_default();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&service.namespace),
        quote(&service.name)
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn service() -> ServiceRef {
        ServiceRef {
            namespace: "shop".to_owned(),
            name: "web".to_owned(),
        }
    }

    async fn parts(response: Response<Full<Bytes>>) -> (u16, Vec<(String, String)>, String) {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Upstream: `ServeHTTP` answers 200 only when `count != 0 &&
    /// kubeProxyHealthy`, with its three headers and its body.
    #[tokio::test]
    async fn a_ready_local_endpoint_and_a_healthy_proxy_answer_200() {
        let (status, headers, body) = parts(answer(&service(), 2, true)).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers,
            vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-content-type-options".to_owned(), "nosniff".to_owned()),
                (
                    "x-load-balancing-endpoint-weight".to_owned(),
                    "2".to_owned()
                ),
            ]
        );
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["service"]["name"], "web");
    }

    /// Upstream: no local endpoint, or an unhealthy proxy (its healthz
    /// server's `Health().Healthy`), is 503 with the same body shape.
    #[tokio::test]
    async fn no_local_endpoint_or_an_unhealthy_proxy_answer_503() {
        let (status, headers, body) = parts(answer(&service(), 0, true)).await;
        assert_eq!(status, 503);
        assert!(headers.contains(&(
            "x-load-balancing-endpoint-weight".to_owned(),
            "0".to_owned()
        )));
        assert!(body.contains("\"localEndpoints\": 0,\n\t\"serviceProxyHealthy\": true"));
        let (status, _, body) = parts(answer(&service(), 3, false)).await;
        assert_eq!(status, 503);
        assert!(body.contains("\"localEndpoints\": 3,\n\t\"serviceProxyHealthy\": false"));
    }
}
