//! The physical state of a simulated meter: power from a pluggable source, grid voltage,
//! frequency and power factor, and energy counters that integrate power exactly over clock time.
//!
//! Time only comes from the `Clock` handle; counters never decrease except by an explicit reset.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::reading::Values;

/// Where a simulated device's active power comes from (W, positive importing; a generator is
/// negative). The demo plugs in PV and load models driven by wall time.
pub trait PowerSource: Send + 'static {
    fn power_w(&mut self, now: DateTime<Utc>) -> f64;
}

impl<F> PowerSource for F
where
    F: FnMut(DateTime<Utc>) -> f64 + Send + 'static,
{
    fn power_w(&mut self, now: DateTime<Utc>) -> f64 {
        self(now)
    }
}

/// A small deterministic generator (SplitMix64): same seed, same noise, on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal with mean 0 and standard deviation 1 (sum of 12 uniforms), bounded to ±6.
    pub fn gauss(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// Plausible meter power: a base value with relative noise (`noise` is the standard deviation as
/// a fraction of the base; 0 gives exactly the base).
#[derive(Debug, Clone)]
pub struct NoisyPower {
    pub base_w: f64,
    pub noise: f64,
    rng: Rng,
}

impl NoisyPower {
    pub fn new(base_w: f64, noise: f64, seed: u64) -> Self {
        NoisyPower {
            base_w,
            noise,
            rng: Rng::new(seed),
        }
    }
}

impl PowerSource for NoisyPower {
    fn power_w(&mut self, _now: DateTime<Utc>) -> f64 {
        self.base_w * (1.0 + self.noise * self.rng.gauss())
    }
}

/// Fixed parameters of a simulated device's physics.
#[derive(Debug, Clone, PartialEq)]
pub struct PhysicsConfig {
    /// 1 or 3.
    pub phases: u8,
    /// Seeds the grid noise (voltage, frequency, power factor).
    pub seed: u64,
    /// Relative noise of the grid quantities; 0 gives exactly `nominal_v`, `nominal_hz`, `nominal_pf`.
    pub grid_noise: f64,
    pub nominal_v: f64,
    pub nominal_hz: f64,
    pub nominal_pf: f64,
    /// Counters at start, Wh.
    pub import_wh: f64,
    pub export_wh: f64,
    /// How often the source is sampled; power holds between samples (a meter's update period).
    pub sample_period: Duration,
}

impl Default for PhysicsConfig {
    fn default() -> Self {
        PhysicsConfig {
            phases: 1,
            seed: 1,
            grid_noise: 1.0,
            nominal_v: 230.0,
            nominal_hz: 50.0,
            nominal_pf: 0.95,
            import_wh: 0.0,
            export_wh: 0.0,
            sample_period: Duration::from_secs(1),
        }
    }
}

/// A counter summed with Neumaier compensation, so millions of small steps add up to W × h
/// without drift.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    sum: f64,
    compensation: f64,
}

impl Counter {
    fn new(start: f64) -> Self {
        Counter {
            sum: start,
            compensation: 0.0,
        }
    }

    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Above this many samples in one catch-up, samples widen (a clock jumped far ahead).
const MAX_SAMPLES_PER_ADVANCE: u32 = 100_000;

/// The live state of one simulated device.
pub struct Physics {
    clock: Arc<dyn Clock>,
    source: Box<dyn PowerSource>,
    config: PhysicsConfig,
    rng: Rng,
    /// Monotonic time up to which energy has been integrated.
    integrated_to: Duration,
    /// When the source is sampled next (monotonic).
    next_sample: Duration,
    /// Power held since the last sample.
    p_w: f64,
    e_imp_wh: Counter,
    e_exp_wh: Counter,
    v_v: [f64; 3],
    f_hz: f64,
    pf: f64,
}

impl Physics {
    pub fn new(
        clock: Arc<dyn Clock>,
        mut source: Box<dyn PowerSource>,
        config: PhysicsConfig,
    ) -> Self {
        let p_w = source.power_w(clock.now_utc());
        let mut physics = Physics {
            integrated_to: clock.mono(),
            next_sample: clock.mono() + config.sample_period.max(Duration::from_millis(1)),
            rng: Rng::new(config.seed ^ 0x5EED_0FC0_FFEE),
            p_w,
            e_imp_wh: Counter::new(config.import_wh.max(0.0)),
            e_exp_wh: Counter::new(config.export_wh.max(0.0)),
            v_v: [config.nominal_v; 3],
            f_hz: config.nominal_hz,
            pf: config.nominal_pf,
            clock,
            source,
            config,
        };
        physics.sample_grid();
        physics
    }

