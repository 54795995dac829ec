//! Which Maglev table each frontend of a Service port selects from. A
//! table id belongs to one Service port: the port's frontends with the
//! same backend set share one (a port has at most two sets, kube-proxy's
//! cluster and local endpoints: the internal scope can use both, since
//! `internalTrafficPolicy` governs the ClusterIP and
//! `externalTrafficPolicy` the node's own NodePort connections, and both
//! scopes often share one), and Services never share a table, even with
//! the same backends.
//!
//! A set that changes keeps its id: the new table is a new inner map
//! swapped in at the same id in one update (the kernel keeps the old one
//! alive for a program still reading it), or, at the same size, the same
//! map rewritten slot by slot (each slot the old backend or the new one;
//! the old backends stay until no program reads the old slots), so a
//! packet that read the
//! frontend just before sees this Service's old table or its new one,
//! never another Service's, and no id waits. Only an id its Service port
//! stops using (the port goes, a set empties or merges with the other)
//! is quarantined for one plan before another port may take it
//! (`Applied::record`).

use std::collections::BTreeMap;

use lb_common::Frontend4Key;

use super::{PlanError, TableWrite, ids::Ids};
use crate::model::Backend;

/// One frontend of the port: its key and its backends with their ids.
pub(super) struct FrontendSet<'a> {
    pub(super) key: Frontend4Key,
    pub(super) backends: &'a [Backend],
    pub(super) backend_ids: &'a [u32],
}

/// The tables of one Service port: each frontend's table id (`None`: no
/// backends), and the tables to write.
pub(super) struct PortTables {
    pub(super) table_of: Vec<Option<u32>>,
    pub(super) writes: Vec<TableWrite>,
}

/// A backend set of the port, the frontends using it, and the tables they
/// select from now that are the port's own.
struct Group<'a> {
    backends: &'a [Backend],
    backend_ids: &'a [u32],
    own_tables: Vec<u32>,
    id: Option<(u32, bool)>,
}

/// The tables of Service port `service_id`'s frontends: a set keeps a
/// table of the port that holds it already, else rewrites one of the
/// port's own its frontends select from (in place), else takes a free id.
pub(super) fn port_tables(
    service_id: u32,
    frontends: &[FrontendSet<'_>],
    ids: &mut Ids<'_>,
) -> Result<PortTables, PlanError> {
    let applied = ids.applied();
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut by_set: BTreeMap<&[Backend], usize> = BTreeMap::new();
    let mut group_of = Vec::with_capacity(frontends.len());
    for frontend in frontends {
        if frontend.backends.is_empty() {
            group_of.push(None);
            continue;
        }
        let g = *by_set.entry(frontend.backends).or_insert_with(|| {
            groups.push(Group {
                backends: frontend.backends,
                backend_ids: frontend.backend_ids,
                own_tables: Vec::new(),
                id: None,
            });
            groups.len() - 1
        });
        group_of.push(Some(g));
        let own = applied.frontends.get(&frontend.key).filter(|fe| {
            fe.backend_count > 0
                && fe.service_id == service_id
                && applied.index.exclusive_to(fe.table_id, service_id)
        });
        if let Some(fe) = own
            && !groups[g].own_tables.contains(&fe.table_id)
        {
            groups[g].own_tables.push(fe.table_id);
        }
    }
    // First the sets a table of the port holds already (nothing to write),
    // then those that rewrite one of the port's own, then new ids.
    for group in &mut groups {
        let holding = group.own_tables.iter().copied().find(|id| {
            !ids.table_claimed(*id)
                && applied.tables.get(id).map(Vec::as_slice) == Some(group.backends)
        });
        if let Some(id) = holding {
            ids.claim_table(id);
            group.id = Some((id, false));
        }
    }
    for group in groups.iter_mut().filter(|g| g.id.is_none()) {
        if let Some(id) = group
            .own_tables
            .iter()
            .copied()
            .find(|id| !ids.table_claimed(*id))
        {
            ids.claim_table(id);
            group.id = Some((id, true));
        }
    }
    for group in groups.iter_mut().filter(|g| g.id.is_none()) {
        group.id = Some((ids.new_table()?, true));
    }
    let writes = groups
        .iter()
        .filter_map(|group| {
            let (id, write) = group.id?;
            write.then(|| table_write(id, group.backends, group.backend_ids))
        })
        .collect();
    let table_of = group_of
        .into_iter()
        .map(|g| g.and_then(|g| groups[g].id.map(|(id, _)| id)))
        .collect();
    Ok(PortTables { table_of, writes })
}

/// Table `table_id` over `backends` (whose ids are `backend_ids`, in the
/// same order); its slots are built when it is written.
fn table_write(table_id: u32, backends: &[Backend], backend_ids: &[u32]) -> TableWrite {
    TableWrite {
        table_id,
        backends: backends.to_vec(),
        backend_ids: backend_ids.to_vec(),
    }
}
