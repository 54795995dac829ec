//! `lb agent --dry-run`: the plan, printed, and nothing changed.

use std::time::Duration;

use anyhow::{Result, bail};

use super::{AgentConfig, sync::holders};
use crate::{
    datapath::{DatapathMaps, KernelMaps, MemoryMaps},
    desired::{self, Rules},
    model::{DesiredState, NodeFacts},
    plan::{self, Applied},
    source::{Snapshot, Source},
};

/// How long a dry run waits for a source that cannot answer yet (the API
/// server's initial lists, this node's Node object).
const WAIT_FOR_SOURCE: Duration = Duration::from_secs(60);

/// Prints the plan against what the pinned datapath holds (read only), or
/// against an empty one when nothing is pinned.
pub(super) async fn print_plan(source: &mut impl Source, config: &AgentConfig) -> Result<()> {
    let mut snapshot = first_snapshot(source).await?;
    let (applied, max_tables) = match KernelMaps::open_pinned(&config.pin_dir) {
        Ok(maps) => {
            println!(
                "# against the datapath pinned at {}",
                config.pin_dir.display()
            );
            (Applied::read(&maps)?, maps.max_tables())
        }
        Err(err) => {
            println!("# against an empty datapath ({err})");
            let mut empty = MemoryMaps::new(config.max_tables);
            empty.max_backends = config
                .max_backends
                .unwrap_or(lb_common::DEFAULT_MAX_BACKENDS);
            (Applied::read(&empty)?, empty.max_tables())
        }
    };
    let node = snapshot.node.take().unwrap_or_else(|| config.node.clone());
    // Computed against what is pinned, as the agent would: the current
    // holders of frontends keep them.
    let desired = desired_state(snapshot, &node, &config.rules, &applied);
    for problem in &desired.problems {
        println!("skipped: {problem}");
    }
    let mut plan = plan::plan(&desired, &applied, max_tables);
    let cidrs = config.rules.ipv4_service_cidrs();
    plan::plan_service_cidrs(&cidrs, &applied, &mut plan);
    for problem in &plan.problems {
        println!("skipped: {problem}");
    }
    if plan.is_empty() {
        println!("# nothing to do: the datapath already matches");
    }
    print!("{plan}");
    Ok(())
}

/// The source's first complete snapshot; a source that is still waiting
/// (cluster mode before its lists complete) is waited for, within bounds.
async fn first_snapshot(source: &mut impl Source) -> Result<Snapshot> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_SOURCE;
    let mut said = String::new();
    loop {
        let err = match source.snapshot().await {
            Ok(snapshot) => return Ok(snapshot),
            Err(err) if err.is_waiting() => err,
            Err(err) => return Err(err.into()),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("gave up after {} s: {err}", WAIT_FOR_SOURCE.as_secs());
        }
        if err.to_string() != said {
            said = err.to_string();
            eprintln!("# waiting: {said}");
        }
        let _ = tokio::time::timeout_at(deadline, source.changed()).await;
    }
}

/// The desired state of a snapshot: the objects the source could not read
/// are reported first, then those the desired state could not use. The
/// frontends `applied` holds keep their owners against newcomers.
fn desired_state(
    snapshot: Snapshot,
    node: &NodeFacts,
    rules: &Rules,
    applied: &Applied,
) -> DesiredState {
    let holders = holders(applied);
    // The snapshot's own objects: a copy of them was the dry run's peak.
    let mut state = desired::compute(&snapshot.services, &snapshot.slices, node, rules, &holders);
    let mut problems = snapshot.problems;
    problems.append(&mut state.problems);
    state.problems = problems;
    state
}
