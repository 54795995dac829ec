//! Problems: what could not be used (or is used with a caveat), why, with
//! a stable code and a severity. Every room reports through this type, so
//! the log, `lb status` and the metrics speak the same words.

use std::fmt;

/// A Kubernetes object that could not be used (or is used with a caveat),
/// and why. Everything else keeps working.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// "Service default/web", "EndpointSlice default/web-abc", or a file.
    pub object: String,
    /// For people: what is wrong and what to do.
    pub reason: String,
    /// For machines (metrics, `lb status`): stable across releases.
    pub code: ProblemCode,
    pub severity: Severity,
}

impl Problem {
    /// Part or all of the object is not served.
    pub fn error(object: impl Into<String>, code: ProblemCode, reason: impl Into<String>) -> Self {
        Problem {
            object: object.into(),
            reason: reason.into(),
            code,
            severity: Severity::Error,
        }
    }

    /// The object is served as given (or as the API server would have
    /// defaulted it), but something about it deserves a look.
    pub fn warning(
        object: impl Into<String>,
        code: ProblemCode,
        reason: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(object, code, reason)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Served anyway.
    Warning,
    /// Not served (the object, or the named part of it).
    Error,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an object is a problem, as a stable machine-readable code (the
/// metric label and `lb status` column). The reason text says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemCode {
    // Reading the source.
    /// A manifest file could not be read.
    UnreadableFile,
    /// A manifest file is not UTF-8 text.
    NotUtf8,
    /// A manifest file is larger than `--manifest-max-file-bytes`.
    FileTooLarge,
    /// A manifest file holds more than `--manifest-max-documents` documents.
    TooManyDocuments,
    /// A document nests deeper than `--manifest-max-depth`.
    TooDeep,
    /// A document exceeds the YAML reader's budget (aliases, nodes: a YAML bomb).
    YamlBudget,
    /// An object of a kind lb does not read that looks like one it does
    /// (`kind: service`, `apiVersion: v2`): skipped, with the kind meant.
    UnknownKind,
    /// A document is not YAML.
    InvalidYaml,
    /// A document is not a Kubernetes object lb can decode.
    InvalidManifest,
    /// An API version Kubernetes no longer serves.
    RetiredApi,
    // Validating objects (what the API server would have refused).
    /// A required field is missing.
    MissingField,
    /// A field holds a value Kubernetes does not define.
    InvalidValue,
    /// A set field the object's type does not use; ignored.
    IgnoredField,
    /// A protocol other than TCP, UDP or SCTP.
    UnknownProtocol,
    /// A port number outside 1-65535.
    PortOutOfRange,
    /// A NodePort outside `--service-node-port-range`.
    NodePortOutOfRange,
    /// The same port and protocol twice in one Service.
    DuplicatePort,
    /// Not an IP address (or not in canonical form).
    InvalidAddress,
    /// Unspecified, loopback, multicast, broadcast or link-local.
    ReservedAddress,
    /// A ClusterIP outside every `--service-cidr`.
    OutsideServiceCidr,
    /// An externalIP outside every `--allow-external-ip-cidr`.
    ExternalIpNotAllowed,
    /// An externalIP that is one of the node's addresses (CVE-2020-8554).
    ExternalIpIsNodeAddress,
    /// An endpoint address that is some Service's ClusterIP.
    EndpointIsClusterIp,
    /// A ClusterIP that is an endpoint's (a pod's or node's) address.
    ClusterIpIsEndpoint,
    /// A namespace, name or port name longer than the datapath stores.
    NameTooLong,
    // Between objects.
    /// Two objects with the same namespace and name.
    DuplicateObject,
    /// Two Service ports claiming one frontend.
    Conflict,
    // Programming the datapath.
    /// A datapath map (tables, backends, service ids) is full.
    MapFull,
    /// An address family the datapath does not serve yet.
    UnsupportedFamily,
    // Serving beside the datapath.
    /// A Service's `healthCheckNodePort` that cannot be listened on.
    HealthCheckPortUnavailable,
    // selection
    /// An `lb.kubernetes.io/algorithm` value lb does not know (Maglev is used).
    UnknownAlgorithm,
}

impl ProblemCode {
    pub const ALL: [ProblemCode; 31] = [
        ProblemCode::UnreadableFile,
        ProblemCode::NotUtf8,
        ProblemCode::FileTooLarge,
        ProblemCode::TooManyDocuments,
        ProblemCode::TooDeep,
        ProblemCode::YamlBudget,
        ProblemCode::UnknownKind,
        ProblemCode::InvalidYaml,
        ProblemCode::InvalidManifest,
        ProblemCode::RetiredApi,
        ProblemCode::MissingField,
        ProblemCode::InvalidValue,
        ProblemCode::IgnoredField,
        ProblemCode::UnknownProtocol,
        ProblemCode::PortOutOfRange,
        ProblemCode::NodePortOutOfRange,
        ProblemCode::DuplicatePort,
        ProblemCode::InvalidAddress,
        ProblemCode::ReservedAddress,
        ProblemCode::OutsideServiceCidr,
        ProblemCode::ExternalIpNotAllowed,
        ProblemCode::ExternalIpIsNodeAddress,
        ProblemCode::EndpointIsClusterIp,
        ProblemCode::ClusterIpIsEndpoint,
        ProblemCode::NameTooLong,
        ProblemCode::DuplicateObject,
        ProblemCode::Conflict,
        ProblemCode::MapFull,
        ProblemCode::UnsupportedFamily,
        ProblemCode::HealthCheckPortUnavailable,
        // selection
        ProblemCode::UnknownAlgorithm,
    ];

    /// The code as serialized: kebab-case, e.g. `reserved-address`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProblemCode::UnreadableFile => "unreadable-file",
            ProblemCode::NotUtf8 => "not-utf8",
            ProblemCode::FileTooLarge => "file-too-large",
            ProblemCode::TooManyDocuments => "too-many-documents",
            ProblemCode::TooDeep => "too-deep",
            ProblemCode::YamlBudget => "yaml-budget",
            ProblemCode::UnknownKind => "unknown-kind",
            ProblemCode::InvalidYaml => "invalid-yaml",
            ProblemCode::InvalidManifest => "invalid-manifest",
            ProblemCode::RetiredApi => "retired-api",
            ProblemCode::MissingField => "missing-field",
            ProblemCode::InvalidValue => "invalid-value",
            ProblemCode::IgnoredField => "ignored-field",
            ProblemCode::UnknownProtocol => "unknown-protocol",
            ProblemCode::PortOutOfRange => "port-out-of-range",
            ProblemCode::NodePortOutOfRange => "node-port-out-of-range",
            ProblemCode::DuplicatePort => "duplicate-port",
            ProblemCode::InvalidAddress => "invalid-address",
            ProblemCode::ReservedAddress => "reserved-address",
            ProblemCode::OutsideServiceCidr => "outside-service-cidr",
            ProblemCode::ExternalIpNotAllowed => "external-ip-not-allowed",
            ProblemCode::ExternalIpIsNodeAddress => "external-ip-is-node-address",
            ProblemCode::EndpointIsClusterIp => "endpoint-is-cluster-ip",
            ProblemCode::ClusterIpIsEndpoint => "cluster-ip-is-endpoint",
            ProblemCode::NameTooLong => "name-too-long",
            ProblemCode::DuplicateObject => "duplicate-object",
            ProblemCode::Conflict => "conflict",
            ProblemCode::MapFull => "map-full",
            ProblemCode::UnsupportedFamily => "unsupported-family",
            ProblemCode::HealthCheckPortUnavailable => "health-check-port-unavailable",
            // selection
            ProblemCode::UnknownAlgorithm => "unknown-algorithm",
        }
    }

    /// The code of its text (`as_str`), e.g. from a corpus file's header.
    pub fn from_str_code(text: &str) -> Option<ProblemCode> {
        ProblemCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
