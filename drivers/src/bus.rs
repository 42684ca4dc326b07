//! The bus scheduler: one task per bus (a serial line or a TCP connection) owns its link, polls
//! the quantities of each meter when they are due, and emits one [`Reading`] per meter per poll.
//!
//! It never reports a value it did not read in this poll, and a dead meter never costs the bus
//! more than one timeout per back-off period. Which meter goes next is `crate::schedule`'s
//! (work-conserving: the line never waits while a meter is due).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::decode::{apply_scale_factor, decode, plausible, DecodeError};
use crate::link::{ErrorKind, Link, LinkError};
use crate::plan::{
    needs_of, plan, CostModel, Intervals, Limits, Need, Request, Schedule, RTU_REQUEST_BYTES,
    RTU_RESPONSE_OVERHEAD_BYTES,
};
use crate::profile::{Function, Profile, QuantityMap};
use crate::reading::{Missing, Quality, Quantity, Reading, Values};
use crate::schedule::{BusQueue, Next};
use crate::transport::{AnyLink, Backoff, RtuLink, RtuOverTcpLink, SerialSettings, TcpLink};

/// One meter on a bus.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// The meter's name in the site config.
    pub name: String,
    pub unit: u8,
    pub profile: Arc<Profile>,
    /// The meter is mounted the other way round: negate `p_w`, swap import and export.
    pub reverse: bool,
    /// Overrides of the profile's poll intervals.
    pub intervals: Intervals,
}

/// How a bus reaches its meters.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportConfig {
    /// Modbus TCP to "host:port" (a meter or a gateway with several unit ids behind it).
    Tcp { addr: String },
    /// Modbus RTU on a serial port.
    Serial(SerialSettings),
    /// Modbus RTU frames over TCP to "host:port": an RS-485 gateway in transparent mode, whose
    /// serial side runs at `baud`. One scheduler per gateway, as for a serial line.
    RtuOverTcp { addr: String, baud: u32 },
}

impl TransportConfig {
    /// Open the link (a TCP link connects on first use; a serial port opens now).
    pub fn open(&self, timeout: Duration, reconnect: Backoff) -> Result<AnyLink, LinkError> {
        Ok(match self {
            TransportConfig::Tcp { addr } => {
                AnyLink::Tcp(TcpLink::new(addr.clone(), timeout, reconnect))
            }
            TransportConfig::Serial(s) => AnyLink::Rtu(RtuLink::open(s.clone(), timeout)?),
            TransportConfig::RtuOverTcp { addr, baud } => {
                AnyLink::RtuOverTcp(RtuOverTcpLink::new(addr.clone(), *baud, timeout, reconnect))
            }
        })
    }

    /// The planner's cost model for this kind of link.
    pub fn cost_model(&self) -> CostModel {
        match self {
            TransportConfig::Tcp { .. } => CostModel::tcp(),
            TransportConfig::Serial(s) => CostModel::Rtu {
                baud: s.baud,
                bits_per_char: s.bits_per_char(),
                turnaround: Duration::from_millis(5),
            },
            // The serial line behind the gateway is what costs time; the network adds a little.
            TransportConfig::RtuOverTcp { baud, .. } => CostModel::Rtu {
                baud: *baud,
                bits_per_char: 10,
                turnaround: Duration::from_millis(10),
            },
        }
    }
}

/// One bus and the meters on it.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub name: String,
    /// How long a device may take to answer one request.
    pub timeout: Duration,
    pub cost: CostModel,
    /// Back-off of a meter whose polls fail completely.
    pub backoff: Backoff,
    pub meters: Vec<MeterConfig>,
}

impl BusConfig {
    /// A bus with the default meter back-off (1 s doubling to 60 s).
    pub fn new(
        name: impl Into<String>,
        timeout: Duration,
        cost: CostModel,
        meters: Vec<MeterConfig>,
    ) -> Self {
        BusConfig {
            name: name.into(),
            timeout,
            cost,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            meters,
        }
    }
}

/// Counters of one meter, for /metrics and the status page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeterHealth {
    pub meter: String,
    pub unit: u8,
    /// Polls performed (each emitted one reading).
    pub polls: u64,
    /// Requests answered with data.
    pub reads_ok: u64,
    /// Requests that failed (timeout, exception, bad frame, transport).
    pub reads_failed: u64,
    /// Duration of the last poll, ms.
    pub last_latency_ms: Option<u64>,
    /// Duration of the last poll, µs (a Modbus TCP poll on a LAN takes under a millisecond).
    pub last_latency_us: Option<u64>,
    pub last_error: Option<String>,
    /// The category of `last_error`.
    pub last_error_kind: Option<ErrorKind>,
    pub consecutive_failures: u32,
    /// Not polled before this time (wall clock, from the injected clock).
    pub backed_off_until: Option<DateTime<Utc>>,
}

