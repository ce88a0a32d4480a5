//! The process's backend for the `log` facade: each record becomes one line
//! on stderr, formatted into a stack buffer and written with one write(2),
//! so lines of the master and its workers on one pipe never interleave.
//! Call sites use the `log` crate's macros (re-exported as `crate::info!`
//! and so on); a filtered-out record costs one relaxed load, no formatting.

use std::fmt;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogLevel, Mode};

/// A line of up to this many bytes reaches a pipe in one piece (Linux's
/// PIPE_BUF); longer messages are cut to fit and end in `...`.
pub const LINE_MAX: usize = 4096;
const CUT_MARK: &[u8] = b"...\n";

/// Which process of the tree a line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    /// A worker by its slot index; the sp process is `Worker(0)`.
    Worker(usize),
}

impl Role {
    /// The role of a process started with `slot` from a master (or none)
    /// in `mode`.
    pub fn of(slot: Option<usize>, mode: Mode) -> Role {
        match (slot, mode) {
            (Some(slot), _) => Role::Worker(slot),
            (None, Mode::Single) => Role::Worker(0),
            (None, Mode::Multi) => Role::Master,
        }
    }
}

// 0 is the master, n + 1 worker n: one atomic, no lock on the write path.
static ROLE: AtomicUsize = AtomicUsize::new(0);
// getpid(2) is a system call per line otherwise (glibc stopped caching it).
static PID: AtomicU32 = AtomicU32::new(0);
static JOURNAL: AtomicBool = AtomicBool::new(false);
static LOGGER: Stderr = Stderr;

/// Installs the logger (once per process; later calls only change the
/// level) and filters by `--loglevel`. Records before the first call are
/// dropped.
pub fn set_level(level: LogLevel) {
    if ::log::set_logger(&LOGGER).is_ok() {
        JOURNAL.store(stderr_is_journal(), Ordering::Relaxed);
        PID.store(std::process::id(), Ordering::Relaxed);
    }
    ::log::set_max_level(filter(level));
}

/// Names this process in every line that follows.
pub fn set_role(role: Role) {
    let code = match role {
        Role::Master => 0,
        Role::Worker(slot) => slot.saturating_add(1),
    };
    ROLE.store(code, Ordering::Relaxed);
    PID.store(std::process::id(), Ordering::Relaxed);
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Err => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
    }
}

