//! Where each cell sits in the shared block. The block is laid out for a
//! fixed backend capacity (`MAX_BACKENDS`) so that backends added at run
//! time (config reload) get cells without a new block, and so that a block
//! handed over by an older master of the same layout can be read cell by
//! cell. Pages of backends never used are never written and cost no RSS.
//!
//! ```text
//! header (HEADER cells, master's) | region 0 | … | region slots-1 | carried
//! region: globals | rows 0..=MAX_BACKENDS (counters) | gauges
//! ```
//! Rows and globals hold counters only (what an upgrade carries over);
//! gauges come after them. The last region, "carried", is written only by
//! the master with what its predecessor counted (see `carry`).

/// Backend ids a block has cells for.
pub const MAX_BACKENDS: usize = 1024;
/// Status codes are counted exactly, 100–599.
pub const CODES: usize = 600;
/// Upper bounds of every duration histogram, in seconds.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Cells of one histogram: its buckets (not cumulative), sum in
/// microseconds, count.
pub const HIST: usize = BUCKETS.len() + 2;

/// Why a request went to a backend again (`lb_retries_total{reason}`,
/// and the access log's `retry` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The backend could not be connected: another one was tried.
    Connect,
    /// A reused idle connection was closed by the backend as we sent:
    /// re-sent once on a fresh connection to the same backend.
    Reused,
    /// The backend failed an idempotent request before answering: another
    /// backend was tried.
    Failed,
    /// An HTTP/2 backend refused the stream (not processed): re-sent.
    Refused,
}

impl RetryReason {
    pub const ALL: [RetryReason; 4] = [
        RetryReason::Connect,
        RetryReason::Reused,
        RetryReason::Failed,
        RetryReason::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reused => "reused",
            RetryReason::Failed => "failed",
            RetryReason::Refused => "refused",
        }
    }
}

// Header cells (tree-wide, written by the master).
/// Identifies the layout, so a block from a binary laid out otherwise is
/// never misread after an upgrade.
pub const MAGIC: usize = 0;
pub const RESTARTS: usize = 1;
pub const RELOADS_OK: usize = 2;
pub const RELOADS_FAILED: usize = 3;
/// The pid of the process that created the block (master, or sp mode).
pub const MASTER_PID: usize = 4;
/// `RESTARTS`..`RELOADS_FAILED` counted by predecessors sit at `+ CARRIED`.
pub const CARRIED: usize = 8;
/// Header counters an upgrade carries over.
pub const HEADER_COUNTERS: [usize; 3] = [RESTARTS, RELOADS_OK, RELOADS_FAILED];
pub const HEADER: usize = 16;

// Globals, at the start of each region.
pub const DURATION: usize = 0;
pub const CONNECTIONS_TOTAL: usize = DURATION + HIST;
const GLOBALS: usize = CONNECTIONS_TOTAL + 1;

// One row per backend id, plus row `NONE` for answers the proxy gave itself.
pub const NONE: usize = MAX_BACKENDS;
const ROWS: usize = MAX_BACKENDS + 1;
pub const R_FAILURES: usize = CODES;
pub const R_HEALTH_FAILURES: usize = R_FAILURES + 1;
pub const R_REQUEST_BYTES: usize = R_HEALTH_FAILURES + 1;
pub const R_RESPONSE_BYTES: usize = R_REQUEST_BYTES + 1;
pub const R_RETRIES: usize = R_RESPONSE_BYTES + 1;
pub const R_CONNECT: usize = R_RETRIES + RetryReason::ALL.len();
pub const R_RESPONSE: usize = R_CONNECT + HIST;
pub const ROW: usize = R_RESPONSE + HIST;

/// Cells of a region an upgrade carries over (all counters).
pub const COUNTERS: usize = GLOBALS + ROWS * ROW;
// Gauges, after the counters.
/// Open client connections of the worker.
pub const CONNECTIONS: usize = COUNTERS;
/// The pid of the worker serving this slot, written once its loop runs.
pub const READY: usize = CONNECTIONS + 1;
/// 1 while this worker considers the backend down (zero means "up").
pub const DOWN: usize = READY + 1;
pub const POOL_IDLE: usize = DOWN + MAX_BACKENDS;
pub const POOL_BUSY: usize = POOL_IDLE + MAX_BACKENDS;
pub const REGION: usize = POOL_BUSY + MAX_BACKENDS;

/// The value of `MAGIC` for this layout: a version and the sizes it
/// depends on.
pub const LAYOUT_ID: u64 = (1 << 56) ^ ((REGION as u64) << 20) ^ (ROW as u64);

/// A row's first cell, relative to its region.
pub fn row(backend: usize) -> usize {
    GLOBALS + backend * ROW
}

/// A region's first cell in the block.
pub fn region(index: usize) -> usize {
    HEADER + index * REGION
}

/// Cells in a block for `slots` workers (plus the carried region).
pub fn total(slots: usize) -> usize {
    region(slots + 1)
}

/// The worker slots a block of `cells` holds, if it is laid out as ours.
pub fn slots_of(cells: usize) -> Option<usize> {
    let regions = cells.checked_sub(HEADER)?;
    (regions % REGION == 0 && regions / REGION >= 2).then(|| regions / REGION - 1)
}

/// The cell of the bucket `secs` falls in, within a histogram, if any
/// (above the last bound only `+Inf`, i.e. the count, has it).
pub fn bucket(secs: f64) -> Option<usize> {
    BUCKETS.iter().position(|&le| secs <= le)
}