/// Health of every meter on one bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BusHealth {
    pub bus: String,
    pub meters: Vec<MeterHealth>,
    /// What the line carried since the bus started.
    pub line: LineUse,
}

/// How a bus used its line since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LineUse {
    /// Requests put on the line.
    pub requests: u64,
    /// Requests that got no answer in time.
    pub timeouts: u64,
    /// The wire-time minimum of every request and answer ([`CostModel::wire_time`]), ms.
    pub wire_ms: f64,
    /// Time spent polling (from a poll's first request to its end), ms.
    pub busy_ms: f64,
}

/// A cheap shared view of a bus's health; cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BusHealth>>);

impl Health {
    pub fn snapshot(&self) -> BusHealth {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut BusHealth)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// A running bus task.
#[derive(Debug)]
pub struct BusHandle {
    pub health: Health,
    pub task: tokio::task::JoinHandle<()>,
}

/// Start the bus task. It runs until `shutdown` becomes true (or its sender is dropped) or the
/// reading receiver is dropped.
pub fn spawn<L: Link + 'static>(
    config: BusConfig,
    link: L,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Reading>,
    shutdown: watch::Receiver<bool>,
) -> BusHandle {
    let health = Health(Arc::new(Mutex::new(BusHealth {
        bus: config.name.clone(),
        meters: config
            .meters
            .iter()
            .map(|m| MeterHealth {
                meter: m.name.clone(),
                unit: m.unit,
                ..MeterHealth::default()
            })
            .collect(),
        line: LineUse::default(),
    })));
    let task = tokio::spawn(run(config, link, clock, tx, shutdown, health.clone()));
    BusHandle { health, task }
}

