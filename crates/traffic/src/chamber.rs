//! A pure, seedable model of a cold room's air temperature, for the simulator and the
//! demo: a thermostat cycling a compressor around a setpoint, sensor noise, and now and
//! then a door left open long enough to push the room out of its safe range.
//!
//! The model is first order: the air relaxes exponentially toward a target that the
//! compressor (or an open door) sets. The exact exponential update is used rather than
//! an Euler step, so any `dt` — 250 ms or 1 min — stays stable.

use std::time::Duration;

use rand::Rng;
use vigia_core::SensorKind;

/// The physics and habits of one kind of room.
#[derive(Debug, Clone, PartialEq)]
pub struct ChamberProfile {
    /// Freezer or fridge; decides the rules the simulator provisions.
    pub kind: SensorKind,
    /// Thermostat setpoint, °C.
    pub setpoint: f64,
    /// Lowest safe temperature, °C (fridges: below it the product freezes).
    pub safe_min: Option<f64>,
    /// Highest safe temperature, °C.
    pub safe_max: f64,
    /// The compressor starts at `setpoint + hysteresis` and stops at `setpoint - hysteresis`.
    pub hysteresis: f64,
    /// With the compressor running the air heads for `setpoint - cooling_depth`.
    pub cooling_depth: f64,
    /// With the compressor stopped the air drifts toward `setpoint + warming_height`.
    pub warming_height: f64,
    /// Time constant of cooling (compressor on).
    pub cooling_tau: Duration,
    /// Time constant of warming through the walls (compressor off).
    pub warming_tau: Duration,
    /// An open door pulls the air toward `setpoint + door_height`…
    pub door_height: f64,
    /// …with this time constant.
    pub door_tau: Duration,
    /// Mean number of door openings per hour (a Poisson process); 0 disables them.
    pub door_openings_per_hour: f64,
    /// Shortest door opening.
    pub door_min: Duration,
    /// Longest door opening.
    pub door_max: Duration,
    /// Sensor noise is bounded to ±`noise` °C, roughly Gaussian inside that band.
    pub noise: f64,
}

impl ChamberProfile {
    /// A −20 °C freezer, unsafe above −18 °C. A door open for a minute takes it to
    /// about −17 °C, for four minutes to about −15.5 °C.
    pub fn freezer() -> Self {
        Self {
            kind: SensorKind::Freezer,
            setpoint: -20.0,
            safe_min: None,
            safe_max: -18.0,
            ..Self::common()
        }
    }

    /// A 3 °C fridge, safe between 0 and 5 °C.
    pub fn fridge() -> Self {
        Self {
            kind: SensorKind::Fridge,
            setpoint: 3.0,
            safe_min: Some(0.0),
            safe_max: 5.0,
            ..Self::common()
        }
    }

    fn common() -> Self {
        Self {
            kind: SensorKind::Generic,
            setpoint: 0.0,
            safe_min: None,
            safe_max: 0.0,
            hysteresis: 0.5,
            cooling_depth: 1.5,
            warming_height: 4.0,
            cooling_tau: Duration::from_secs(8 * 60),
            warming_tau: Duration::from_secs(30 * 60),
            door_height: 4.5,
            door_tau: Duration::from_secs(60),
            door_openings_per_hour: 3.0,
            door_min: Duration::from_secs(60),
            door_max: Duration::from_secs(4 * 60),
            noise: 0.3,
        }
    }
}

/// One simulated cold room and its temperature sensor.
#[derive(Debug, Clone)]
pub struct Chamber {
    key: String,
    profile: ChamberProfile,
    /// True air temperature, °C (the sensor adds noise to it).
    air: f64,
    compressor_on: bool,
    /// Time left before an open door closes; `None` while closed.
    door_open_for: Option<Duration>,
}

impl Chamber {
    /// A room with sensor key `key`, starting at its setpoint with the compressor on.
    pub fn new(key: impl Into<String>, profile: ChamberProfile) -> Self {
        Self {
            key: key.into(),
            air: profile.setpoint,
            compressor_on: true,
            door_open_for: None,
            profile,
        }
    }

    /// A −20 °C freezer (see [`ChamberProfile::freezer`]).
    pub fn freezer(key: impl Into<String>) -> Self {
        Self::new(key, ChamberProfile::freezer())
    }

    /// A 3 °C fridge, safe 0–5 °C (see [`ChamberProfile::fridge`]).
    pub fn fridge(key: impl Into<String>) -> Self {
        Self::new(key, ChamberProfile::fridge())
    }

    /// The same room with another setpoint; the safe range moves with it.
    pub fn with_setpoint(mut self, setpoint: f64) -> Self {
        let shift = setpoint - self.profile.setpoint;
        self.profile.setpoint = setpoint;
        self.profile.safe_max += shift;
        self.profile.safe_min = self.profile.safe_min.map(|m| m + shift);
        self.air += shift;
        self
    }

