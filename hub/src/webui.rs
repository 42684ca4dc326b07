//! The resident page and the community dashboard: the static files of `web-ui/`, embedded in the
//! binary, served at `/` and `/assets/…` with their content type, an ETag and gzip when the browser
//! accepts it. It serves only these files: no file system access, no templating of request data.
//! Comment lines and indentation are dropped once, when a file is first served (see [`minify`]).

use std::io::Write as _;
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};
use warp::http::{header, Response, StatusCode};
use warp::Filter;

/// Which page `/` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `socer site`: the building's page with its technician tab.
    Resident,
    /// `socer central`: the community dashboard.
    Dashboard,
}

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub raw: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {
        Asset {
            name: $name,
            content_type: $ct,
            raw: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web-ui/", $name)),
        }
    };
}

/// Every file of `web-ui/`, by the name it has under `/assets/` (pages are served at `/`).
pub static ASSETS: &[Asset] = &[
    asset!("resident.html", "text/html; charset=utf-8"),
    asset!("dashboard.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("resident.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("resident-tech.js", "text/javascript; charset=utf-8"),
    asset!("errors.js", "text/javascript; charset=utf-8"),
    asset!("resident.en.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.en.js", "text/javascript; charset=utf-8"),
];

/// An asset with its served body, gzip body and ETag, computed once.
struct Prepared {
    body: Vec<u8>,
    gzip: Vec<u8>,
    etag: String,
}

/// What a browser needs of our own files: without whole-line comments (`//` in JavaScript,
/// `/* */` in CSS), indentation and blank lines. Only whole lines are dropped, never part of a
/// line, so nothing inside a string can change; our files keep no multi-line strings.
pub fn minify(name: &str, raw: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return raw.to_vec();
    };
    let js = name.ends_with(".js");
    let css = name.ends_with(".css");
    let mut out = String::with_capacity(text.len());
    let mut in_comment = false;
    for line in text.lines() {
        let t = line.trim();
        if css {
            if in_comment {
                in_comment = !t.contains("*/");
                continue;
            }
            if t.starts_with("/*") {
                in_comment = !t.contains("*/");
                if !in_comment && !t.ends_with("*/") {
                    // Something follows the comment on its line: keep the line.
                    out.push_str(t);
                    out.push('\n');
                }
                continue;
            }
        }
        if t.is_empty() || (js && t.starts_with("//")) {
            continue;
        }
        out.push_str(t);
        out.push('\n');
    }
    out.into_bytes()
}

fn prepared(i: usize) -> &'static Prepared {
    static CACHE: OnceLock<Vec<Prepared>> = OnceLock::new();
    &CACHE.get_or_init(|| ASSETS.iter().map(prepare).collect())[i]
}

fn prepare(a: &Asset) -> Prepared {
    let body = minify(a.name, a.raw);
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail; an empty body would only cost the compression.
    let gzip: Vec<u8> = enc
        .write_all(&body)
        .and_then(|()| enc.finish())
        .unwrap_or_default();
    let digest = Sha256::digest(&body);
    Prepared {
        body,
        gzip,
        etag: format!("\"{}\"", hex::encode(&digest[..8])),
    }
}

/// The compressed size of an asset (what a browser accepting gzip transfers), bytes.
pub fn gzip_len(name: &str) -> Option<usize> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    Some(prepared(i).gzip.len())
}

fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|h| {
        h.split(',').any(|part| {
            let mut it = part.split(';');
            let name = it.next().unwrap_or("").trim();
            let q_zero = it.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name == "gzip" || name == "*") && !q_zero
        })
    })
}

/// The response for an asset, honouring `If-None-Match` and `Accept-Encoding`.
pub fn respond(
    name: &str,
    if_none_match: Option<&str>,
    accept_encoding: Option<&str>,
) -> Response<&'static [u8]> {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(&b"not found"[..])
            .unwrap_or_default();
    };
    let (asset, p) = (&ASSETS[i], prepared(i));
    let builder = Response::builder()
        .header(header::ETAG, &p.etag)
        // Always revalidate: a new binary may bring new files under the same names.
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "accept-encoding")
        .header("x-content-type-options", "nosniff");
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == p.etag)) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(&[][..])
            .unwrap_or_default();
    }
    let builder = builder.header(header::CONTENT_TYPE, asset.content_type);
    let reply = if accepts_gzip(accept_encoding) && !p.gzip.is_empty() {
        builder
            .header(header::CONTENT_ENCODING, "gzip")
            .body(p.gzip.as_slice())
    } else {
        builder.body(p.body.as_slice())
    };
    reply.unwrap_or_default()
}

/// `GET /` (the page) and `GET /assets/NAME`.
pub fn routes(
    page: Page,
) -> impl Filter<Extract = (Response<&'static [u8]>,), Error = warp::Rejection>
       + Clone
       + Send
       + Sync
       + 'static {
    let headers = warp::header::optional::<String>("if-none-match")
        .and(warp::header::optional::<String>("accept-encoding"));
    let index = warp::get().and(warp::path::end()).and(headers).map(
        move |inm: Option<String>, ae: Option<String>| {
            let name = match page {
                Page::Resident => "resident.html",
                Page::Dashboard => "dashboard.html",
            };
            respond(name, inm.as_deref(), ae.as_deref())
        },
    );
    let assets = warp::get()
        .and(warp::path!("assets" / String))
        .and(headers)
        .map(|name: String, inm: Option<String>, ae: Option<String>| {
            let servable = !name.ends_with(".html");
            respond(
                if servable { &name } else { "" },
                inm.as_deref(),
                ae.as_deref(),
            )
        });
    index.or(assets).unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip(Some("gzip, deflate, br")));
        assert!(accepts_gzip(Some("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(Some("gzip;q=0, br")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn assets_carry_type_etag_and_answer_304_to_their_etag() {
        let r = respond("app.css", None, Some("gzip"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let etag = r.headers()[header::ETAG].to_str().unwrap_or("").to_string();
        assert_eq!(etag.len(), 18, "a quoted 16-hex-digit tag: {etag}");
        let again = respond("app.css", Some(&etag), Some("gzip"));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let plain = respond("app.css", Some("\"other\""), None);
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[test]
    fn minifying_drops_only_whole_comment_lines_and_indentation() {
        let js = "// a comment\n  const a = \"x // y\"; // kept, part of a line\n\n    f();\n";
        assert_eq!(
            String::from_utf8(minify("a.js", js.as_bytes())).unwrap(),
            "const a = \"x // y\"; // kept, part of a line\nf();\n"
        );
        let css = "/* one\n two */\n  a { b: c; }\n/* x */ d { e: f; }\n/* y */\n";
        assert_eq!(
            String::from_utf8(minify("a.css", css.as_bytes())).unwrap(),
            "a { b: c; }\n/* x */ d { e: f; }\n"
        );
        // HTML keeps its comments (none are ours to judge), loses only indentation.
        assert_eq!(minify("a.html", b"  <p>\n// x\n"), b"<p>\n// x\n");
        // Every shipped file shrinks and keeps every line that is not a comment.
        for a in ASSETS {
            let m = minify(a.name, a.raw);
            assert!(m.len() < a.raw.len(), "{}", a.name);
        }
    }

    #[test]
    fn unknown_names_are_not_found() {
        assert_eq!(
            respond("../Cargo.toml", None, None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(respond("", None, None).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn compressed_files_are_smaller_than_the_originals() {
        for a in ASSETS {
            let gz = gzip_len(a.name).unwrap_or(usize::MAX);
            assert!(gz < a.raw.len(), "{}: {gz} >= {}", a.name, a.raw.len());
        }
    }
}
