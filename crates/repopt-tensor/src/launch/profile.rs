//! Where a step's time goes, kernel by kernel. With profiling on, every launch is submitted
//! and waited for on its own, and the time from recording to completion is added to its
//! kernel's total. The waits make a profiled step slower than a real one, and launches
//! then no longer overlap, so the totals rank kernels rather than add up to a step.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::kernels::KernelInfo;

/// One kernel's share of the profiled work.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `shader.wgsl::entry`.
    pub kernel: String,
    /// Launches.
    pub calls: u64,
    /// Seconds from recording to completion, summed over the launches.
    pub seconds: f64,
}

#[derive(Default)]
pub(crate) struct Profile {
    on: AtomicBool,
    times: Mutex<BTreeMap<String, (u64, f64)>>,
}

impl Profile {
    pub(crate) fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Turns profiling on or off; either way the totals start again from zero.
    pub(crate) fn set(&self, on: bool) {
        self.times.lock().expect("profile lock").clear();
        self.on.store(on, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, kernel: &KernelInfo, seconds: f64) {
        let mut times = self.times.lock().expect("profile lock");
        let entry = times.entry(kernel.to_string()).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }

    /// The totals, slowest kernel first.
    pub(crate) fn report(&self) -> Vec<KernelTime> {
        let times = self.times.lock().expect("profile lock");
        let mut out: Vec<KernelTime> = times
            .iter()
            .map(|(k, &(calls, seconds))| KernelTime {
                kernel: k.clone(),
                calls,
                seconds,
            })
            .collect();
        out.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        out
    }
}
