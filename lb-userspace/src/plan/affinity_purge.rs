//! Which session-affinity entries a plan makes stale: a client remembered
//! for an endpoint that left the Service port must choose afresh (in
//! kube-proxy's iptables mode the endpoint's KUBE-SEP chain and the
//! `-m recent --rcheck` rule that sent clients to it go away with it).

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{Frontend4Key, FrontendValue};

use super::{Applied, Plan};

/// The (service id, backend id) pairs that a Service port with affinity
/// used before `plan` and no longer uses after it. Only the ports whose
/// frontends the plan changes or removes can lose a backend, so a plan
/// that touches no frontend with affinity costs nothing more.
pub(super) fn affinity_purge(applied: &Applied, plan: &Plan) -> Vec<(u32, u32)> {
    let touched = touched_services(applied, plan);
    if touched.is_empty() {
        return Vec::new();
    }
    let set: BTreeMap<&Frontend4Key, &FrontendValue> =
        plan.set_frontends.iter().map(|(k, v)| (k, v)).collect();
    let removed: BTreeSet<&Frontend4Key> = plan.remove_frontends.iter().collect();
    let mut before: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let mut after: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for (key, value) in &applied.frontends {
        if touched.contains(&value.service_id) {
            reach(&mut before, value, |id| {
                applied.table_backend_ids(id).iter().copied().collect()
            });
        }
        if !set.contains_key(key) && !removed.contains(key) && touched.contains(&value.service_id) {
            reach(&mut after, value, |id| tables_after(applied, plan, id));
        }
    }
    for value in set.values() {
        if touched.contains(&value.service_id) {
            reach(&mut after, value, |id| tables_after(applied, plan, id));
        }
    }
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

/// Service ports with affinity (before or after) whose frontends the plan
/// sets or removes.
fn touched_services(applied: &Applied, plan: &Plan) -> BTreeSet<u32> {
    let has_affinity = |value: &&FrontendValue| value.affinity_timeout_s() != 0;
    let replaced = plan
        .set_frontends
        .iter()
        .map(|(k, _)| k)
        .chain(&plan.remove_frontends)
        .filter_map(|key| applied.frontends.get(key));
    plan.set_frontends
        .iter()
        .map(|(_, v)| v)
        .chain(replaced)
        .filter(has_affinity)
        .map(|v| v.service_id)
        .collect()
}

/// Adds the backend ids `value`'s table names to its service's set.
fn reach(
    out: &mut BTreeMap<u32, BTreeSet<u32>>,
    value: &FrontendValue,
    table: impl Fn(u32) -> BTreeSet<u32>,
) {
    if value.backend_count > 0 {
        out.entry(value.service_id)
            .or_default()
            .extend(table(value.table_id));
    }
}

/// A table's backend ids once the plan is applied: as written by it, or
/// as the maps hold them.
fn tables_after(applied: &Applied, plan: &Plan, table_id: u32) -> BTreeSet<u32> {
    match plan.write_tables.iter().find(|t| t.table_id == table_id) {
        Some(written) => written.backend_ids.iter().copied().collect(),
        None => applied
            .table_backend_ids(table_id)
            .iter()
            .copied()
            .collect(),
    }
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
