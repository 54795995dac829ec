//! Which session-affinity entries a plan makes stale: a client remembered
//! for an endpoint that left the Service port must choose afresh (in
//! kube-proxy's iptables mode the endpoint's KUBE-SEP chain and the
//! `-m recent --rcheck` rule that sent clients to it go away with it).

use std::collections::{BTreeMap, BTreeSet};

use super::{Applied, Plan};

/// The (service id, backend id) pairs that a Service port with affinity
/// used before `plan` and no longer uses after it. Empty, and nearly free,
/// when no frontend has affinity.
pub(super) fn affinity_purge(applied: &Applied, plan: &Plan) -> Vec<(u32, u32)> {
    let with_affinity = |value: &lb_common::FrontendValue| value.affinity_timeout_s() != 0;
    let services: BTreeSet<u32> = applied
        .frontends
        .values()
        .chain(plan.set_frontends.iter().map(|(_, v)| v))
        .filter(|v| with_affinity(v))
        .map(|v| v.service_id)
        .collect();
    if services.is_empty() {
        return Vec::new();
    }
    let mut after = applied.clone();
    after.record(plan);
    let (before, after) = (members(applied, &services), members(&after, &services));
    let mut stale = Vec::new();
    for (service, backends) in before {
        let kept = after.get(&service);
        for backend in backends {
            if !kept.is_some_and(|k| k.contains(&backend)) {
                stale.push((service, backend));
            }
        }
    }
    stale
}

/// The backend ids each of `services` reaches through its frontends.
fn members(applied: &Applied, services: &BTreeSet<u32>) -> BTreeMap<u32, BTreeSet<u32>> {
    let mut out: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for value in applied.frontends.values() {
        if value.backend_count == 0 || !services.contains(&value.service_id) {
            continue;
        }
        out.entry(value.service_id)
            .or_default()
            .extend(applied.table_backend_ids(value.table_id));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{
        datapath::MemoryMaps,
        desired::{Holders, Rules, compute},
        model::{DesiredState, NodeFacts},
        plan::{Applied, apply, plan},
        source::manifests::parse_documents,
    };

    fn state(endpoints: &str, affinity: &str) -> DesiredState {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: a}}\nspec: {{clusterIP: 10.96.0.9, {affinity} ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s-1, namespace: a, labels: {{kubernetes.io/service-name: s}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: {endpoints}\n"
        );
        let set = parse_documents("a.yaml", &text);
        let node = NodeFacts {
            name: "node-a".into(),
            ..NodeFacts::default()
        };
        compute(
            &set.services,
            &set.slices,
            &node,
            &Rules::default(),
            &Holders::default(),
        )
    }

    const TWO: &str = "[{addresses: [10.244.1.1]}, {addresses: [10.244.1.2]}]";
    const ONE: &str = "[{addresses: [10.244.1.1]}]";

    /// Upstream: an endpoint that leaves takes its KUBE-SEP chain and its
    /// `-m recent` rule with it: its remembered clients choose afresh.
    /// Only ports with affinity are purged; the kept endpoint keeps its
    /// clients.
    #[test]
    fn an_endpoint_that_leaves_a_port_with_affinity_is_purged() {
        let affinity = "sessionAffinity: ClientIP,";
        let mut maps = MemoryMaps::new(8);
        let mut applied = Applied::default();
        let first = plan(&state(TWO, affinity), &applied, 8);
        assert_eq!(first.purge_affinity, vec![]);
        apply(&first, &mut maps, &mut applied).unwrap();
        let gone = applied
            .backends
            .iter()
            .find(|(_, b)| b.addr_be == u32::from_ne_bytes([10, 244, 1, 2]))
            .map(|(id, _)| *id)
            .unwrap();
        let service = applied.frontends.values().next().unwrap().service_id;
        let second = plan(&state(ONE, affinity), &applied, 8);
        assert_eq!(second.purge_affinity, vec![(service, gone)]);
        apply(&second, &mut maps, &mut applied).unwrap();
        assert_eq!(maps.purged_affinity, vec![(service, gone)]);

        let (mut maps, mut applied) = (MemoryMaps::new(8), Applied::default());
        apply(&plan(&state(TWO, ""), &applied, 8), &mut maps, &mut applied).unwrap();
        assert_eq!(plan(&state(ONE, ""), &applied, 8).purge_affinity, vec![]);
    }
}
