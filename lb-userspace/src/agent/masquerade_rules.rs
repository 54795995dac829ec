//! `--cluster-cidr` and `--masquerade-all`: kube-proxy's masquerade rules
//! for ClusterIP traffic (`lb_common::masquerade_rules`), checked as
//! kube-proxy checks its flags and made into what the datapath reads.

use lb_common::masquerade_rules::MasqueradeRules;

use crate::desired::Cidr;

/// What the agent was told about masquerading ClusterIP traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasqueradeConfig {
    /// `--cluster-cidr`'s IPv4 CIDR: the local-traffic detector (kube-proxy's
    /// detect-local-mode ClusterCIDR); none: no detector.
    pub cluster_cidr: Option<crate::model::SourceRange>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
}

/// Why the flags are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasqueradeConfigError {
    #[error(
        "--cluster-cidr {0} and {1}: kube-proxy takes at most one CIDR per IP family; give the pod CIDR of the whole cluster, one IPv4 (and one IPv6), such as --cluster-cidr 10.244.0.0/16,fd00:10:244::/56"
    )]
    TwoOfAFamily(String, String),
}

impl MasqueradeConfig {
    /// From the flags: at most one CIDR per family, as kube-proxy's
    /// validation (`--cluster-cidr` "only one CIDR allowed or a valid
    /// DualStack CIDR"). An IPv6 CIDR is accepted and unused: the datapath
    /// is IPv4 only.
    pub fn new(
        cluster_cidrs: &[Cidr],
        masquerade_all: bool,
    ) -> Result<Self, MasqueradeConfigError> {
        let (mut v4, mut v6): (Option<&Cidr>, Option<&Cidr>) = (None, None);
        for cidr in cluster_cidrs {
            let slot = if cidr.ipv4_prefix().is_some() {
                &mut v4
            } else {
                &mut v6
            };
            if let Some(first) = slot {
                return Err(MasqueradeConfigError::TwoOfAFamily(
                    first.to_string(),
                    cidr.to_string(),
                ));
            }
            *slot = Some(cidr);
        }
        Ok(MasqueradeConfig {
            cluster_cidr: v4.and_then(Cidr::ipv4_prefix),
            masquerade_all,
        })
    }

    /// As the datapath reads it (`lb_masq_rules_v1`).
    pub fn rules(&self) -> MasqueradeRules {
        let cidr = self
            .cluster_cidr
            .map(|range| (u32::from(range.network), range.prefix_len));
        MasqueradeRules::new(cidr, self.masquerade_all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn one_cidr_per_family_as_kube_proxy() {
        let config = MasqueradeConfig::new(&cidrs(&["10.244.0.0/16", "fd00::/56"]), false).unwrap();
        assert_eq!(
            config.cluster_cidr.map(|r| r.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
        let rules = config.rules();
        assert!(rules.in_cluster_cidr(u32::from_ne_bytes([10, 244, 3, 4])));
        assert!(!rules.in_cluster_cidr(u32::from_ne_bytes([10, 245, 3, 4])));
        let err =
            MasqueradeConfig::new(&cidrs(&["10.244.0.0/16", "10.0.0.0/8"]), false).unwrap_err();
        assert!(
            err.to_string().contains("at most one CIDR per IP family"),
            "{err}"
        );
    }

    #[test]
    fn without_flags_the_rules_are_all_zero() {
        // kube-proxy without --cluster-cidr: the no-op detector.
        let config = MasqueradeConfig::new(&[], false).unwrap();
        assert_eq!(config.rules(), MasqueradeRules::default());
        let all = MasqueradeConfig::new(&[], true).unwrap().rules();
        assert_ne!(all.flags & lb_common::masquerade_rules::MASQ_RULE_ALL, 0);
    }
}
