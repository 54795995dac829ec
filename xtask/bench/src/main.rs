//! The bench runner `cargo xtask bench` builds and starts (as root).
use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use lb_bench::BenchOptions;

/// Counts the heap for the `heap` section (what holds the agent's memory).
#[global_allocator]
static COUNTING: lb_bench::heap::Counting = lb_bench::heap::Counting;

#[derive(Parser)]
#[command(
    about = "lb's benchmark: per-packet cost, throughput and control plane against kube-proxy's rule shapes"
)]
struct Args {
    /// A reduced set in a minute or two (proves the bench works; CI runs it).
    #[arg(long)]
    quick: bool,
    /// Where the run's directory (named by date) goes.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = BenchOptions {
        quick: args.quick,
        out: args.out,
    };
    match lb_bench::run(&options) {
        Ok(report) => {
            println!("bench: report written to {}", report.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