    /// The same room with another mean rate of door openings per hour (0 disables them).
    pub fn with_door_openings_per_hour(mut self, rate: f64) -> Self {
        self.profile.door_openings_per_hour = rate.max(0.0);
        self
    }

    /// The three seed-000 rooms: freezers CF-1 (−20 °C) and CF-2 (−21 °C, its safe
    /// limit stays at −18 °C like CF-1's), fridge REF-3 (3 °C).
    pub fn seed_000() -> Vec<Chamber> {
        let mut cf2 = Chamber::freezer("CF-2").with_setpoint(-21.0);
        // The product, not the setpoint, decides the safe limit: both hold frozen food.
        cf2.profile.safe_max = -18.0;
        vec![Chamber::freezer("CF-1"), cf2, Chamber::fridge("REF-3")]
    }

    /// The sensor key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The room's profile.
    pub fn profile(&self) -> &ChamberProfile {
        &self.profile
    }

    /// The true air temperature, without sensor noise.
    pub fn air_temperature(&self) -> f64 {
        self.air
    }

    /// Whether the door is open right now.
    pub fn door_open(&self) -> bool {
        self.door_open_for.is_some()
    }

    /// Opens the door for `how_long` (a forced excursion, for tests and demos).
    pub fn open_door(&mut self, how_long: Duration) {
        self.door_open_for = Some(how_long);
    }

