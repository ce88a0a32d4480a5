//! Build details for `load_balancer --version` (`src/build_info.rs`): the git
//! commit and its date, the target, the compiler and the TLS stack's version.
//! Everything falls back to "unknown": a source tarball has no git, and the
//! build must never fail for want of a version string.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    // Packagers building from a tarball can name the commit themselves.
    println!("cargo:rerun-if-env-changed=LB_BUILD_COMMIT");
    let (commit, date) = match std::env::var("LB_BUILD_COMMIT") {
        Ok(commit) if !commit.is_empty() => (commit, "unknown".to_string()),
        _ => git_commit(&root).unwrap_or_else(|| ("unknown".into(), "unknown".into())),
    };
    println!("cargo:rustc-env=LB_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=LB_GIT_DATE={date}");
    println!(
        "cargo:rustc-env=LB_TARGET={}",
        std::env::var("TARGET").unwrap_or_else(|_| "unknown".into())
    );
    println!(
        "cargo:rustc-env=LB_PROFILE={}",
        std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into())
    );
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc = run(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LB_RUSTC={rustc}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!(
        "cargo:rustc-env=LB_RUSTLS={}",
        locked_version(&root.join("Cargo.lock"), "rustls").unwrap_or_else(|| "unknown".into())
    );
}

/// The short commit of HEAD and its commit date, if `root` is the top of a
/// git work tree (not a directory inside some other repository, as in a
/// distribution's packaging tree), and the files that move when HEAD does,
/// so that a new commit rebuilds with the new id.
fn git_commit(root: &Path) -> Option<(String, String)> {
    let git = |args: &[&str]| run(Command::new("git").args(args).current_dir(root));
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = root.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let date = git(&["log", "-1", "--format=%cs"]).unwrap_or_else(|| "unknown".into());
    Some((commit, date))
}

/// The version of `name` the lock file pins (the first, if several).
fn locked_version(lock: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let wanted = format!("name = \"{name}\"");
    let mut lines = text.lines();
    lines.find(|l| l.trim() == wanted)?;
    let version = lines.next()?.trim().strip_prefix("version = \"")?;
    Some(version.trim_end_matches('"').to_string())
}

/// A command's first line of output, if it ran and succeeded.
fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}
