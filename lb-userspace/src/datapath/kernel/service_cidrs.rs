//! The service-CIDR maps (`--service-cidr`): the allocated ClusterIPs and
//! the CIDRs, as plan/apply writes and reads them back. Addresses sit in
//! network order, as packets carry them.

use std::net::Ipv4Addr;

use aya::maps::lpm_trie::Key;
use lb_common::service_cidr::{
    CLUSTER_IP_ALLOCATED, CLUSTER_IPS4, MAX_CLUSTER_IPS, MAX_SERVICE_CIDRS, SERVICE_CIDR_MEMBER,
    SERVICE_CIDRS4,
};

use super::{KernelMaps, ignore_missing, insert_err, map_err};
use crate::{datapath::MapsError, model::SourceRange};

fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

fn addr(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(be.to_ne_bytes())
}

fn cidr_key(cidr: &SourceRange) -> Key<u32> {
    Key::new(u32::from(cidr.prefix_len), be(cidr.network))
}

impl KernelMaps {
    pub(super) fn cluster_ip_entries(&self) -> Result<Vec<Ipv4Addr>, MapsError> {
        let keys: Vec<u32> = self
            .cluster_ips
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(CLUSTER_IPS4, "iterate"))?;
        Ok(keys.into_iter().map(addr).collect())
    }

    pub(super) fn insert_cluster_ip(&mut self, ip: Ipv4Addr) -> Result<(), MapsError> {
        self.cluster_ips
            .insert(&be(ip), &CLUSTER_IP_ALLOCATED, 0)
            .map_err(insert_err(CLUSTER_IPS4, MAX_CLUSTER_IPS))
    }

    pub(super) fn delete_cluster_ip(&mut self, ip: Ipv4Addr) -> Result<(), MapsError> {
        ignore_missing(self.cluster_ips.remove(&be(ip)))
            .map(drop)
            .map_err(map_err(CLUSTER_IPS4, "delete"))
    }

    pub(super) fn service_cidr_entries(&self) -> Result<Vec<SourceRange>, MapsError> {
        let keys: Vec<Key<u32>> = self
            .service_cidrs
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(SERVICE_CIDRS4, "iterate"))?;
        Ok(keys
            .iter()
            .filter_map(|key| SourceRange::new(addr(key.data()), key.prefix_len() as u8))
            .collect())
    }

    pub(super) fn insert_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError> {
        self.service_cidrs
            .insert(&cidr_key(cidr), &SERVICE_CIDR_MEMBER, 0)
            .map_err(insert_err(SERVICE_CIDRS4, MAX_SERVICE_CIDRS))
    }

    pub(super) fn delete_service_cidr(&mut self, cidr: &SourceRange) -> Result<(), MapsError> {
        ignore_missing(self.service_cidrs.remove(&cidr_key(cidr)))
            .map(drop)
            .map_err(map_err(SERVICE_CIDRS4, "delete"))
    }
}
