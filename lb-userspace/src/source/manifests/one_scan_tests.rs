//! A document is read once: its typed objects come from the value the
//! untyped read made, and only a value whose types do not match is read
//! from the text again. These hold the shortcut to the text's reading.

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde::de::DeserializeOwned;

use super::{
    limits::Limits,
    yaml::{self, DocumentText},
};

fn doc(text: &str) -> DocumentText<'_> {
    DocumentText {
        text,
        first_line: 1,
    }
}

/// The object (or the error) read through the value, and read from the
/// text alone; and whether the value alone sufficed.
fn both<T: DeserializeOwned>(text: &str) -> (Result<T, String>, Result<T, String>, bool) {
    let value = yaml::parse_value(doc(text), Limits::default().max_depth).unwrap();
    let direct = T::deserialize(&value).is_ok();
    (
        yaml::from_parsed_document::<T>(&value, doc(text)),
        yaml::from_document::<T>(doc(text)),
        direct,
    )
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {app: web, tier: front}
  annotations: {note: \"a: b\"}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  externalIPs: [192.0.2.7]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10800}}
  loadBalancerSourceRanges: [' 10.0.0.0/8 ', 192.168.0.0/16]
  ipFamilies: [IPv4]
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
  - {port: 9000, targetPort: \"9001\"}
status:
  loadBalancer: {ingress: [{ip: 198.51.100.9, ipMode: VIP}]}
";

const SLICE: &str = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.0.1.5]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-a
  zone: z1
  hints: {forZones: [{name: z1}]}
- addresses: [10.0.2.5]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.0.3.5]
  conditions: {ready: null}
ports:
- {name: http, port: 8080, protocol: TCP}
- {port: 53, protocol: UDP}
";

#[test]
fn the_usual_documents_are_read_from_the_value_alone_and_as_from_their_text() {
    let (through_value, from_text, direct) = both::<Service>(SERVICE);
    assert!(direct, "a plain Service needs no second scan");
    assert_eq!(through_value, from_text);
    assert!(through_value.is_ok());
    let (through_value, from_text, direct) = both::<EndpointSlice>(SLICE);
    assert!(direct, "a plain EndpointSlice needs no second scan");
    assert_eq!(through_value, from_text);
    assert!(through_value.is_ok());
}

/// Plain scalars YAML reads into strings (`version: 2`, `ratio: 1.2`,
/// `on: true`, `mode: 0755`): the value holds a number or a boolean where
/// the object wants a string, so the text is read, as before.
#[test]
fn scalars_of_another_type_are_read_from_the_text() {
    let text = SERVICE.replace(
        "labels: {app: web, tier: front}",
        "labels: {app: web, version: 2, ratio: 1.2, on: true, mode: 0755}",
    );
    let (through_value, from_text, direct) = both::<Service>(&text);
    assert!(!direct);
    assert_eq!(through_value, from_text);
    let labels = through_value.unwrap().metadata.labels.unwrap();
    assert_eq!(labels["version"], "2");
    assert_eq!(labels["ratio"], "1.2");
    assert_eq!(labels["on"], "true");
    assert_eq!(labels["mode"], "0755");
    let text = SLICE.replace("{name: http, port: 8080", "{name: 8080, port: 8080");
    let (through_value, from_text, direct) = both::<EndpointSlice>(&text);
    assert!(!direct);
    assert_eq!(through_value, from_text);
    assert_eq!(
        through_value.unwrap().ports.unwrap()[0].name.as_deref(),
        Some("8080")
    );
}

/// A document the object refuses gets the text's error: the field path
/// and the file line, exactly as before.
#[test]
fn errors_are_the_text_s_with_their_field_and_line() {
    for (from, to) in [
        ("port: 80,", "port: eighty,"),
        ("timeoutSeconds: 10800", "timeoutSeconds: [1]"),
        ("ipFamilies: [IPv4]", "ipFamilies: IPv4"),
    ] {
        let text = SERVICE.replace(from, to);
        let (through_value, from_text, _) = both::<Service>(&text);
        let message = through_value.unwrap_err();
        assert_eq!(from_text.unwrap_err(), message);
        assert!(message.contains("line"), "{message}");
    }
}