fn role() -> Role {
    match ROLE.load(Ordering::Relaxed) {
        0 => Role::Master,
        n => Role::Worker(n - 1),
    }
}

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Libraries' records only when they matter to an operator: their
        // debug output is about their internals, not our traffic.
        metadata.level() <= ::log::max_level()
            && (metadata.target().starts_with("load_balancer") || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let stamp = if JOURNAL.load(Ordering::Relaxed) {
            Stamp::Journal
        } else {
            Stamp::Utc(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            )
        };
        let pid = match PID.load(Ordering::Relaxed) {
            0 => std::process::id(),
            pid => pid,
        };
        let mut line = Line::new();
        line.format(stamp, record.level(), role(), pid, record.args());
        // One write(2) (std's Stderr is unbuffered); a failed write has
        // nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(line.bytes());
    }

    fn flush(&self) {}
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM`
/// to its `device:inode`, and a child whose stderr was redirected inherits
/// the variable, hence the comparison (as sd_journal_stream_fd(3) advises).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    let stat = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| std::fs::File::from(fd).metadata());
    stat.is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// What starts a line: an RFC 3339 UTC time, or for the journal (which
/// stamps lines itself) the syslog priority `<N>`.
#[derive(Clone, Copy, Debug)]
enum Stamp {
    Utc(Duration),
    Journal,
}

/// One line being formatted, on the stack.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
            cut: false,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// `<stamp> <level> <role> (pid <pid>): <message>\n`, the message's
    /// control characters escaped so that one record is one line.
    fn format(
        &mut self,
        stamp: Stamp,
        level: Level,
        role: Role,
        pid: u32,
        message: &fmt::Arguments<'_>,
    ) {
        match stamp {
            Stamp::Utc(since_epoch) => {
                self.timestamp(since_epoch);
                self.push(b" ");
            }
            Stamp::Journal => {
                self.push(b"<");
                self.number(priority(level).into(), 1);
                self.push(b">");
            }
        }
        self.push(level_word(level));
        match role {
            Role::Master => self.push(b" master"),
            Role::Worker(slot) => {
                self.push(b" worker ");
                self.number(slot as u64, 1);
            }
        }
        self.push(b" (pid ");
        self.number(pid.into(), 1);
        self.push(b"): ");
        let _ = fmt::write(self, *message);
        if self.cut {
            self.buf[self.len..self.len + CUT_MARK.len()].copy_from_slice(CUT_MARK);
            self.len += CUT_MARK.len();
        } else {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
    }

    /// Appends `bytes` whole if they fit (keeping room for the cut mark);
    /// otherwise the line is cut here and takes nothing more.
    fn push(&mut self, bytes: &[u8]) {
        let room = (LINE_MAX - CUT_MARK.len()).saturating_sub(self.len);
        if self.cut || bytes.len() > room {
            self.cut = true;
            return;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// `n` in decimal, zero-padded to `width` digits.
    fn number(&mut self, mut n: u64, width: usize) {
        let mut digits = [b'0'; 20];
        let mut at = digits.len();
        while n > 0 || digits.len() - at < width {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        self.push(&digits[at..]);
    }

    /// `2025-06-01T10:00:00.123Z`.
    fn timestamp(&mut self, since_epoch: Duration) {
        self.push(&crate::calendar::rfc3339_seconds(since_epoch.as_secs()));
        self.push(b".");
        self.push(&crate::calendar::millis(since_epoch.subsec_millis()));
        self.push(b"Z");
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while !rest.is_empty() && !self.cut {
            let run = rest
                .bytes()
                .position(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
                .unwrap_or(rest.len());
            let room = (LINE_MAX - CUT_MARK.len()).saturating_sub(self.len);
            if run > room {
                // Cut on a character boundary, so the line stays UTF-8.
                let mut end = room;
                while !rest.is_char_boundary(end) {
                    end -= 1;
                }
                self.push(&rest.as_bytes()[..end]);
                self.cut = true;
                break;
            }
            self.push(&rest.as_bytes()[..run]);
            let Some(&control) = rest.as_bytes().get(run) else {
                break;
            };
            match control {
                b'\n' => self.push(b"\\n"),
                b'\r' => self.push(b"\\r"),
                _ => self.push(&hex_escape(control)),
            }
            rest = &rest[run + 1..];
        }
        // Never an error: the rest of a cut message is skipped, not failed.
        Ok(())
    }
}

/// `\xHH`: how the logs show a byte that may not stand as itself.
pub(crate) fn hex_escape(b: u8) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]
}

/// The syslog priority systemd reads from a line's `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Padded to one width, so messages line up.
fn level_word(level: Level) -> &'static [u8] {
    match level {
        Level::Error => b"error",
        Level::Warn => b"warn ",
        Level::Info => b"info ",
        Level::Debug => b"debug",
        Level::Trace => b"trace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stamp: Stamp, level: Level, role: Role, message: fmt::Arguments<'_>) -> String {
        let mut line = Line::new();
        line.format(stamp, level, role, 4242, &message);
        String::from_utf8(line.bytes().to_vec()).expect("UTF-8")
    }

    fn at(secs: u64, millis: u32) -> Stamp {
        Stamp::Utc(Duration::new(secs, millis * 1_000_000))
    }

    #[test]
    fn a_line_has_time_level_role_pid_and_message() {
        assert_eq!(
            line(
                at(0, 0),
                Level::Info,
                Role::Master,
                format_args!("hello {}", 1)
            ),
            "1970-01-01T00:00:00.000Z info  master (pid 4242): hello 1\n"
        );
        // 2024-02-29 (a leap day) 23:59:59.999 UTC.
        assert_eq!(
            line(
                at(1_709_251_199, 999),
                Level::Error,
                Role::Worker(13),
                format_args!("x")
            ),
            "2024-02-29T23:59:59.999Z error worker 13 (pid 4242): x\n"
        );
    }

    #[test]
    fn the_journal_gets_a_priority_instead_of_a_time() {
        let cases = [
            (Level::Error, "<3>error"),
            (Level::Warn, "<4>warn "),
            (Level::Info, "<6>info "),
            (Level::Debug, "<7>debug"),
        ];
        for (level, start) in cases {
            let text = line(Stamp::Journal, level, Role::Worker(0), format_args!("m"));
            assert_eq!(text, format!("{start} worker 0 (pid 4242): m\n"));
        }
    }

    #[test]
    fn control_characters_cannot_start_a_new_line() {
        let text = line(
            at(0, 0),
            Level::Info,
            Role::Master,
            format_args!("a\nb\r\n{}\t\u{7f}é", "\x1b[31m"),
        );
        assert!(
            text.ends_with("): a\\nb\\r\\n\\x1b[31m\t\\x7fé\n"),
            "{text}"
        );
    }

    #[test]
    fn a_long_message_is_cut_to_one_pipe_write_on_a_char_boundary() {
        let long = "é".repeat(LINE_MAX);
        let text = line(
            at(0, 0),
            Level::Info,
            Role::Master,
            format_args!("{long} tail"),
        );
        assert!(text.len() <= LINE_MAX, "{}", text.len());
        assert!(text.len() >= LINE_MAX - 4, "{}", text.len());
        assert!(text.ends_with("é...\n"), "{}", &text[text.len() - 10..]);
        assert_eq!(text.matches('\n').count(), 1);
        // Exactly full: no cut.
        let prefix = line(at(0, 0), Level::Info, Role::Master, format_args!("")).len() - 1;
        let fits = "x".repeat(LINE_MAX - CUT_MARK.len() - prefix);
        let text = line(at(0, 0), Level::Info, Role::Master, format_args!("{fits}"));
        assert!(text.ends_with("xx\n"), "{}", &text[text.len() - 10..]);
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_journal_stream("8:"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
        assert_eq!(parse_journal_stream("81"), None);
    }

    #[test]
    fn roles_follow_slot_and_mode() {
        assert_eq!(Role::of(Some(3), Mode::Multi), Role::Worker(3));
        assert_eq!(Role::of(None, Mode::Single), Role::Worker(0));
        assert_eq!(Role::of(None, Mode::Multi), Role::Master);
    }
}
