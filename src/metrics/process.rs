//! `process_*` for the whole tree: /proc read for the master and each
//! serving worker at scrape time. A pid that vanished (a worker just
//! respawned) is skipped, not an error.

use std::fs;

#[derive(Debug, Default, PartialEq)]
pub struct Tree {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    /// The first pid's start (the master's), seconds since the epoch.
    pub start_time: f64,
}

pub fn tree(pids: &[u32]) -> Tree {
    let ticks = clock_ticks();
    let page = page_size();
    let boot = boot_time();
    let mut tree = Tree::default();
    let mut first = true;
    for &pid in pids {
        let Some(stat) = Stat::read(pid) else {
            continue;
        };
        tree.cpu_seconds += (stat.utime + stat.stime) as f64 / ticks;
        tree.resident_bytes += stat.rss_pages * page;
        tree.open_fds += fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
        if first {
            tree.start_time = boot + stat.start_ticks as f64 / ticks;
            first = false;
        }
    }
    tree
}

/// The fields of `/proc/PID/stat` we report.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    rss_pages: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        Stat::parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Fields after the command name, which is in parentheses and may
    /// itself hold spaces and parentheses: split after the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field N is `fields[N - 3]`.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
            rss_pages: field(24)?,
        })
    }
}

fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        n => n as f64,
    }
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The boot time from /proc/stat's `btime`, seconds since the epoch.
fn boot_time() -> f64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_command_holding_parentheses() {
        let text = "42 (a) b) S 1 2 3 4 5 6 7 8 9 10 110 220 13 14 15 16 17 18 5000 999 77 rest";
        let stat = Stat::parse(text).expect("parsed");
        assert_eq!(
            stat,
            Stat {
                utime: 110,
                stime: 220,
                start_ticks: 5000,
                rss_pages: 77
            }
        );
    }

    #[test]
    fn reads_this_process() {
        let t = tree(&[std::process::id(), u32::MAX]);
        assert!(t.resident_bytes > 0 && t.open_fds > 0, "{t:?}");
        assert!(t.start_time > 1.0e9, "{t:?}");
    }
}
