//! `socer check FILE`: validate a site or central config and point at the offending line.
//!
//! Config modules report [`Diag`]s carrying byte spans into the file; this module turns spans into
//! `FILE:LINE:COL: message` lines. It never changes a file.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (site or central; told apart by its `[site]` or `[central]` table).
    pub file: PathBuf,
}

/// One problem in a config file: where (a byte span of the text) and what would be valid.
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

/// 1-based line and column (in characters) of a byte offset.
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

/// Render diagnostics as `FILE:LINE:COL: message`, one per line, in file order.
pub fn render(path: &Path, text: &str, diags: &[Diag]) -> String {
    let mut rows: Vec<(usize, usize, &str)> = diags
        .iter()
        .map(|d| {
            let (l, c) = d
                .span
                .as_ref()
                .map(|s| line_col(text, s.start))
                .unwrap_or((1, 1));
            (l, c, d.message.as_str())
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    rows.iter()
        .map(|(l, c, m)| {
            // One diagnostic, one line: a multi-line message (TOML's, say) is joined.
            let m: Vec<&str> = m.lines().map(str::trim).filter(|s| !s.is_empty()).collect();
            format!("{}:{l}:{c}: {}\n", path.display(), m.join("; "))
        })
        .collect()
}

/// Which daemon a config belongs to, from its top-level tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Site,
    Central,
}

pub fn detect_kind(text: &str) -> Option<ConfigKind> {
    let table: toml::Table = text.parse().ok()?;
    if table.contains_key("central") {
        Some(ConfigKind::Central)
    } else if table.contains_key("site") {
        Some(ConfigKind::Site)
    } else {
        None
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", args.file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let diags = match text.parse::<toml::Table>() {
        Err(e) => vec![Diag::from_toml(&e)],
        Ok(_) => match detect_kind(&text) {
            Some(ConfigKind::Site) => crate::site::config::check(&args.file, &text),
            Some(ConfigKind::Central) => crate::central::config::check(&args.file, &text),
            None => vec![Diag::new(
                Some(0..0),
                "neither a site config (needs a [site] table) nor a central config (needs a [central] table)",
            )],
        },
    };
    if diags.is_empty() {
        println!("{}: ok", args.file.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{}", render(&args.file, &text, &diags));
        Ok(ExitCode::from(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let t = "a = 1\nnàme = \"x\"\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        let off = t.find('=').map(|_| t.rfind('=').unwrap()).unwrap();
        assert_eq!(line_col(t, off), (2, 6));
    }

    #[test]
    fn broken_toml_points_at_the_line() {
        let t = "[site]\nid = \"a\"\nname = \n";
        let e = t.parse::<toml::Table>().unwrap_err();
        let out = render(Path::new("s.toml"), t, &[Diag::from_toml(&e)]);
        assert!(out.starts_with("s.toml:3:"), "{out}");
    }
}
