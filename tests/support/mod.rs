//! Starting the balancer without the port race of `Lb::start`: between
//! `free_port` and the child's bind, another test thread's `bind(0)` may be
//! handed the same port (Linux gives a just-released port out again often),
//! and `Lb::start`, which only checks that the port accepts a connection,
//! then returns while that other listener holds it. [`start_lb`] waits
//! until the balancer's own process group holds the listening socket.
//! Redundant (but harmless) once the harness checks this itself.
#![allow(dead_code)]

use std::time::Duration;

use crate::common::{Lb, wait_until};

/// `Lb::start(args)`, retried until the balancer itself listens on the port.
pub fn start_lb(args: &[&str]) -> Lb {
    for _ in 0..5 {
        let lb = Lb::start(args);
        if wait_until(Duration::from_secs(3), || {
            owns_listener(lb.pid(), lb.port())
        }) {
            return lb;
        }
        // Dropping it kills it; a new port is tried.
    }
    panic!("load balancer {args:?} never held its listening port");
}

/// Whether the process group led by `pid` (the balancer, and in mp mode
/// its workers) holds the socket listening on `port`: the socket's inode,
/// from /proc/net/tcp{,6}, is among the group's open files.
pub fn owns_listener(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let suffix = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1].ends_with(&suffix) && f[3] == LISTEN {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let holds = |member: u32| {
        std::fs::read_dir(format!("/proc/{member}/fd"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    };
    // The leader first: in sp mode it is the only member.
    !inodes.is_empty() && (holds(pid) || group_members(pid).into_iter().any(holds))
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (comm) state ppid pgrp ...`; comm may contain spaces.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    Some(fields.get(2)? == &pgid.to_string() && fields.first()? != &"Z")
                })
                .unwrap_or(false)
        })
        .collect()
}
