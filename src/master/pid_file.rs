//! The pid file (`--pid-file`): written whole or not at all, and removed
//! only by the master it names.

use std::io::Write;
use std::path::Path;

/// Written to a temporary file and renamed, so a reader never sees half a
/// pid, and after an upgrade the file names the serving master.
pub(super) fn write(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// At a stop: a pid file that names another process (the new master of
/// an upgrade) is not ours to remove.
pub(super) fn remove_if_ours(path: &Path) {
    let names_us = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if names_us {
        let _ = std::fs::remove_file(path);
    }
}
