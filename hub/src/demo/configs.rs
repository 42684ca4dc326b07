//! The configs the demo writes for its daemons: one site config per building and the central
//! config, as TOML text a technician could have written (and `socer check` accepts). Pure: the
//! caller writes the files.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::scenario::{BusKind, Scenario};

/// Where one building's daemon and meters live.
#[derive(Debug, Clone)]
pub struct SitePlan {
    pub building: String,
    /// The resident page and API.
    pub web: SocketAddr,
    /// Modbus TCP endpoint of the building's TCP meters.
    pub modbus_tcp: Option<SocketAddr>,
    /// The pty of its RS-485 line.
    pub rtu_path: Option<String>,
    /// Broker password and batch key (hex).
    pub password: String,
    pub key_hex: String,
}

/// Broker and central web addresses.
#[derive(Debug, Clone, Copy)]
pub struct CentralPlan {
    pub broker: SocketAddr,
    pub web: SocketAddr,
}

/// TOML string literal (basic string, escaped).
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The site config of building `b`: storage in `dir`, key in `key_file`, the hub's public key
/// (hex) to verify the signal and alerts with.
pub fn site_toml(
    scenario: &Scenario,
    b: usize,
    plan: &SitePlan,
    central: &CentralPlan,
    dir: &Path,
    key_file: &Path,
    hub_public_key: &str,
) -> String {
    let spec = &scenario.buildings[b];
    let mut t = String::new();
    let _ = writeln!(t, "# Written by `socer demo` for {}.", spec.name);
    let _ = writeln!(
        t,
        "[site]\nid = {}\ncommunity = {}\nname = {}",
        q(&spec.id),
        q(&scenario.community.id),
        q(&spec.name)
    );
    let _ = writeln!(
        t,
        "timezone = {}\n# The demo machine's clock is right from the start.\nclock = \"trust\"\n",
        q(&scenario.community.timezone)
    );
    let _ = writeln!(
        t,
        "[mqtt]\nurl = {}\nusername = {}\npassword = {}",
        q(&format!("mqtt://{}", central.broker)),
        q(&spec.id),
        q(&plan.password)
    );
    let _ = writeln!(t, "key_file = {}", q(&key_file.display().to_string()));
    let _ = writeln!(t, "hub_public_key = {}\n", q(hub_public_key));
    let _ = writeln!(
        t,
        "[storage]\npath = {}\nbudget = \"200MB\"\n",
        q(&dir.display().to_string())
    );
    let _ = writeln!(t, "[web]\nlisten = {}\n", q(&plan.web.to_string()));
    if let Some(addr) = plan.modbus_tcp {
        let _ = writeln!(
            t,
            "[[bus]]\nname = \"lan\"\ntcp = {}\ntimeout_ms = 1000\n",
            q(&addr.to_string())
        );
    }
    if let Some(path) = &plan.rtu_path {
        let _ = writeln!(
            t,
            "[[bus]]\nname = \"rs485\"\nserial = {}\nbaud = {}\nparity = \"none\"\nstop_bits = 1\ntimeout_ms = 500\n",
            q(path),
            super::meters::RTU_BAUD
        );
    }
    for m in &spec.meters {
        let bus = match m.bus {
            BusKind::Tcp => "lan",
            BusKind::Rtu => "rs485",
        };
        let _ = writeln!(
            t,
            "[[meter]]\nname = {}\nbus = \"{bus}\"\nunit = {}\nmodel = {}\nrole = {}",
            q(&m.name),
            m.unit,
            q(&m.model),
            q(&m.role)
        );
        if m.role == "grid" || m.role == "production" {
            let _ = writeln!(t, "pod = {}", q(&spec.pod));
        }
        t.push('\n');
    }
    t
}

