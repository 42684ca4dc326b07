//! Diagnostics of a text file: a byte span and what would be valid, rendered as
//! `FILE:LINE:COL: message`.
//!
//! A leaf: the config modules report [`Diag`]s, `socer check` and the daemons' loaders render
//! them. It depends on nothing of socer and never panics, whatever span or text it is given.

use std::ops::Range;
use std::path::Path;

/// One problem in a file: where (a byte span of the text) and what would be valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Diag {
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl Diag {
    pub fn new(span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
        }
    }

    /// A diagnostic from a `toml` parse or deserialisation error (which carries its own span).
    pub fn from_toml(e: &toml::de::Error) -> Self {
        Self {
            span: e.span(),
            message: e.message().trim().to_string(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset; an offset past the end or inside a
/// character counts from the character's start.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Render diagnostics as `FILE:LINE:COL: message`, one per line, in file order. A message never
/// spans lines (a newline in it would break the one-problem-per-line format).
pub fn render(path: &Path, text: &str, diags: &[Diag]) -> String {
    let mut rows: Vec<(usize, usize, String)> = diags
        .iter()
        .map(|d| {
            let (l, c) = d
                .span
                .as_ref()
                .map(|s| line_col(text, s.start))
                .unwrap_or((1, 1));
            (l, c, one_line(&d.message))
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    rows.iter()
        .map(|(l, c, m)| format!("{}:{l}:{c}: {m}\n", path.display()))
        .collect()
}

fn one_line(message: &str) -> String {
    message
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// How serious a located diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is refused (`socer check` exits 2).
    Error,
    /// The file is taken, with a consequence worth knowing (exit 0).
    Warning,
}

/// One diagnostic located in a file, as `socer check --json` prints it: `file`, 1-based `line`
/// and `col` (in characters), `severity`, and a one-line `message`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    pub message: String,
}

impl Located {
    pub fn new(file: &Path, line: usize, col: usize, severity: Severity, message: &str) -> Self {
        Self {
            file: file.display().to_string(),
            line,
            col,
            severity,
            message: one_line(message),
        }
    }

    /// Parse a rendered `FILE:LINE:COL: warning: message` line (`None` if it is not one).
    pub fn parse_warning(rendered: &str) -> Option<Self> {
        let (at, message) = rendered.split_once(": warning: ")?;
        let mut parts = at.rsplitn(3, ':');
        let col = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        Some(Self::new(
            Path::new(file),
            line,
            col,
            Severity::Warning,
            message,
        ))
    }
}

/// The file as UTF-8 text, or the diagnostic of its first invalid byte (at that byte's line and
/// column, counted on the valid text before it).
pub fn utf8_text(bytes: &[u8]) -> Result<&str, Diag> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok(t),
        Err(e) => {
            let at = e.valid_up_to();
            let byte = bytes.get(at).copied().unwrap_or(0);
            Err(Diag::new(
                Some(at..at + 1),
                format!("byte 0x{byte:02x} is not UTF-8: the file must be UTF-8 text"),
            ))
        }
    }
}

/// Render [`utf8_text`]'s diagnostic: the valid prefix gives the line and column.
pub fn render_bytes(path: &Path, bytes: &[u8], diags: &[Diag]) -> String {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    };
    render(path, text, diags)
}

/// Largest file `socer check` and the daemons read as a config, profile, scenario or site file.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A file's bytes, refused beyond `max` bytes (never more than `max + 1` read).
pub fn read_bounded(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let t = "a = 1\nnàme = \"x\"\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        let off = t.rfind('=').unwrap();
        assert_eq!(line_col(t, off), (2, 6));
        assert_eq!(line_col(t, usize::MAX), (3, 1));
    }

    #[test]
    fn broken_toml_points_at_the_line() {
        let t = "[site]\nid = \"a\"\nname = \n";
        let e = t.parse::<toml::Table>().unwrap_err();
        let out = render(Path::new("s.toml"), t, &[Diag::from_toml(&e)]);
        assert!(out.starts_with("s.toml:3:"), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
    }

    #[test]
    fn a_rendered_warning_is_parsed_back_into_its_place() {
        let w = Located::parse_warning("/etc/socer/p:x.csv:12:1: warning: no price\nfor 13:00")
            .unwrap();
        assert_eq!(
            (w.file.as_str(), w.line, w.col, w.severity),
            ("/etc/socer/p:x.csv", 12, 1, Severity::Warning)
        );
        assert_eq!(w.message, "no price for 13:00");
        assert_eq!(Located::parse_warning("no place: warning: x"), None);
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_reported_at_its_line_and_column() {
        let bytes = b"[site]\nid = \"d\xffmus\"\n";
        let d = utf8_text(bytes).unwrap_err();
        let out = render_bytes(Path::new("s.toml"), bytes, &[d]);
        assert_eq!(
            out,
            "s.toml:2:8: byte 0xff is not UTF-8: the file must be UTF-8 text\n"
        );
        let d = utf8_text(b"\xc3").unwrap_err();
        assert!(render_bytes(Path::new("x"), b"\xc3", &[d]).starts_with("x:1:1: byte 0xc3"));
    }

    proptest::proptest! {
        #[test]
        fn rendering_never_panics_and_gives_one_line_per_diagnostic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            start in 0usize..400,
            msg in ".{0,40}",
        ) {
            let text = String::from_utf8_lossy(&bytes);
            let d = Diag::new(Some(start..start.saturating_add(1)), msg);
            let out = render(Path::new("f"), &text, &[d]);
            proptest::prop_assert_eq!(out.lines().count(), 1);
            let d = utf8_text(&bytes).err().into_iter().collect::<Vec<_>>();
            let _ = render_bytes(Path::new("f"), &bytes, &d);
        }
    }
}