async fn run<L: Link>(
    config: BusConfig,
    mut link: L,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Reading>,
    mut shutdown: watch::Receiver<bool>,
    health: Health,
) {
    let origin = Instant::now();
    let mut queue = BusQueue::new(
        config
            .meters
            .iter()
            .map(|m| Schedule::new(&m.profile, m.intervals))
            .collect(),
        config.backoff,
    );
    tracing::info!(bus = %config.name, meters = config.meters.len(), "bus started");
    let stop = async {
        // Either the flag turned true or its sender is gone: stop both ways.
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    loop {
        // Work-conserving: the line goes to the meter due earliest as soon as the last
        // transaction (and its silence, which the link keeps) is over; it waits only when
        // nothing is due.
        let now = origin.elapsed();
        let (i, due) = match queue.next(now) {
            Next::Poll { meter, quantities } => (meter, quantities),
            Next::WaitUntil(at) => {
                tokio::select! {
                    _ = crate::clock::sleep_until_precise(origin + at) => continue,
                    _ = &mut stop => break,
                }
            }
        };
        let Some(meter) = config.meters.get(i) else {
            break;
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            o = poll(&mut link, &config.name, meter, &due, &config.cost, clock.as_ref()) => o,
            _ = &mut stop => break,
        };
        let done = origin.elapsed();
        line_use(&config.name, meter, &due, now, done, &outcome);
        let failed = outcome.reading.quality == Quality::Failed && outcome.link_failures > 0;
        let backoff = queue.polled(i, &due, now, done, failed);
        if let Some(wait) = backoff {
            tracing::warn!(bus = %config.name, unit = meter.unit, meter = %meter.name,
                backoff_ms = crate::clock::saturating_ms(wait), "nothing could be read from the meter; backing off");
        }
        let latency = started.elapsed();
        let backed_off_until = backoff
            .map(|wait| clock.now_utc() + chrono::Duration::from_std(wait).unwrap_or_default());
        let consecutive = queue.consecutive_failures(i);
        health.update(|h| {
            if let Some(m) = h.meters.get_mut(i) {
                m.polls += 1;
                m.reads_ok += outcome.reads_ok;
                m.reads_failed += outcome.link_failures;
                m.last_latency_ms = Some(crate::clock::saturating_ms(latency));
                m.last_latency_us = Some(crate::clock::saturating_us(latency));
                if let Some(e) = &outcome.last_error {
                    m.last_error = Some(e.clone());
                    m.last_error_kind = outcome.last_error_kind;
                }
                m.consecutive_failures = consecutive;
                m.backed_off_until = backed_off_until;
            }
            h.line.requests += outcome.requests_sent;
            h.line.timeouts += outcome.timeouts;
            h.line.wire_ms += outcome.wire.as_secs_f64() * 1000.0;
            h.line.busy_ms += (done.saturating_sub(now)).as_secs_f64() * 1000.0;
        });
        let sent = tokio::select! {
            r = tx.send(outcome.reading) => r.is_ok(),
            _ = &mut stop => false,
        };
        if !sent {
            break;
        }
    }
    tracing::info!(bus = %config.name, "bus stopped");
}

/// One debug line per poll, with what `tools/bus-efficiency` needs to set each cycle against the
/// wire-time minimum: when the poll started and ended (µs since the bus started), how many
/// quantities it read, and the least line time of its requests and answers.
fn line_use(
    bus: &str,
    meter: &MeterConfig,
    due: &[usize],
    started: Duration,
    done: Duration,
    outcome: &PollOutcome,
) {
    tracing::debug!(
        bus,
        meter = %meter.name,
        unit = meter.unit,
        start_us = crate::clock::saturating_us(started),
        end_us = crate::clock::saturating_us(done),
        quantities = due.len(),
        of = meter.profile.quantities.len(),
        requests = outcome.requests_sent,
        timeouts = outcome.timeouts,
        wire_us = crate::clock::saturating_us(outcome.wire),
        "line use"
    );
}

/// What one poll of one meter produced.
#[derive(Debug, Clone)]
pub struct PollOutcome {
    pub reading: Reading,
    /// Requests answered with data.
    pub reads_ok: u64,
    /// Requests that failed on the link (skipped requests are not counted).
    pub link_failures: u64,
    pub last_error: Option<String>,
    /// The category of the last failure of this poll: of the link, else of a value (not
    /// available, implausible).
    pub last_error_kind: Option<ErrorKind>,
    /// Requests put on the line (skipped ones are not).
    pub requests_sent: u64,
    /// Requests that got no answer in time.
    pub timeouts: u64,
    /// The least line time of what this poll moved ([`CostModel::wire_time`] of every request
    /// sent and of the answer received, if any): what a bus's efficiency is measured against.
    pub wire: Duration,
}

/// Read every quantity of a meter once (what `socer read` does).
pub async fn read_once<L: Link>(
    link: &mut L,
    bus: &str,
    meter: &MeterConfig,
    cost: &CostModel,
    clock: &dyn Clock,
) -> PollOutcome {
    let all: Vec<usize> = (0..meter.profile.quantities.len()).collect();
    poll(link, bus, meter, &all, cost, clock).await
}

fn function_name(f: Function) -> &'static str {
    match f {
        Function::Holding => "holding",
        Function::Input => "input",
    }
}

/// "bus main: unit 3, input register 12 (0x000c)"
fn locate(bus: &str, unit: u8, function: Function, address: u16) -> String {
    format!(
        "bus {bus}: unit {unit}, {} register {address} ({address:#06x})",
        function_name(function)
    )
}

fn label(q: Quantity, phase: Option<u8>) -> String {
    match phase {
        Some(p) if q.per_phase() => format!("{}_l{p}", q.name()),
        _ => q.name().to_string(),
    }
}

/// The canonical quantity a mapped quantity lands in, after the meter's orientation.
fn oriented(q: Quantity, reverse: bool) -> Quantity {
    match (q, reverse) {
        (Quantity::EImpWh, true) => Quantity::EExpWh,
        (Quantity::EExpWh, true) => Quantity::EImpWh,
        (q, _) => q,
    }
}

/// Why a planned request brought no data.
enum Failure {
    Link(LinkError),
    /// Not sent: the device had already timed out in this poll.
    Skipped(String),
}

