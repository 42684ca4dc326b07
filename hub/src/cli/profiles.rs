//! `socer profiles`: list the meter profiles (built in, plus a technician's folder) or show one
//! register map as a table. Read-only: it never talks to a device.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use socer_drivers::profile::{Profile, ProfileSet};
use socer_drivers::sunspec;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also load the `*.toml` profiles of this folder (a same-id file overrides a built-in one).
    /// (`--dir` is the old spelling, still taken.)
    #[arg(long = "profiles", alias = "dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the register map of one profile.
    #[arg(long, value_name = "ID")]
    pub show: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut set = match ProfileSet::builtin() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(dir) = &args.dir {
        if let Err(e) = set.load_dir(dir) {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    }
    match &args.show {
        Some(id) => match set.require(id) {
            Ok(p) if args.json => println!("{}", serde_json::to_string_pretty(p)?),
            Ok(p) => print!("{}", register_table(p)),
            Err(e) => {
                eprintln!("socer: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None if args.json => {
            let mut all = summaries(&set);
            all.push(sunspec_summary());
            println!("{}", serde_json::to_string_pretty(&all)?)
        }
        None => print!("{}", list_table(&set)),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of the listing.
#[derive(Debug, serde::Serialize)]
pub struct Summary<'a> {
    pub id: &'a str,
    pub manufacturer: &'a str,
    pub model: &'a str,
    pub kind: &'static str,
    pub phases: u8,
    pub source: &'a str,
    /// How the map was proven (`typed image from <document> ...`), if it was.
    pub verified: Option<&'a str>,
}

pub fn summaries(set: &ProfileSet) -> Vec<Summary<'_>> {
    let mut rows: Vec<Summary> = set
        .profiles
        .iter()
        .map(|p| Summary {
            id: &p.id,
            manufacturer: &p.manufacturer,
            model: &p.model,
            kind: p.kind.name(),
            phases: p.phases,
            source: &p.source,
            verified: p.verified.as_deref(),
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    rows
}

/// The `sunspec` model id is not a fixed map: a device is discovered (`SunS` marker, model chain)
/// and resolved into a profile at start-up. Listed beside the fixed profiles so technicians find it.
pub fn sunspec_summary() -> Summary<'static> {
    Summary {
        id: sunspec::PROFILE_ID,
        manufacturer: "SunSpec Alliance",
        model: "any SunSpec device (discovered)",
        kind: "inverter/meter",
        phases: 0,
        source: "SunSpec Information Model Specification and model definitions: inverters 101-103 and 111-113, meters 201-204 and float meters 211-213 (use sunspec:N to choose one model of a device)",
        verified: Some("typed image drivers/tests/images/sunspec-213.toml from the SunSpec model 1 and 213 definitions; interop images for 103"),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The library grouped by kind (meter, inverter, battery, gateway, then the discovered SunSpec
/// entry), one table per kind under a `KIND (n models)` heading, each row saying which document
/// the map was verified against.
pub fn list_table(set: &ProfileSet) -> String {
    let all = summaries(set);
    let row = |s: &Summary| {
        vec![
            s.id.to_string(),
            s.manufacturer.to_string(),
            s.model.to_string(),
            s.kind.to_string(),
            if s.phases == 0 {
                "-".to_string()
            } else {
                s.phases.to_string()
            },
            s.verified.unwrap_or("not verified").to_string(),
            s.source.to_string(),
        ]
    };
    let header = [
        "ID",
        "MANUFACTURER",
        "MODEL",
        "KIND",
        "PHASES",
        "VERIFIED",
        "SOURCE",
    ];
    let mut out = String::new();
    for kind in socer_drivers::profile::DeviceKind::ALL {
        let rows: Vec<Vec<String>> = all
            .iter()
            .filter(|s| s.kind == kind.name())
            .map(row)
            .collect();
        if rows.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} ({} model{})",
            kind.name().to_uppercase(),
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        );
        out.push_str(&table(&header, &rows));
    }
    out.push_str("\nDISCOVERED (SunSpec)\n");
    out.push_str(&table(&header, &[row(&sunspec_summary())]));
    out
}

/// Header lines, then one row per quantity: where it is and how it is encoded.
pub fn register_table(p: &Profile) -> String {
    let d = &p.defaults;
    let mut out = format!(
        "{} — {} {} ({}, {} phase{})\nsource: {}\nverified: {}\nmax registers per request: {}; poll every {} s (counters {} s){}{}\n",
        p.id,
        p.manufacturer,
        p.model,
        p.kind.name(),
        p.phases,
        if p.phases == 1 { "" } else { "s" },
        p.source,
        p.verified.as_deref().unwrap_or("not verified"),
        d.max_registers,
        d.fast_interval_s,
        d.counter_interval_s,
        if d.min_interval_s > 0 {
            format!("; never faster than every {} s", d.min_interval_s)
        } else {
            String::new()
        },
        match d.unit_id {
            Some(u) => format!("; unit id {u} by default"),
            None => String::new(),
        },
    );
    for i in &p.identify {
        let what = match (&i.text, i.value_type) {
            (Some(text), _) => format!("text starting \"{text}\""),
            (None, Some(t)) => {
                let values: Vec<String> = i.values.iter().map(|v| format!("{v:#x}")).collect();
                format!("{} in [{}]", t.name(), values.join(", "))
            }
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "identify: {} {} ({:#06x}) {what}",
            i.function.name(),
            i.address,
            i.address,
        );
    }
    for u in &p.unreadable {
        let _ = writeln!(
            out,
            "unreadable: {} {}..={} ({:#06x}..={:#06x})",
            u.function.name(),
            u.start,
            u.end,
            u.start,
            u.end
        );
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = p
        .quantities
        .iter()
        .map(|q| {
            let order = format!(
                "{}/{}",
                match q.word_order.unwrap_or(d.word_order) {
                    socer_drivers::profile::WordOrder::HighFirst => "high_first",
                    socer_drivers::profile::WordOrder::LowFirst => "low_first",
                },
                match q.byte_order.unwrap_or(d.byte_order) {
                    socer_drivers::profile::ByteOrder::Big => "big",
                    socer_drivers::profile::ByteOrder::Little => "little",
                }
            );
            vec![
                q.label(),
                q.resolved_function(d).name().to_string(),
                q.address.to_string(),
                format!("{:#06x}", q.address),
                q.value_type.name().to_string(),
                order,
                q.scale.to_string(),
                q.unit.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "QUANTITY", "FUNCTION", "ADDRESS", "HEX", "TYPE", "ORDER", "SCALE", "UNIT",
        ],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> ProfileSet {
        ProfileSet::builtin().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn listing_has_one_row_per_profile_with_its_source() {
        let set = builtin();
        let text = list_table(&set);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("METER ("), "{text}");
        assert!(lines[1].starts_with("ID"), "{text}");
        // One row per fixed profile (and the `sunspec` one), each under its kind's heading.
        let ids = set.ids();
        let rows = lines
            .iter()
            .filter(|l| ids.iter().any(|id| l.starts_with(&format!("{id} "))))
            .count();
        assert_eq!(rows, set.profiles.len());
        for kind in [
            "METER (",
            "INVERTER (",
            "BATTERY (",
            "GATEWAY (",
            "DISCOVERED (SunSpec)",
        ] {
            assert!(lines.iter().any(|l| l.starts_with(kind)), "{kind}: {text}");
        }
        // Battery profiles are listed under BATTERY, after every meter.
        let at = |p: &str| lines.iter().position(|l| l.starts_with(p)).unwrap_or(0);
        assert!(at("huawei-luna2000 ") > at("BATTERY ("), "{text}");
        assert!(at("BATTERY (") > at("eastron-sdm630 "), "{text}");
        assert!(at("sinapsi-alfa ") > at("GATEWAY ("), "{text}");
        let alfa = lines[at("sinapsi-alfa ")];
        assert!(alfa.contains("typed image"), "{alfa}");
        assert!(lines.iter().any(|l| l.starts_with("sunspec ")), "{text}");
        let sdm630 = lines
            .iter()
            .find(|l| l.starts_with("eastron-sdm630 "))
            .copied()
            .unwrap_or_default();
        assert!(
            sdm630.contains("Eastron")
                && sdm630.contains("meter")
                && sdm630.contains("Input Registers"),
            "{sdm630}"
        );
    }

    #[test]
    fn json_listing_names_every_field() {
        let set = builtin();
        let v = serde_json::to_value(summaries(&set)).unwrap_or_default();
        let huawei = v
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == "huawei-sun2000"))
            .cloned();
        let huawei = huawei.unwrap_or_default();
        assert_eq!(huawei["kind"], "inverter");
        assert_eq!(huawei["phases"], 3);
        assert_eq!(huawei["manufacturer"], "Huawei");
        assert!(huawei["source"]
            .as_str()
            .is_some_and(|s| s.contains("MODBUS Interface Definitions")));
    }

    #[test]
    fn register_table_shows_address_in_decimal_and_hex_with_type_order_scale_unit() {
        let set = builtin();
        let p = set
            .require("eastron-sdm630")
            .unwrap_or_else(|e| panic!("{e}"));
        let text = register_table(p);
        let row = text
            .lines()
            .find(|l| l.starts_with("p_w "))
            .unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "p_w",
                "input",
                "52",
                "0x0034",
                "f32",
                "high_first/big",
                "1",
                "W"
            ]
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("v_v[3] "))
            .unwrap_or_default();
        assert!(row.contains(" 4 ") && row.contains("0x0004"), "{row}");
        assert!(
            text.contains("identify: holding 64514 (0xfc02) u16 in [0x70, 0x79]"),
            "{text}"
        );

        let em24 = register_table(
            set.require("carlo-gavazzi-em24")
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let row = em24
            .lines()
            .find(|l| l.starts_with("e_exp_wh "))
            .unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "e_exp_wh",
                "holding",
                "92",
                "0x005c",
                "i32",
                "low_first/big",
                "100",
                "kWh*10"
            ]
        );
    }
}
