//! What the proxy costs, read from /proc: CPU time (utime + stime) and memory (VmRSS, Pss) of
//! a process and every process it forked.

/// Linux USER_HZ (the unit of utime/stime in /proc/PID/stat) is 100 on every architecture.
pub const CLOCK_TICKS_PER_S: f64 = 100.0;

/// utime+stime (clock ticks) of a process, from /proc/PID/stat.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name "(...)": state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `pid` and every descendant process (Kamailio's workers are forked children).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 2..))
                .and_then(|rest| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() && tree.len() < 10_000 {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    tree
}

pub fn tree_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| process_ticks(p)).sum()
}

/// A `Name:   1234 kB` field of a /proc file, in KiB (0 when absent).
fn proc_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a set of processes, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmRSS summed (memory shared between the processes counted once per process).
    pub rss: u64,
    /// Pss summed (shared pages split between their users: the set's real share).
    pub pss: u64,
    pub processes: usize,
}

/// VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of `pid` and its descendants.
pub fn memory_of_tree(pid: u32) -> Memory {
    let mut memory = Memory::default();
    for p in process_tree(pid) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        memory.rss += proc_kib(&status, "VmRSS:");
        memory.processes += 1;
        if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            memory.pss += proc_kib(&rollup, "Pss:");
        }
    }
    memory
}

pub fn own_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| proc_kib(&status, "VmRSS:"))
        .unwrap_or(0)
}
