//! Allocation of backend, table and service ids for one plan. Ids in use,
//! and table ids freed by the previous plan (quarantined), are never handed
//! out. Table and service ids taken for a Service port can be handed back
//! (`undo`) when that port turns out not to be plannable, so a failed port
//! costs nothing. Which table each of a port's backend sets takes is
//! `tables`' rule; here only the claims.

use std::collections::BTreeSet;

use lb_common::MAX_SERVICES;

use super::{Applied, PlanError, free_ids::Claims};
use crate::model::ServicePortName;

/// The largest service id. Ids run from 1 (0 is never used) to
/// `MAX_SERVICES - 1`, because a service id indexes the per-service counter
/// array, which has `MAX_SERVICES` slots: an id of `MAX_SERVICES` would
/// have no counters.
pub const MAX_SERVICE_ID: u32 = MAX_SERVICES - 1;

/// Whether a service id found in the maps can be kept.
fn usable_service_id(id: u32) -> bool {
    (1..=MAX_SERVICE_ID).contains(&id)
}

/// Where the allocations of one Service port start, for `undo`.
#[derive(Clone, Copy)]
pub(super) struct Mark {
    tables: usize,
    services: usize,
}

pub(super) struct Ids<'a> {
    applied: &'a Applied,
    backend_ids: Claims<'a>,
    table_ids: Claims<'a>,
    max_tables: u32,
    service_ids: Claims<'a>,
    /// Table ids a Service port of this plan took (kept, rewritten in
    /// place or new), and in order, with whether each was free before.
    claimed_tables: BTreeSet<u32>,
    table_order: Vec<(u32, bool)>,
    /// Service ids this plan assigns, in allocation order, and by name.
    new_services: Vec<(ServicePortName, u32)>,
    /// Looked up once per planned port (foldhash: no order is asked).
    new_service_ids: foldhash::HashMap<ServicePortName, u32>,
    new_service_taken: BTreeSet<u32>,
}

impl<'a> Ids<'a> {
    /// Claims on the free ids `applied` keeps: nothing here walks the
    /// ids in use.
    pub(super) fn new(applied: &'a Applied, max_tables: u32) -> Ids<'a> {
        let index = &applied.index;
        Ids {
            applied,
            backend_ids: Claims::new(&index.free_backends, applied.max_backends.0 + 1),
            table_ids: Claims::new(&index.free_tables, max_tables),
            max_tables,
            service_ids: Claims::new(&index.free_services, MAX_SERVICE_ID + 1),
            claimed_tables: BTreeSet::new(),
            table_order: Vec::new(),
            new_services: Vec::new(),
            new_service_ids: foldhash::HashMap::default(),
            new_service_taken: BTreeSet::new(),
        }
    }

    pub(super) fn next_backend(&mut self) -> Result<u32, PlanError> {
        self.backend_ids.take().ok_or(PlanError::BackendsExhausted {
            max: self.applied.max_backends.0,
        })
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            tables: self.table_order.len(),
            services: self.new_services.len(),
        }
    }

    /// Hands back every table and service id taken since `mark`.
    pub(super) fn undo(&mut self, mark: Mark) {
        for (id, fresh) in self.table_order.drain(mark.tables..) {
            self.claimed_tables.remove(&id);
            if fresh {
                self.table_ids.remove(id);
            }
        }
        for (name, id) in self.new_services.drain(mark.services..) {
            self.new_service_ids.remove(&name);
            self.new_service_taken.remove(&id);
            if self.service_ids.was_free(id) {
                self.service_ids.remove(id);
            }
        }
    }

    pub(super) fn applied(&self) -> &'a Applied {
        self.applied
    }

    /// Whether a Service port of this plan took table `id` already.
    pub(super) fn table_claimed(&self, id: u32) -> bool {
        self.claimed_tables.contains(&id)
    }

    /// Takes table `id`, one its Service port's frontends select from now.
    pub(super) fn claim_table(&mut self, id: u32) {
        self.claimed_tables.insert(id);
        self.table_order.push((id, false));
    }

    /// Takes a free table id.
    pub(super) fn new_table(&mut self) -> Result<u32, PlanError> {
        let id = self.table_ids.take().ok_or(PlanError::TablesExhausted {
            max: self.max_tables,
        })?;
        self.claimed_tables.insert(id);
        self.table_order.push((id, true));
        Ok(id)
    }

    /// A stable id per Service port: the one already known, else the one the
    /// maps carry for this frontend (after a restart), else a free one
    /// (`free_ids`). An id out of range (an older agent's) is not kept.
    pub(super) fn service_id(
        &mut self,
        service: &ServicePortName,
        carried: Option<u32>,
    ) -> Result<u32, PlanError> {
        if let Some(id) = self.applied.services.get(service).copied()
            && usable_service_id(id)
        {
            return Ok(id);
        }
        if let Some(id) = self.new_service_ids.get(service) {
            return Ok(*id);
        }
        // A carried id another port owns stays its: two ports on one id
        // would overwrite each other's service entry.
        let owner = |id: &u32| self.applied.index.service_names.get(id);
        let id = match carried.filter(|id| {
            usable_service_id(*id)
                && !self.new_service_taken.contains(id)
                && owner(id).is_none_or(|name| name == service)
        }) {
            Some(id) => {
                self.service_ids.insert(id);
                id
            }
            None => self
                .service_ids
                .take()
                .ok_or(PlanError::ServicesExhausted)?,
        };
        self.new_services.push((service.clone(), id));
        self.new_service_ids.insert(service.clone(), id);
        self.new_service_taken.insert(id);
        Ok(id)
    }

    /// The service ids this plan assigned.
    pub(super) fn into_new_services(self) -> Vec<(ServicePortName, u32)> {
        self.new_services
    }
}