/// Poll the `due` quantities (indices into the profile's quantities) of one meter: plan, read,
/// decode, orient. What the bus task does for each meter that is due.
pub async fn poll<L: Link>(
    link: &mut L,
    bus: &str,
    meter: &MeterConfig,
    due: &[usize],
    cost: &CostModel,
    clock: &dyn Clock,
) -> PollOutcome {
    let profile = meter.profile.as_ref();
    let ts = clock.now_utc();
    let mono_ms = crate::clock::saturating_ms(clock.mono());
    let maps: Vec<&QuantityMap> = due
        .iter()
        .filter_map(|&i| profile.quantities.get(i))
        .collect();
    let needs: Vec<Need> = maps.iter().flat_map(|m| needs_of(m, profile)).collect();
    let planned = plan(&needs, &Limits::of(profile), cost);

    let mut results: Vec<(Request, Result<Vec<u16>, Failure>)> =
        Vec::with_capacity(planned.requests.len());
    let mut reads_ok = 0;
    let mut link_failures = 0;
    let mut last_error = None;
    let mut last_error_kind = None;
    let mut gave_up: Option<String> = None;
    let (mut requests_sent, mut timeouts, mut wire) = (0u64, 0u64, Duration::ZERO);
    let answer_bytes = |count: u16| RTU_RESPONSE_OVERHEAD_BYTES + 2 * u64::from(count);
    for req in &planned.requests {
        if let Some(why) = &gave_up {
            results.push((*req, Err(Failure::Skipped(why.clone()))));
            continue;
        }
        let where_ = locate(bus, meter.unit, req.function, req.start);
        let answer = link
            .read_registers(meter.unit, req.function, req.start, req.count)
            .await;
        let received = match &answer {
            Ok(_) | Err(LinkError::Frame(_)) => Some(answer_bytes(req.count)),
            Err(LinkError::Exception { .. }) => Some(RTU_RESPONSE_OVERHEAD_BYTES),
            Err(LinkError::Timeout { .. }) => Some(0),
            // Nothing reached the line (a port that would not open, a refused count).
            Err(_) => None,
        };
        if let Some(bytes) = received {
            requests_sent += 1;
            wire += cost.wire_time(RTU_REQUEST_BYTES, bytes);
        }
        timeouts += u64::from(matches!(answer, Err(LinkError::Timeout { .. })));
        match answer {
            Ok(words) => {
                reads_ok += 1;
                results.push((*req, Ok(words)));
            }
            Err(e) => {
                link_failures += 1;
                tracing::warn!(bus, unit = meter.unit, register = req.start, count = req.count,
                    function = function_name(req.function), error = %e, "read failed");
                let msg = format!("{where_}, {} registers: {e}", req.count);
                if matches!(e, LinkError::Timeout { .. } | LinkError::Transport(_)) {
                    // A silent device would cost a timeout per request: stop for this poll.
                    gave_up = Some(format!("not tried after {msg}"));
                }
                last_error = Some(msg.clone());
                last_error_kind = Some(e.kind());
                results.push((*req, Err(Failure::Link(e))));
            }
        }
    }

    // The words of a need, or why they are missing.
    let words_of = |n: &Need| -> Result<Vec<u16>, String> {
        if let Some((_, why)) = planned.rejected.iter().find(|(r, _)| r == n) {
            return Err(format!(
                "{}: not read: {why}",
                locate(bus, meter.unit, n.function, n.address)
            ));
        }
        let Some((req, result)) = results.iter().find(|(r, _)| r.covers(n)) else {
            return Err(format!(
                "{}: not planned",
                locate(bus, meter.unit, n.function, n.address)
            ));
        };
        match result {
            Ok(words) => {
                let from = usize::from(n.address - req.start);
                words
                    .get(from..from + usize::from(n.words))
                    .map(<[u16]>::to_vec)
                    .ok_or_else(|| {
                        format!(
                            "{}: short answer",
                            locate(bus, meter.unit, n.function, n.address)
                        )
                    })
            }
            Err(Failure::Skipped(why)) => Err(format!(
                "{}: {why}",
                locate(bus, meter.unit, n.function, n.address)
            )),
            Err(Failure::Link(e)) => {
                let mut s = locate(bus, meter.unit, n.function, n.address);
                if req.start != n.address || req.count != n.words {
                    s.push_str(&format!(" (in a read of {} from {})", req.count, req.start));
                }
                Err(format!("{s}: {e}"))
            }
        }
    };

    let mut values = Values::default();
    let mut missing = Vec::new();
    let mut value_kind: Option<ErrorKind> = None;
    for map in &maps {
        let function = map.function.unwrap_or(profile.defaults.function);
        let target = oriented(map.name, meter.reverse);
        let name = label(target, map.phase);
        let need = Need {
            function,
            address: map.address,
            words: map.value_type.words(),
        };
        let value = words_of(&need).and_then(|w| {
            decode(&w, map, &profile.defaults).map_err(|e| {
                value_kind.get_or_insert(match e {
                    DecodeError::NotAvailable { .. } => ErrorKind::NotAvailable,
                    DecodeError::Implausible(_) => ErrorKind::Implausible,
                    DecodeError::Length { .. } => ErrorKind::Frame,
                });
                let what = match e {
                    DecodeError::NotAvailable { raw } => {
                        format!("device reports not available (raw {raw})")
                    }
                    other => other.to_string(),
                };
                format!("{}: {what}", locate(bus, meter.unit, function, map.address))
            })
        });
        // Registers added to or subtracted from the value (same type and encoding).
        let value = value.and_then(|mut v| {
            for (sign, extra) in [(1.0, &map.plus), (-1.0, &map.minus)] {
                for &address in extra.iter() {
                    let w = words_of(&Need {
                        function,
                        address,
                        words: map.value_type.words(),
                    })?;
                    let x = decode(&w, map, &profile.defaults).map_err(|e| {
                        format!("{}: {e}", locate(bus, meter.unit, function, address))
                    })?;
                    v += sign * x;
                }
            }
            Ok(v)
        });
        let value = match (value, map.scale_register) {
            (Ok(v), Some(sf_addr)) => words_of(&Need {
                function,
                address: sf_addr,
                words: 1,
            })
            .and_then(|w| match w.first() {
                Some(&raw) if raw != 0x8000 => Ok(apply_scale_factor(v, raw as i16)),
                _ => Err(format!(
                    "{}: scale factor not available",
                    locate(bus, meter.unit, function, sf_addr)
                )),
            }),
            (v, _) => v,
        };
        // A nonsense register value (a torn read, a wrong map, a device fault) is missing, never
        // a reading: checked on the final value, after any scale factor.
        let value = value.and_then(|v| {
            plausible(map.name, v).map_err(|e| {
                value_kind.get_or_insert(ErrorKind::Implausible);
                format!("{}: {e}", locate(bus, meter.unit, function, map.address))
            })
        });
        match value {
            Ok(v) => {
                let v = if meter.reverse && map.name == Quantity::PW {
                    -v
                } else {
                    v
                };
                values.set(target, map.phase.unwrap_or(1), v);
            }
            Err(reason) => missing.push(Missing {
                quantity: name,
                reason,
            }),
        }
    }
    let quality = if missing.is_empty() {
        Quality::Good
    } else if values.is_empty() {
        Quality::Failed
    } else {
        Quality::Partial
    };
    PollOutcome {
        reading: Reading {
            meter: meter.name.clone(),
            ts,
            mono_ms,
            values,
            quality,
            missing,
            energy_integrated: false,
        },
        reads_ok,
        link_failures,
        last_error,
        last_error_kind: last_error_kind.or(value_kind),
        requests_sent,
        timeouts,
        wire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::decode::encode;
    use crate::profile::*;
    use std::collections::HashMap;

    /// An in-memory device: answers from an image, or fails every request with one error.
    struct FakeLink {
        image: HashMap<u16, u16>,
        fail: Option<LinkError>,
        calls: Vec<(u16, u16)>,
    }

    impl Link for FakeLink {
        async fn read_registers(
            &mut self,
            _unit: u8,
            _f: Function,
            address: u16,
            count: u16,
        ) -> Result<Vec<u16>, LinkError> {
            self.calls.push((address, count));
            match &self.fail {
                Some(e) => Err(e.clone()),
                None => Ok((address..address + count)
                    .map(|a| self.image.get(&a).copied().unwrap_or(0))
                    .collect()),
            }
        }
    }

    fn q(name: Quantity, address: u16, value_type: ValueType, sentinels: Vec<i64>) -> QuantityMap {
        QuantityMap {
            name,
            phase: None,
            function: None,
            address,
            value_type,
            word_order: None,
            byte_order: None,
            scale: 1.0,
            scale_register: None,
            unit: None,
            sentinels,
            interval_s: None,
            plus: vec![],
            minus: vec![],
        }
    }

    fn profile() -> Profile {
        Profile {
            id: "t".into(),
            manufacturer: "t".into(),
            model: "t".into(),
            kind: DeviceKind::Meter,
            phases: 1,
            source: "test".into(),
            verified: None,
            defaults: Defaults::of(Function::Input),
            unreadable: vec![],
            identify: vec![],
            quantities: vec![
                q(Quantity::PW, 0, ValueType::F32, vec![]),
                q(Quantity::FHz, 2, ValueType::U16, vec![0xFFFF]),
                q(Quantity::EImpWh, 300, ValueType::U32, vec![]),
            ],
        }
    }

    fn meter() -> MeterConfig {
        MeterConfig {
            name: "m".into(),
            unit: 9,
            profile: Arc::new(profile()),
            reverse: false,
            intervals: Intervals::default(),
        }
    }

    fn clock() -> ManualClock {
        ManualClock::new(
            DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        )
    }

    #[tokio::test]
    async fn silent_meter_costs_one_request_and_every_missing_value_names_its_register() {
        let mut link = FakeLink {
            image: HashMap::new(),
            fail: Some(LinkError::Timeout { timeout_ms: 250 }),
            calls: vec![],
        };
        let out = read_once(
            &mut link,
            "north",
            &meter(),
            &CostModel::rtu(9600),
            &clock(),
        )
        .await;
        // Two requests planned (0..3 and 300..302 are far apart at 9600 baud); only the first sent.
        assert_eq!(link.calls, vec![(0, 3)]);
        assert_eq!(out.link_failures, 1);
        // On the line: one request and no answer.
        assert_eq!((out.requests_sent, out.timeouts), (1, 1));
        assert_eq!(out.wire, CostModel::rtu(9600).wire_time(8, 0));
        assert_eq!(out.last_error_kind, Some(ErrorKind::Timeout));
        let r = out.reading;
        assert_eq!(r.quality, Quality::Failed);
        assert!(r.values.is_empty());
        let reason = |name: &str| {
            r.missing
                .iter()
                .find(|m| m.quantity == name)
                .unwrap()
                .reason
                .clone()
        };
        assert_eq!(reason("p_w"), "bus north: unit 9, input register 0 (0x0000) (in a read of 3 from 0): no answer within 250 ms");
        assert_eq!(
            reason("e_imp_wh"),
            "bus north: unit 9, input register 300 (0x012c): not tried after bus north: unit 9, input register 0 (0x0000), 3 registers: no answer within 250 ms"
        );
    }

    #[tokio::test]
    async fn sentinel_is_missing_while_the_rest_of_the_reading_is_kept() {
        let p = profile();
        let mut image = HashMap::new();
        for (i, w) in encode(-2500.0, &p.quantities[0], &p.defaults)
            .into_iter()
            .enumerate()
        {
            image.insert(i as u16, w);
        }
        image.insert(2, 0xFFFF);
        image.insert(301, 7);
        let mut link = FakeLink {
            image,
            fail: None,
            calls: vec![],
        };
        let c = clock();
        c.advance(Duration::from_millis(1234));
        let out = read_once(&mut link, "north", &meter(), &CostModel::rtu(9600), &c).await;
        // Both requests answered: 3 and 2 registers, each answer 5 bytes besides its data.
        assert_eq!((out.requests_sent, out.timeouts), (2, 0));
        let cost = CostModel::rtu(9600);
        assert_eq!(out.wire, cost.wire_time(8, 11) + cost.wire_time(8, 9));
        let r = out.reading;
        assert_eq!(r.values.p_w, Some(-2500.0));
        assert_eq!(r.values.e_imp_wh, Some(7.0));
        assert_eq!(r.values.f_hz, None);
        assert_eq!(r.quality, Quality::Partial);
        assert_eq!(r.missing.len(), 1);
        assert!(
            r.missing[0]
                .reason
                .ends_with("register 2 (0x0002): device reports not available (raw 0xffff)"),
            "{}",
            r.missing[0].reason
        );
        assert_eq!(r.mono_ms, 1234);
        assert_eq!(r.ts, c.now_utc());
    }

    #[tokio::test]
    async fn a_nonsense_value_is_missing_with_its_register_and_never_reported() {
        let p = profile();
        let mut image = HashMap::new();
        // 3 GW on a building meter: a torn or misread register, not a measurement.
        for (i, w) in encode(3.0e9, &p.quantities[0], &p.defaults)
            .into_iter()
            .enumerate()
        {
            image.insert(i as u16, w);
        }
        image.insert(2, 50);
        let mut link = FakeLink {
            image,
            fail: None,
            calls: vec![],
        };
        let out = read_once(
            &mut link,
            "north",
            &meter(),
            &CostModel::rtu(9600),
            &clock(),
        )
        .await;
        assert_eq!(out.last_error_kind, Some(ErrorKind::Implausible));
        let r = out.reading;
        assert_eq!(r.values.p_w, None);
        assert_eq!(r.values.f_hz, Some(50.0));
        assert_eq!(r.quality, Quality::Partial);
        let reason = &r.missing[0].reason;
        assert!(
            reason.starts_with("bus north: unit 9, input register 0 (0x0000): implausible p_w"),
            "{reason}"
        );
    }
}