    /// Integrate the held power up to the clock's now, sampling the source (and the grid) at
    /// every sample period boundary crossed. Energy is exactly the held power × elapsed time:
    /// Wh = W × h.
    pub fn advance(&mut self) {
        let now = self.clock.mono();
        if now <= self.integrated_to {
            return;
        }
        let period = self
            .config
            .sample_period
            .max((now - self.integrated_to) / MAX_SAMPLES_PER_ADVANCE)
            .max(Duration::from_millis(1));
        let wall_now = self.clock.now_utc();
        let mut sampled = false;
        while self.integrated_to < now {
            let until = self.next_sample.min(now);
            self.integrate(until - self.integrated_to);
            self.integrated_to = until;
            if until == self.next_sample {
                let behind =
                    chrono::Duration::from_std(now - until).unwrap_or(chrono::Duration::zero());
                self.p_w = self.source.power_w(wall_now - behind);
                self.next_sample = until + period;
                sampled = true;
            }
        }
        if sampled {
            self.sample_grid();
        }
    }

    fn integrate(&mut self, dt: Duration) {
        let wh = self.p_w * dt.as_secs_f64() / 3600.0;
        if wh > 0.0 {
            self.e_imp_wh.add(wh);
        } else if wh < 0.0 {
            self.e_exp_wh.add(-wh);
        }
    }

    fn sample_grid(&mut self) {
        let n = self.config.grid_noise;
        for v in &mut self.v_v {
            // ±1 % of 230 V is about the spread of a residential LV supply over minutes.
            *v = self.config.nominal_v * (1.0 + 0.01 * n * self.rng.gauss());
        }
        self.f_hz = self.config.nominal_hz * (1.0 + 0.0002 * n * self.rng.gauss());
        self.pf = (self.config.nominal_pf + 0.01 * n * self.rng.gauss()).clamp(0.0, 1.0);
    }

    /// Counters go back to 0, as after a meter replacement or a reset from its keypad.
    pub fn reset_counters(&mut self) {
        self.advance();
        self.e_imp_wh = Counter::new(0.0);
        self.e_exp_wh = Counter::new(0.0);
    }

    /// Advance to now and return the canonical quantities a meter would show.
    pub fn values(&mut self) -> Values {
        self.advance();
        let mut v = Values::default();
        let phases = self.config.phases.clamp(1, 3);
        v.p_w = Some(self.p_w);
        v.e_imp_wh = Some(self.e_imp_wh.value());
        v.e_exp_wh = Some(self.e_exp_wh.value());
        v.f_hz = Some(self.f_hz);
        v.pf = Some(self.pf);
        let per_phase_w = self.p_w.abs() / f64::from(phases);
        for ph in 1..=phases {
            let volts = self.v_v[usize::from(ph - 1)];
            v.set(crate::reading::Quantity::VV, ph, volts);
            let amps = if volts > 0.0 && self.pf > 0.0 {
                per_phase_w / (volts * self.pf)
            } else {
                0.0
            };
            v.set(crate::reading::Quantity::IA, ph, amps);
        }
        // A storage device seen the same way: its power into the device is charging, what it
        // took in and gave back are its charge and discharge counters; the state of charge is
        // what the integrated energy leaves in a nominal 10 kWh battery that started half full.
        v.bat_p_w = Some(self.p_w);
        v.e_charge_wh = v.e_imp_wh;
        v.e_discharge_wh = v.e_exp_wh;
        let stored = 5_000.0 + self.e_imp_wh.value() - self.e_exp_wh.value();
        v.soc_pct = Some(
            (stored / 10_000.0 * 100.0)
                .rem_euclid(100.0)
                .clamp(0.0, 100.0),
        );
        v
    }

    /// The counters as integrated so far (without advancing), Wh: (import, export).
    pub fn energy_wh(&self) -> (f64, f64) {
        (self.e_imp_wh.value(), self.e_exp_wh.value())
    }
}
