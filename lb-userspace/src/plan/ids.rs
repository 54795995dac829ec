//! Allocation of backend, table and service ids for one plan. Ids in use,
//! and table ids freed by the previous plan (quarantined), are never handed
//! out. Table and service ids taken for a Service port can be handed back
//! (`undo`) when that port turns out not to be plannable, so a failed port
//! costs nothing.

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{MAX_BACKENDS, MAX_SERVICES, maglev::table_size};

use super::{Applied, PlanError, TableWrite, free_ids::Claims, maglev};
use crate::model::{Backend, ServicePortName};

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
    /// Tables this plan writes, by content, and in allocation order.
    planned_tables: BTreeMap<Vec<Backend>, u32>,
    table_order: Vec<Vec<Backend>>,
    /// Service ids this plan assigns, in allocation order, and by name.
    new_services: Vec<(ServicePortName, u32)>,
    new_service_ids: BTreeMap<ServicePortName, u32>,
    new_service_taken: BTreeSet<u32>,
}

impl<'a> Ids<'a> {
    /// Claims on the free ids `applied` keeps: nothing here walks the
    /// ids in use.
    pub(super) fn new(applied: &'a Applied, max_tables: u32) -> Ids<'a> {
        let index = &applied.index;
        Ids {
            applied,
            backend_ids: Claims::new(&index.free_backends, MAX_BACKENDS),
            table_ids: Claims::new(&index.free_tables, max_tables),
            max_tables,
            service_ids: Claims::new(&index.free_services, MAX_SERVICE_ID + 1),
            planned_tables: BTreeMap::new(),
            table_order: Vec::new(),
            new_services: Vec::new(),
            new_service_ids: BTreeMap::new(),
            new_service_taken: BTreeSet::new(),
        }
    }

    pub(super) fn next_backend(&mut self) -> Result<u32, PlanError> {
        self.backend_ids
            .take_lowest()
            .ok_or(PlanError::BackendsExhausted)
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            tables: self.table_order.len(),
            services: self.new_services.len(),
        }
    }

    /// Hands back every table and service id taken since `mark`.
    pub(super) fn undo(&mut self, mark: Mark) {
        for backends in self.table_order.drain(mark.tables..) {
            if let Some(id) = self.planned_tables.remove(&backends) {
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

    /// The table holding exactly `backends` (whose ids are `backend_ids`,
    /// in the same order): the one already written, or a new one in a free
    /// slot, returned with its contents to write.
    pub(super) fn table_for(
        &mut self,
        backends: &[Backend],
        backend_ids: &[u32],
    ) -> Result<(u32, Option<TableWrite>), PlanError> {
        if let Some(id) = self
            .applied
            .tables
            .get(backends)
            .or_else(|| self.planned_tables.get(backends))
        {
            return Ok((*id, None));
        }
        let id = self
            .table_ids
            .take_lowest()
            .ok_or(PlanError::TablesExhausted {
                max: self.max_tables,
            })?;
        self.planned_tables.insert(backends.to_vec(), id);
        self.table_order.push(backends.to_vec());
        // Sized per backend count (a prime of at least 100 slots each),
        // built in place as the backend ids.
        let mut slots = maglev::table(backends, table_size(backends.len() as u32));
        for slot in &mut slots {
            *slot = backend_ids[*slot as usize];
        }
        let write = TableWrite {
            table_id: id,
            backends: backends.to_vec(),
            slots,
        };
        Ok((id, Some(write)))
    }

    /// A stable id per Service port: the one already known, else the one the
    /// maps carry for this frontend (after a restart), else the smallest
    /// free one. An id out of range (an older agent's) is not kept.
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
                .take_lowest()
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
