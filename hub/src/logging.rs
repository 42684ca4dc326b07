//! Log lines on stderr, fit for a terminal and for journald: ANSI colour only on a terminal, and
//! under journald (`JOURNAL_STREAM` naming our stderr) each line starts with its syslog priority
//! (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace: the sd-daemon(3) prefixes), so
//! `journalctl -p warning` filters; journald stamps the time itself. Never fails a command.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A terminal: colour and time stamps.
    Terminal,
    /// A file or a pipe: time stamps, no colour.
    Plain,
    /// journald's stream: a priority prefix, no colour, no time stamp.
    Journal,
}

impl Style {
    /// The style for stderr: `journal_stream` is `$JOURNAL_STREAM` ("DEV:INODE" of the stream
    /// journald handed us), `stderr_id` stderr's (device, inode) and `stderr_tty` whether stderr
    /// is a terminal. A `JOURNAL_STREAM` that names another file (inherited by a child whose
    /// stderr was redirected) does not count.
    pub fn choose(
        journal_stream: Option<&str>,
        stderr_id: Option<(u64, u64)>,
        stderr_tty: bool,
    ) -> Style {
        let journal = journal_stream
            .and_then(|v| {
                let (dev, ino) = v.trim().split_once(':')?;
                Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
            })
            .is_some_and(|named| stderr_id.is_none_or(|id| id == named));
        if journal {
            Style::Journal
        } else if stderr_tty {
            Style::Terminal
        } else {
            Style::Plain
        }
    }

    /// The style for this process's stderr.
    pub fn of_stderr() -> Style {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let stderr = std::io::stderr();
        let id = stderr
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| std::fs::File::from(fd).metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        let stream = std::env::var("JOURNAL_STREAM").ok();
        Style::choose(stream.as_deref(), id, stderr.is_terminal())
    }
}

/// The sd-daemon(3) priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Wraps a formatter: writes the priority prefix before each event, and after each newline
/// inside it so that a multi-line message keeps its priority on every line.
pub struct Prefixed<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let prefix = format!("<{}>", priority(event.metadata().level()));
        // The level is padded to five columns ("<6> INFO"): the prefix takes the padding's place.
        let body = line.strip_suffix('\n').unwrap_or(&line).trim_start();
        for part in body.split('\n') {
            writeln!(writer, "{prefix}{part}")?;
        }
        Ok(())
    }
}

/// The default filter: `RUST_LOG`, else `info`.
fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Installs a subscriber writing to `make_writer` in `style` with `filter`; returns it as a
/// dispatcher (for `init` and the tests).
pub fn dispatch<W>(
    style: Style,
    filter: tracing_subscriber::EnvFilter,
    make_writer: W,
) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make_writer);
    match style {
        Style::Terminal => tracing::Dispatch::new(builder.with_ansi(true).finish()),
        Style::Plain => tracing::Dispatch::new(builder.with_ansi(false).finish()),
        Style::Journal => {
            let format = tracing_subscriber::fmt::format()
                .with_ansi(false)
                .without_time();
            tracing::Dispatch::new(
                builder
                    .with_ansi(false)
                    .event_format(Prefixed { inner: format })
                    .finish(),
            )
        }
    }
}

/// Log to stderr in the style that fits it; `RUST_LOG` overrides the default `info` level.
pub fn init() {
    let _ = tracing::dispatcher::set_global_default(dispatch(
        Style::of_stderr(),
        filter(),
        std::io::stderr,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines_in(style: Style) -> Vec<String> {
        let buf = Buf::default();
        let d = dispatch(
            style,
            tracing_subscriber::EnvFilter::new("debug"),
            buf.clone(),
        );
        tracing::dispatcher::with_default(&d, || {
            tracing::error!("store failed");
            tracing::warn!(site = "domus-1", "late batch");
            tracing::info!("central hub up");
            tracing::debug!("tick");
            tracing::trace!("never shown at debug");
            tracing::warn!("first line\nsecond line");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn under_journald_each_line_carries_its_priority_and_no_colour() {
        let style = Style::choose(Some("8:12345"), Some((8, 12345)), false);
        assert_eq!(style, Style::Journal);
        let lines = lines_in(style);
        let prefixes: Vec<&str> = lines.iter().map(|l| &l[..3]).collect();
        assert_eq!(
            prefixes,
            ["<3>", "<4>", "<6>", "<7>", "<4>", "<4>"],
            "{lines:#?}"
        );
        assert!(
            lines[1].contains("late batch") && lines[1].contains("site=\"domus-1\""),
            "{lines:#?}"
        );
        assert!(
            lines[4].ends_with("first line") && lines[5] == "<4>second line",
            "{lines:#?}"
        );
        assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{lines:#?}");
        // journald stamps the time: the line starts with its level, not a date.
        assert!(lines[0].starts_with("<3>ERROR"), "{lines:#?}");
        assert!(lines[2].starts_with("<6>INFO"), "{lines:#?}");
    }

    #[test]
    fn off_a_terminal_without_journald_lines_are_plain() {
        let style = Style::choose(None, Some((8, 1)), false);
        assert_eq!(style, Style::Plain);
        let lines = lines_in(style);
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(
            lines
                .iter()
                .all(|l| !l.contains('\u{1b}') && !l.starts_with('<')),
            "{lines:#?}"
        );
        assert!(
            lines[0].contains("ERROR") && lines[0].contains("store failed"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_terminal_gets_colour() {
        let style = Style::choose(None, None, true);
        assert_eq!(style, Style::Terminal);
        assert!(lines_in(style).iter().any(|l| l.contains('\u{1b}')));
    }

    #[test]
    fn a_journal_stream_naming_another_file_does_not_count() {
        // A child whose stderr was redirected to a file inherits JOURNAL_STREAM.
        assert_eq!(
            Style::choose(Some("8:12345"), Some((8, 999)), false),
            Style::Plain
        );
        assert_eq!(
            Style::choose(Some("8:12345"), Some((8, 999)), true),
            Style::Terminal
        );
        assert_eq!(Style::choose(Some("garbage"), None, false), Style::Plain);
        assert_eq!(Style::choose(Some("8:12345"), None, false), Style::Journal);
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
