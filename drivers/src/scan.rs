//! Finding devices on a bus: probe each unit id once, then guess the model from the profiles'
//! `identify` registers and SunSpec discovery, keeping the evidence.
//!
//! Reads only, through a [`Link`]; a silent unit costs one timeout and nothing more. It never
//! writes to a device.

use serde::Serialize;

use crate::link::{exception_name, Link, LinkError};
use crate::profile::{Function, ProfileSet};
use crate::sunspec::{self, ModelSet, SunSpecError};

/// The first request sent to each unit: the SunSpec marker's place, which any device answers with
/// data or an exception.
const PRESENCE: (Function, u16, u16) = (Function::Holding, sunspec::BASES[0], 2);

/// A unit that answered, what it may be, and why we think so.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub unit: u8,
    /// Profile ids that fit, best first (`sunspec` first when the marker was found).
    pub guesses: Vec<String>,
    /// A human description of the best guess (manufacturer, model, serial where known).
    pub description: Option<String>,
    /// What was read and what it showed.
    pub evidence: Vec<String>,
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unit {unit}: {error}")]
pub struct ScanError {
    pub unit: u8,
    pub error: LinkError,
}

/// Probe every unit in `units`; the ones that answer are returned in order.
pub async fn scan<L: Link>(
    link: &mut L,
    units: impl IntoIterator<Item = u8>,
    profiles: &ProfileSet,
) -> Result<Vec<Found>, ScanError> {
    let mut found = Vec::new();
    for unit in units {
        if let Some(f) = probe(link, unit, profiles).await? {
            found.push(f);
        }
    }
    Ok(found)
}

/// Probe one unit. `Ok(None)`: nothing there (silent, or a gateway said the target is absent).
/// `Err` only when the link itself failed (port gone, connection closed).
pub async fn probe<L: Link>(
    link: &mut L,
    unit: u8,
    profiles: &ProfileSet,
) -> Result<Option<Found>, ScanError> {
    let (function, address, count) = PRESENCE;
    let first = link.read_registers(unit, function, address, count).await;
    let mut evidence = vec![match &first {
        Ok(w) => format!("holding {address}: answered {} words", w.len()),
        // 0x0A/0x0B are a gateway's way of saying nobody is behind that id.
        Err(LinkError::Exception { code: 0x0A | 0x0B }) | Err(LinkError::Timeout { .. }) => {
            return Ok(None)
        }
        Err(LinkError::Exception { code }) => {
            format!(
                "holding {address}: exception {code:#04x} ({}), so a device is there",
                exception_name(*code)
            )
        }
        Err(LinkError::Frame(f)) => {
            format!("holding {address}: damaged answer ({f}), so something is there")
        }
        Err(e @ LinkError::Transport(_)) => {
            return Err(ScanError {
                unit,
                error: e.clone(),
            })
        }
    }];

    let mut guesses = Vec::new();
    let mut description = None;
    match sunspec::discover(link, unit).await {
        Ok(device) => {
            let chain: Vec<String> = device.models.iter().map(|m| m.id.to_string()).collect();
            evidence.push(format!(
                "SunS marker at {}, models [{}]",
                device.base,
                chain.join(", ")
            ));
            let resolved = ModelSet::builtin()
                .map_err(SunSpecError::from)
                .and_then(|set| sunspec::resolve(&device, &set, None));
            let c = device.common.clone().unwrap_or_default();
            description = Some(match resolved {
                Ok(r) => format!(
                    "{} {} serial {} ({})",
                    c.manufacturer, c.model, c.serial, r.profile.model
                ),
                Err(e) => format!(
                    "{} {} serial {} (SunSpec, not mapped: {e})",
                    c.manufacturer, c.model, c.serial
                ),
            });
            guesses.push(sunspec::PROFILE_ID.to_string());
        }
        Err(SunSpecError::Link {
            error: error @ LinkError::Transport(_),
            ..
        }) => return Err(ScanError { unit, error }),
        Err(SunSpecError::NotFound { .. }) => {}
        Err(e) => evidence.push(format!("SunSpec: {e}")),
    }

    // Several profiles read the same registers (two sides of one inverter): read each once.
    let mut cache: Vec<(RegisterSpan, Result<Vec<u16>, String>)> = Vec::new();
    for profile in profiles.profiles.iter().filter(|p| !p.identify.is_empty()) {
        let mut matched = Vec::new();
        for id in &profile.identify {
            let key = (id.function, id.address, id.words());
            let words = match cache.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => v.clone(),
                None => {
                    let v = match link
                        .read_registers(unit, id.function, id.address, id.words())
                        .await
                    {
                        Ok(w) => Ok(w),
                        Err(e @ LinkError::Transport(_)) => {
                            return Err(ScanError { unit, error: e })
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    cache.push((key, v.clone()));
                    v
                }
            };
            match words.map(|w| id.check(&w, &profile.defaults)) {
                Ok(Ok(seen)) => {
                    matched.push(format!(
                        "{} {} = {seen}",
                        function_name(id.function),
                        id.address
                    ));
                }
                _ => break,
            }
        }
        if matched.len() == profile.identify.len() {
            evidence.push(format!("{}: {}", profile.id, matched.join(", ")));
            if description.is_none() {
                description = Some(format!("{} {}", profile.manufacturer, profile.model));
            }
            guesses.push(profile.id.clone());
        }
    }
    Ok(Some(Found {
        unit,
        guesses,
        description,
        evidence,
    }))
}

/// Registers read for identification: function, first address, count.
type RegisterSpan = (Function, u16, u16);

fn function_name(f: Function) -> &'static str {
    match f {
        Function::Holding => "holding",
        Function::Input => "input",
    }
}
