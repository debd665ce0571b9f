//! The process's own resources, read from `/proc/self` at each scrape (Linux only; elsewhere,
//! or when a file cannot be read, the value is left out rather than shown as 0).

use std::fs;

/// What the process uses now, each as far as it could be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Usage {
    /// Resident set size, bytes.
    pub(super) resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub(super) open_fds: Option<u64>,
    /// User and system CPU time since start, seconds.
    pub(super) cpu_seconds: Option<f64>,
}

impl Usage {
    pub(super) fn read() -> Usage {
        Usage {
            resident_bytes: fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|statm| resident_pages(&statm))
                .map(|pages| pages.saturating_mul(rustix::param::page_size() as u64)),
            // The listing's own descriptor is among those it lists.
            open_fds: fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| (entries.count() as u64).saturating_sub(1)),
            cpu_seconds: fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|stat| cpu_ticks(&stat))
                .map(|ticks| ticks as f64 / rustix::param::clock_ticks_per_second() as f64),
        }
    }
}

/// `/proc/self/statm`: sizes in pages, the second one resident (proc(5)).
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/self/stat`: utime and stime, fields 14 and 15, in clock ticks (proc(5)). The second
/// field, the command name in parentheses, may itself hold spaces and parentheses, so the
/// fields are counted from after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_files_are_read_by_their_fields() {
        assert_eq!(resident_pages("5000 1234 300 1 0 400 0\n"), Some(1234));
        assert_eq!(resident_pages(""), None);
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 8 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let usage = Usage::read();
        assert!(
            usage.resident_bytes.is_some_and(|bytes| bytes > 0),
            "{usage:?}"
        );
        assert!(usage.open_fds.is_some_and(|fds| fds >= 3), "{usage:?}");
        assert!(usage.cpu_seconds.is_some(), "{usage:?}");
    }
}
