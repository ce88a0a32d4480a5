//! `load_balancer --generate man|bash|zsh|fish`: the man page and shell
//! completions, generated from the clap definition of the command line so
//! they always describe the binary that prints them. Called by `main`
//! before the command line is parsed; a hidden flag, not part of `--help`.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::build_info;
use crate::config::cli;

/// The flag, which must come first: `load_balancer --generate WHAT`.
pub const FLAG: &str = "--generate";
const WHATS: &str = "man, bash, zsh or fish";

/// What `--generate` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Man,
    Completion(Shell),
}

impl Output {
    pub fn parse(what: &str) -> Option<Output> {
        Some(match what {
            "man" => Output::Man,
            "bash" => Output::Completion(Shell::Bash),
            "zsh" => Output::Completion(Shell::Zsh),
            "fish" => Output::Completion(Shell::Fish),
            _ => return None,
        })
    }
}

/// If `args` (argv[0] first) ask for `--generate`, writes the page or
/// script to stdout and returns the exit code; `None` otherwise.
pub fn from_args(args: &[OsString]) -> Option<ExitCode> {
    let first = args.get(1)?.to_str()?;
    let what = match first.strip_prefix(FLAG)? {
        "" => args.get(2).and_then(|a| a.to_str()),
        rest => rest.strip_prefix('='),
    };
    let output = match (what.and_then(Output::parse), args.len()) {
        (Some(output), n) if n <= 3 => output,
        _ => {
            eprintln!("load_balancer: {FLAG} takes one of {WHATS}, and nothing else");
            return Some(ExitCode::from(1));
        }
    };
    match write(output, &mut io::stdout().lock()) {
        // `--generate man | head` is not a failure.
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("load_balancer: {FLAG}: cannot write to stdout: {e}");
            Some(ExitCode::from(1))
        }
    }
}

/// Writes the man page or a completion script.
pub fn write(output: Output, out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cli::command();
    match output {
        Output::Man => man_page(cmd, out),
        Output::Completion(shell) => {
            clap_complete::generate(shell, &mut cmd, "load_balancer", out);
            Ok(())
        }
    }
}

/// clap's sections (name, synopsis, options by heading), then the ones a
/// daemon's page needs that clap does not know: signals, logging,
/// environment, exit status. Section 8: system administration.
fn man_page(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let notes = cmd.get_after_help().map(|h| h.to_string());
    let mut man = Man::new(cmd)
        .title("LOAD_BALANCER")
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("load_balancer {}", build_info::VERSION));
    if build_info::COMMIT_DATE != "unknown" {
        man = man.date(build_info::COMMIT_DATE);
    }
    // clap_mangen renders section by section, each with its own copy of
    // the page's preamble; collected first, the copies are dropped below.
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut roff = Roff::new();
    if let Some(notes) = notes {
        section(&mut roff, "NOTES", &[]);
        for paragraph in notes.split("\n\n") {
            roff.control("PP", []);
            roff.text([roman(paragraph.replace('\n', " "))]);
        }
    }
    section(
        &mut roff,
        "SIGNALS",
        &[
            (
                "SIGTERM, SIGINT",
                "Graceful stop: stop accepting, finish requests in flight (up to 30 s), exit 0. \
                 A second signal stops at once.",
            ),
            (
                "SIGUSR2",
                "Binary upgrade (mp mode): re-execute the binary at its original path with the \
                 same arguments, handing over the listening sockets; the old master drains and \
                 exits once the new one serves, and keeps serving if it fails.",
            ),
            (
                "SIGHUP",
                "Re-read the config file given with -c (a version without config reload logs \
                 the signal and ignores it).",
            ),
        ],
    );
    section(
        &mut roff,
        "LOGGING",
        &[(
            "stderr",
            "One line per event, written whole: an RFC 3339 UTC time with milliseconds, the \
             level, the process (master, or worker N) and its pid, then the message, e.g. \
             2025-06-01T10:00:00.123Z info  worker 1 (pid 4242): serving on 0.0.0.0:8080. \
             Under the systemd journal the line starts with its syslog priority (<3> to <7>) \
             instead of the time. --loglevel filters.",
        )],
    );
    section(
        &mut roff,
        "ENVIRONMENT",
        &[
            (
                "NOTIFY_SOCKET",
                "Set by systemd for Type=notify: the master reports READY=1, its MAINPID after \
                 an upgrade, and STOPPING=1.",
            ),
            (
                "JOURNAL_STREAM",
                "Set by systemd when stderr is the journal: log lines carry priority prefixes \
                 instead of times.",
            ),
        ],
    );
    section(
        &mut roff,
        "EXIT STATUS",
        &[
            (
                "0",
                "Stopped by a signal after draining, or --help, --version, --generate.",
            ),
            (
                "1",
                "A start-up error (bad flag or config, no backend, port in use); one line on \
                 stderr names the culprit.",
            ),
        ],
    );
    section(&mut roff, "SEE ALSO", &[]);
    roff.text([roman(
        "systemd.service(5), systemd.exec(5); the project's README.md for the config file, \
         metrics and upgrade procedure.",
    )]);
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    const PREAMBLE: [&str; 2] = [".ie \\n(.g .ds Aq \\(aq", ".el .ds Aq '"];
    let mut kept = [false; 2];
    for line in String::from_utf8_lossy(&page).lines() {
        if let Some(i) = PREAMBLE.iter().position(|p| *p == line) {
            if kept[i] {
                continue;
            }
            kept[i] = true;
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A `.SH` heading, then one tagged paragraph per `(tag, text)`.
fn section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", []);
        roff.text([bold(*tag)]);
        roff.text([roman(*text)]);
    }
}