/// The central hub's config: broker and web on loopback, every building a site, a member, a plant.
pub fn central_toml(
    scenario: &Scenario,
    central: &CentralPlan,
    sites: &[SitePlan],
    db: &Path,
    report_token: &str,
    signing_key_file: &Path,
) -> String {
    let c = &scenario.community;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `socer demo`.\n[central]\ncommunity = {}\nname = {}\ntimezone = {}",
        q(&c.id),
        q(&c.name),
        q(&c.timezone)
    );
    let _ = writeln!(
        t,
        "latitude = {}\nlongitude = {}\nperiod_minutes = 60\nraw_retention_days = 35\n",
        c.latitude, c.longitude
    );
    let _ = writeln!(
        t,
        "[broker]\nlisten = {}\nusername = \"central\"\npassword = {}\n",
        q(&central.broker.to_string()),
        q(report_token)
    );
    let _ = writeln!(
        t,
        "[web]\nlisten = {}\nreport_token = {}\n",
        q(&central.web.to_string()),
        q(report_token)
    );
    let _ = writeln!(t, "[storage]\npath = {}\n", q(&db.display().to_string()));
    let _ = writeln!(
        t,
        "[keys]\nsigning_key_file = {}\n",
        q(&signing_key_file.display().to_string())
    );
    let _ = writeln!(t, "[prices]\nzonal_eur_mwh = 110.0\ncuaf_eur_mwh = 11.22\n");
    // Until the sites' history has arrived the forecast leans on a mean consumption: the
    // community's, as a technician would estimate it from the members' bills.
    let _ = writeln!(
        t,
        "[signal]\nfallback_consumption_kw = {:.1}\n",
        mean_consumption_kw(scenario)
    );
    for s in &scenario.substations {
        let _ = writeln!(
            t,
            "[[substation]]\nid = {}\nname = {}\n",
            q(&s.id),
            q(&s.name)
        );
    }
    for (b, plan) in scenario.buildings.iter().zip(sites) {
        let _ = writeln!(
            t,
            "[[site]]\nid = {}\nname = {}\nkey = {}\npassword = {}\nmembers = [{}]\n",
            q(&b.id),
            q(&b.name),
            q(&plan.key_hex),
            q(&plan.password),
            q(&b.id)
        );
    }
    for b in &scenario.buildings {
        let _ = writeln!(
            t,
            "[[member]]\nid = {}\nname = {}\nkind = {}\npod = {}\nsubstation = {}\nsite = {}\n",
            q(&b.id),
            q(&b.name),
            q(b.member_kind.as_str()),
            q(&b.pod),
            q(&b.substation),
            q(&b.id)
        );
    }
    for b in &scenario.buildings {
        if let Some(pv) = &b.pv {
            let _ = writeln!(
                t,
                "[[plant]]\nid = {}\npod = {}\npeak_kw = {}\ncommissioned = \"{}\"\nregion = {}\ngrant_share = {}\n",
                q(&format!("pv-{}", b.id)),
                q(&b.pod),
                pv.peak_kw,
                pv.commissioned,
                q(&c.region),
                pv.grant_share
            );
        }
    }
    // The depot's charging is the flexible load the hub sends targeted alerts for.
    for b in &scenario.buildings {
        if let Some(d) = super::flex::Depot::of(b) {
            let _ = writeln!(
                t,
                "[[flex]]\nsite = {}\nname = {}\npower_kw = {:?}\nshift_hours = {:?}\n",
                q(&b.id),
                q(super::flex::FLEX_NAME),
                d.charger_kw,
                d.shift_hours
            );
        }
    }
    for b in &scenario.buildings {
        for m in b
            .meters
            .iter()
            .filter(|m| m.role == "grid" || m.role == "production")
        {
            let _ = writeln!(
                t,
                "[[meter]]\nsite = {}\nname = {}\npod = {}\nrole = {}\n",
                q(&b.id),
                q(&m.name),
                q(&b.pod),
                q(&m.role)
            );
        }
    }
    t
}

