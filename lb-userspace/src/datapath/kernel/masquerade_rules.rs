//! kube-proxy's masquerade rules for ClusterIP traffic in the datapath
//! (`lb_masq_rules_v1`): `--cluster-cidr` and `--masquerade-all`, written
//! by the agent at start.

use lb_common::masquerade_rules::{MASQUERADE_RULES, MasqueradeRules};

use super::{KernelMaps, map_err};
use crate::datapath::MapsError;

impl KernelMaps {
    /// The rules as the datapath holds them.
    pub fn masquerade_rules(&self) -> Result<MasqueradeRules, MapsError> {
        self.masquerade_rules
            .get(&0, 0)
            .map_err(map_err(MASQUERADE_RULES, "lookup"))
    }

    /// New connections to ClusterIPs follow `rules` from now on.
    pub fn set_masquerade_rules(&mut self, rules: &MasqueradeRules) -> Result<(), MapsError> {
        self.masquerade_rules
            .set(0, rules, 0)
            .map_err(map_err(MASQUERADE_RULES, "update"))
    }
}
