//! What this binary is: version, git commit and build details, as `build.rs`
//! found them. Read by `--version` (clap's long version) and by anything
//! else that reports the build (e.g. a future `lb_build_info` metric).

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short commit id, or "unknown" (built outside a git checkout).
pub const COMMIT: &str = env!("LB_GIT_COMMIT");
/// The commit's date (not the build's: builds stay reproducible).
pub const COMMIT_DATE: &str = env!("LB_GIT_DATE");

/// `load_balancer --version`: clap prints the name, then this.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit:   ",
    env!("LB_GIT_COMMIT"),
    " (",
    env!("LB_GIT_DATE"),
    ")\ntarget:   ",
    env!("LB_TARGET"),
    " (",
    env!("LB_PROFILE"),
    ")\ncompiler: ",
    env!("LB_RUSTC"),
    "\nrustls:   ",
    env!("LB_RUSTLS"),
);
