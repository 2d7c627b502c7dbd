//! `cargo bench`: the whole benchmark suite on the adapter `REPOPT_ADAPTER` selects (the
//! best one by default), printed as tables with the performance targets.
//!
//! `REPOPT_BENCH_QUICK=1` takes fewer samples; `repopt bench` offers each part on its own with
//! sizes as flags and JSON output.

use repopt::bench::suite::{SuiteSizes, run_suite};
use repopt::bench::timing::TimingBudget;
use repopt::tensor::{AdapterSelector, Gpu};

fn main() -> anyhow::Result<()> {
    let selector = AdapterSelector::from_env();
    let gpu = Gpu::from_env()?;
    eprintln!(
        "adapter: {} ({})",
        gpu.adapter().name,
        gpu.adapter().backend.to_str()
    );
    let budget = if std::env::var_os("REPOPT_BENCH_QUICK").is_some() {
        TimingBudget::quick()
    } else {
        TimingBudget::default()
    };
    let results = run_suite(&gpu, &selector, &SuiteSizes::default(), budget)?;
    println!("{}", results.tables());
    Ok(())
}
