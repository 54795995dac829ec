//! `lb agent --dry-run`: the plan, printed, and nothing changed.

use anyhow::Result;

use super::{AgentConfig, sync::desired_state};
use crate::{
    datapath::{DatapathMaps, KernelMaps, MemoryMaps},
    plan::{self, Applied},
    source::manifests,
};

/// Prints the plan against what the pinned datapath holds (read only), or
/// against an empty one when nothing is pinned.
pub(super) fn print_plan(config: &AgentConfig) -> Result<()> {
    let snapshot = manifests::Loader::new(&config.manifests, config.limits).load()?;
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
            let empty = MemoryMaps::new(config.max_tables);
            (Applied::read(&empty)?, empty.max_tables())
        }
    };
    // Computed against what is pinned, as the agent would: the current
    // holders of frontends keep them.
    let desired = desired_state(snapshot, &config.node, &config.rules, &applied);
    for problem in &desired.problems {
        println!("skipped: {problem}");
    }
    let plan = plan::plan(&desired, &applied, max_tables);
    for problem in &plan.problems {
        println!("skipped: {problem}");
    }
    if plan.is_empty() {
        println!("# nothing to do: the datapath already matches");
    }
    print!("{plan}");
    Ok(())
}