    /// Advances the room by `dt` and returns what the sensor reads, °C rounded to
    /// hundredths.
    pub fn step(&mut self, dt: Duration, rng: &mut impl Rng) -> f64 {
        let p = &self.profile;
        if self.door_open_for.is_none() && p.door_openings_per_hour > 0.0 {
            let chance = 1.0 - (-p.door_openings_per_hour * dt.as_secs_f64() / 3600.0).exp();
            if rng.random::<f64>() < chance {
                let span = p.door_max.saturating_sub(p.door_min).as_secs_f64();
                let extra = Duration::from_secs_f64(span * rng.random::<f64>());
                self.door_open_for = Some(p.door_min + extra);
            }
        }

        let (target, tau) = if self.door_open_for.is_some() {
            (p.setpoint + p.door_height, p.door_tau)
        } else if self.compressor_on {
            (p.setpoint - p.cooling_depth, p.cooling_tau)
        } else {
            (p.setpoint + p.warming_height, p.warming_tau)
        };
        let tau = tau.as_secs_f64().max(f64::EPSILON);
        self.air = target + (self.air - target) * (-dt.as_secs_f64() / tau).exp();

        if self.air > p.setpoint + p.hysteresis {
            self.compressor_on = true;
        } else if self.air < p.setpoint - p.hysteresis {
            self.compressor_on = false;
        }
        self.door_open_for = self
            .door_open_for
            .and_then(|left| left.checked_sub(dt))
            .filter(|left| !left.is_zero());

        // Irwin–Hall: four uniforms summed are close to Gaussian but strictly bounded,
        // so the noise can never by itself push a reading across a limit.
        let sum: f64 = (0..4).map(|_| rng.random::<f64>()).sum();
        let noise = p.noise * (sum - 2.0) / 2.0;
        ((self.air + noise) * 100.0).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const FIVE_S: Duration = Duration::from_secs(5);

    fn run(chamber: &mut Chamber, rng: &mut StdRng, dt: Duration, total: Duration) -> Vec<f64> {
        let steps = (total.as_secs_f64() / dt.as_secs_f64()) as usize;
        (0..steps).map(|_| chamber.step(dt, rng)).collect()
    }

    #[test]
    fn steady_state_stays_within_limits_for_hours() {
        for dt in [Duration::from_millis(250), FIVE_S, Duration::from_secs(60)] {
            for mut chamber in Chamber::seed_000() {
                chamber = chamber.with_door_openings_per_hour(0.0);
                let mut rng = StdRng::seed_from_u64(7);
                let readings = run(&mut chamber, &mut rng, dt, Duration::from_secs(6 * 3600));
                let p = chamber.profile().clone();
                let (lo, hi) = readings
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
                let key = chamber.key();
                assert!(hi < p.safe_max - 0.5, "{key} dt={dt:?}: max {hi}");
                if let Some(min) = p.safe_min {
                    assert!(lo > min + 0.5, "{key} dt={dt:?}: min {lo}");
                }
                assert!(
                    (lo - p.setpoint).abs() < 1.5,
                    "{key}: cycles near setpoint, min {lo}"
                );
                assert!(
                    (hi - p.setpoint).abs() < 1.5,
                    "{key}: cycles near setpoint, max {hi}"
                );
                // The compressor really cycles: the room is not just sitting at the setpoint.
                assert!(hi - lo > 0.8, "{key} dt={dt:?}: swing {}", hi - lo);
            }
        }
    }

    #[test]
    fn noise_is_bounded_and_not_constant() {
        let mut chamber = Chamber::freezer("CF-1").with_door_openings_per_hour(0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let mut deviations = Vec::new();
        for _ in 0..2000 {
            let reading = chamber.step(Duration::from_millis(1), &mut rng);
            deviations.push(reading - chamber.air_temperature());
        }
        assert!(
            deviations.iter().all(|d| d.abs() <= 0.3 + 0.005),
            "bounded to ±0.3"
        );
        let spread = deviations.iter().fold(0.0_f64, |m, d| m.max(d.abs()));
        assert!(spread > 0.15, "noise is visible: {spread}");
    }

    #[test]
    fn a_door_event_on_cf1_exceeds_the_limit_then_recovers() {
        let mut chamber = Chamber::freezer("CF-1").with_door_openings_per_hour(0.0);
        let mut rng = StdRng::seed_from_u64(3);
        run(&mut chamber, &mut rng, FIVE_S, Duration::from_secs(1800));
        assert!(chamber.air_temperature() < -19.0);

        chamber.open_door(Duration::from_secs(150));
        assert!(chamber.door_open());
        let during = run(&mut chamber, &mut rng, FIVE_S, Duration::from_secs(150));
        assert!(!chamber.door_open(), "the door closes after its time");
        let peak = during.iter().copied().fold(f64::MIN, f64::max);
        assert!(peak > -18.0, "excursion above -18: peak {peak}");
        assert!(peak < -15.0, "about -16, not a thaw: peak {peak}");
        // A sharp rise, as the rate rule (1 °C/min) should notice: > 1.5 °C in one minute.
        assert!(
            during[12] - during[0] > 1.5,
            "{} -> {}",
            during[0],
            during[12]
        );

        let after = run(&mut chamber, &mut rng, FIVE_S, Duration::from_secs(20 * 60));
        let back_below = after.iter().position(|v| *v < -18.0).expect("recovers");
        assert!(
            back_below * 5 < 10 * 60,
            "below -18 within 10 min, took {}s",
            back_below * 5
        );
        assert!(
            after.last().copied().expect("readings") < -19.0,
            "back near setpoint"
        );
    }

    #[test]
    fn a_door_event_on_the_fridge_leaves_the_safe_range() {
        let mut chamber = Chamber::fridge("REF-3").with_door_openings_per_hour(0.0);
        let mut rng = StdRng::seed_from_u64(4);
        run(&mut chamber, &mut rng, FIVE_S, Duration::from_secs(1800));
        chamber.open_door(Duration::from_secs(60));
        let peak = run(&mut chamber, &mut rng, FIVE_S, Duration::from_secs(120))
            .into_iter()
            .fold(f64::MIN, f64::max);
        assert!(peak > 5.0 && peak < 8.0, "peak {peak}");
    }

    #[test]
    fn doors_open_at_the_configured_rate() {
        let mut chamber = Chamber::freezer("CF-1").with_door_openings_per_hour(3.0);
        let mut rng = StdRng::seed_from_u64(11);
        let mut openings = 0;
        let mut was_open = false;
        for _ in 0..(100 * 3600 / 5) {
            chamber.step(FIVE_S, &mut rng);
            if chamber.door_open() && !was_open {
                openings += 1;
            }
            was_open = chamber.door_open();
        }
        // 100 h at 3/h, minus the time the door is already open: ~290 expected.
        assert!(
            (200..=360).contains(&openings),
            "{openings} openings in 100 h"
        );

        let mut never = Chamber::freezer("CF-1").with_door_openings_per_hour(0.0);
        for _ in 0..10_000 {
            never.step(FIVE_S, &mut rng);
            assert!(!never.door_open());
        }
    }

    #[test]
    fn deterministic_with_a_seed() {
        let trace = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut chambers = Chamber::seed_000();
            (0..5000)
                .map(|_| {
                    chambers
                        .iter_mut()
                        .map(|c| c.step(FIVE_S, &mut rng))
                        .sum::<f64>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(trace(42), trace(42));
        assert_ne!(trace(42), trace(43));
    }

    #[test]
    fn seed_rooms() {
        let rooms = Chamber::seed_000();
        let summary: Vec<_> = rooms
            .iter()
            .map(|c| {
                (
                    c.key(),
                    c.profile().kind,
                    c.profile().setpoint,
                    c.profile().safe_min,
                    c.profile().safe_max,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("CF-1", SensorKind::Freezer, -20.0, None, -18.0),
                ("CF-2", SensorKind::Freezer, -21.0, None, -18.0),
                ("REF-3", SensorKind::Fridge, 3.0, Some(0.0), 5.0),
            ]
        );
    }
}