/// The community's mean consumption over a year of the model, kW (samples every 97 minutes, so
/// the hours of the day are covered evenly; the weather's seed does not change the loads' mean
/// much).
pub fn mean_consumption_kw(scenario: &Scenario) -> f64 {
    let c = super::model::Community::new(scenario.clone(), 1);
    let start = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(365 * 56);
    let step = chrono::Duration::minutes(97);
    let n = 365 * 24 * 60 / 97;
    let total_w: f64 = (0..n)
        .map(|i| {
            let t = start + step * i;
            (0..c.buildings().len())
                .map(|b| c.building_power(b, t).consumption_w())
                .sum::<f64>()
        })
        .sum();
    total_w / f64::from(n) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn plans(s: &Scenario) -> (CentralPlan, Vec<SitePlan>) {
        let central = CentralPlan {
            broker: "127.0.0.1:18830".parse().unwrap(),
            web: "127.0.0.1:18080".parse().unwrap(),
        };
        let sites = s
            .buildings
            .iter()
            .enumerate()
            .map(|(i, b)| SitePlan {
                building: b.id.clone(),
                web: format!("127.0.0.1:{}", 18100 + i).parse().unwrap(),
                modbus_tcp: b
                    .meters
                    .iter()
                    .any(|m| m.bus == BusKind::Tcp)
                    .then(|| format!("127.0.0.1:{}", 18200 + i).parse().unwrap()),
                rtu_path: b.has_rtu().then(|| "/dev/pts/7".to_string()),
                password: format!("pw-{i}"),
                key_hex: "ab".repeat(32),
            })
            .collect();
        (central, sites)
    }

    #[test]
    fn every_generated_site_config_passes_the_site_check() {
        let s = Scenario::builtin().unwrap();
        let (central, sites) = plans(&s);
        let dir = std::env::temp_dir().join(format!("socer-demo-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.key");
        std::fs::write(&key, "ab".repeat(32)).unwrap();
        let public =
            crate::wire::public_key_hex(&crate::wire::generate_signing_key().verifying_key());
        for (b, plan) in sites.iter().enumerate() {
            let text = site_toml(&s, b, plan, &central, &dir, &key, &public);
            let path = PathBuf::from(format!("{}.toml", plan.building));
            let diags = crate::site::config::check(&path, &text);
            assert!(diags.is_empty(), "{}: {:?}\n{text}", plan.building, diags);
        }
        let rtu = site_toml(&s, 2, &sites[2], &central, &dir, &key, &public);
        assert!(
            rtu.contains("serial = \"/dev/pts/7\"") && rtu.contains("bus = \"rs485\""),
            "{rtu}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_central_config_lists_every_building_plant_and_pod_meter() {
        let s = Scenario::builtin().unwrap();
        let (central, sites) = plans(&s);
        let text = central_toml(
            &s,
            &central,
            &sites,
            Path::new("/tmp/c.db"),
            "tok",
            Path::new("/d/hub-signing.key"),
        );
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["site"].as_array().unwrap().len(), 9);
        assert_eq!(v["member"].as_array().unwrap().len(), 9);
        // Every building but the bank has a plant.
        assert_eq!(v["plant"].as_array().unwrap().len(), 8);
        let meters = v["meter"].as_array().unwrap();
        assert_eq!(
            meters
                .iter()
                .filter(|m| m["role"].as_str() == Some("grid"))
                .count(),
            9
        );
        assert_eq!(v["broker"]["listen"].as_str(), Some("127.0.0.1:18830"));
        assert_eq!(v["site"][0]["key"].as_str().map(str::len), Some(64));
        assert_eq!(
            v["keys"]["signing_key_file"].as_str(),
            Some("/d/hub-signing.key")
        );
        // A forecast made before any history has arrived still knows the community uses power:
        // the demo community's mean is hundreds of kW (factory, supermarket, bus depot).
        let fallback = v["signal"]["fallback_consumption_kw"].as_float().unwrap();
        assert!((150.0..600.0).contains(&fallback), "{fallback} kW");
        // The depot's charging is declared flexible, so the hub targets alerts at it.
        let flex = v["flex"].as_array().unwrap();
        assert_eq!(flex.len(), 1);
        assert_eq!(flex[0]["site"].as_str(), Some("stps"));
        assert_eq!(flex[0]["power_kw"].as_float(), Some(180.0));
        assert_eq!(flex[0]["shift_hours"].as_float(), Some(4.0));
    }

    #[test]
    fn names_with_quotes_stay_valid_toml() {
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
        let v: toml::Value = toml::from_str(&format!("x = {}", q("Sala \"Vanoni\"\n"))).unwrap();
        assert_eq!(v["x"].as_str(), Some("Sala \"Vanoni\"\n"));
    }
}
