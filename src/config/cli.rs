//! Command line (SPEC §1) → validated [`Config`](super::Config).

use std::ffi::OsString;

use super::Config;

/// Why the command line did not yield a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// `--help` / `--version`: print this to stdout and exit 0.
    Display(String),
    /// One line naming the culprit, for stderr; exit 1.
    Invalid(String),
}

pub fn parse_from<I, T>(_args: I) -> Result<Config, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Err(CliError::Invalid("not implemented".into()))
}
