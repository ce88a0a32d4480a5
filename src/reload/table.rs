//! The append-only backend table: backend identity across generations.
//!
//! A backend is its resolved address (`ip:port`), not its place in the
//! file: every per-backend table of a worker (pool, breaker, balancer,
//! health bits, metrics cells) is indexed by `BackendId`, so ids must never
//! shift. A backend seen before keeps its id (and with it its pooled
//! connections, breaker state and metric series); a new one is appended;
//! one no longer configured stays in the table, retired.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::Generation;
use crate::config::Config;
use crate::upstream::BackendId;

pub struct Table;

impl Table {
    /// `wanted` (ids 0..n as parsed) mapped onto `current`'s table. The
    /// result's number is `current`'s; the caller bumps it if it applies.
    pub fn merge(current: &Generation, mut wanted: Config) -> Generation {
        let mut table = current.config.backends.clone();
        let mut active = vec![false; table.len()];
        // Each table entry matches at most one wanted backend: the same
        // address twice in a file is two backends.
        let mut free: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
        for b in table.iter().rev() {
            free.entry(b.addr).or_default().push(b.id.0);
        }
        for mut b in std::mem::take(&mut wanted.backends) {
            let id = match take(&mut free, &table, &b) {
                Some(i) => {
                    // The same endpoint of the same name keeps its label
                    // (and sticky id) while its address stays, even when
                    // its name gained or lost other addresses since.
                    let old = &table[i];
                    if (old.host.as_str(), old.port) == (b.host.as_str(), b.port) {
                        b.label.clone_from(&old.label);
                        b.sticky_id = old.sticky_id;
                    }
                    i
                }
                None => {
                    table.push(b.clone());
                    active.push(false);
                    table.len() - 1
                }
            };
            b.id = BackendId(id);
            table[id] = b;
            active[id] = true;
        }
        wanted.backends = table;
        Generation {
            number: current.number,
            config: wanted,
            active,
        }
    }
}

/// A free table entry at `b`'s address, preferring one of the same
/// `host:port` (two names of one address are two backends, each keeping
/// its own entry).
fn take(
    free: &mut HashMap<SocketAddr, Vec<usize>>,
    table: &[crate::upstream::Backend],
    b: &crate::upstream::Backend,
) -> Option<usize> {
    let ids = free.get_mut(&b.addr)?;
    let same = ids
        .iter()
        .rposition(|&i| (table[i].host.as_str(), table[i].port) == (b.host.as_str(), b.port));
    match same {
        Some(at) => Some(ids.remove(at)),
        None => ids.pop(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli;

    pub(crate) fn config(backends: &[&str]) -> Config {
        let mut argv = vec!["load_balancer"];
        for b in backends {
            argv.extend(["-b", b]);
        }
        cli::parse_from(argv).expect("valid command line")
    }

    fn labels(g: &Generation) -> Vec<(String, u32, bool)> {
        g.config
            .backends
            .iter()
            .map(|b| (b.label.clone(), b.weight, g.active[b.id.0]))
            .collect()
    }

    #[test]
    fn ids_never_shift() {
        let first = Generation::first(config(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]));
        // 2 removed, 4 added, 3 re-weighted and moved to the front.
        let next = Table::merge(
            &first,
            config(&["127.0.0.1:3,weight=5", "127.0.0.1:1", "127.0.0.1:4"]),
        );
        assert_eq!(
            labels(&next),
            [
                ("127.0.0.1:1".into(), 1, true),
                ("127.0.0.1:2".into(), 1, false),
                ("127.0.0.1:3".into(), 5, true),
                ("127.0.0.1:4".into(), 1, true),
            ]
        );
        for (i, b) in next.config.backends.iter().enumerate() {
            assert_eq!(b.id, BackendId(i));
        }
        // A retired backend that comes back gets its old id.
        let again = Table::merge(&next, config(&["127.0.0.1:2"]));
        assert_eq!(
            again.active,
            [false, true, false, false],
            "{:?}",
            labels(&again)
        );
    }

    #[test]
    fn the_same_address_twice_is_two_backends() {
        let first = Generation::first(config(&["127.0.0.1:1"]));
        let next = Table::merge(&first, config(&["127.0.0.1:1", "127.0.0.1:1"]));
        assert_eq!(next.config.backends.len(), 2);
        assert_eq!(next.active, [true, true]);
    }
}
