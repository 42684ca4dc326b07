//! The resident page and the community dashboard in a real browser: headless Debian Chromium,
//! driven over the DevTools protocol, against `socer demo` (real site agents and central hub with
//! simulated meters). Screenshots go to `target/screenshots/`; page weights are printed.

mod pages_support;

use std::path::PathBuf;
use std::time::Duration;

use pages_support::{http_status, Browser, Demo};
use serde_json::Value;

/// What the pages may weigh on the wire, all assets and first API answers included.
const MAX_PAGE_BYTES: f64 = 150_000.0;

fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("screenshots")
}

/// A power as the pages write it in Italian: `738 W`, `7,2 kW`, `1.234,5 kW`.
fn it_power(w: f64) -> String {
    if w.abs() < 1000.0 {
        return format!("{} W", group_it(&format!("{:.0}", w.round())));
    }
    let (int, frac) = round_like_intl(w / 1000.0);
    format!("{},{} kW", group_it(&int), frac)
}

/// One decimal the way the browser's `Intl.NumberFormat` does it: ICU takes the shortest decimal
/// that round-trips the double (`101.05`, not the binary `101.0499…`) and rounds half away from
/// zero, where Rust's `{:.1}` rounds the exact binary value (and would say `101.0`).
fn round_like_intl(x: f64) -> (String, char) {
    let shortest = format!("{}", x.abs());
    let (int, frac) = shortest.split_once('.').unwrap_or((&shortest, ""));
    let digits: Vec<u32> = frac.chars().filter_map(|c| c.to_digit(10)).collect();
    let mut tenths =
        int.parse::<u64>().unwrap_or(0) * 10 + u64::from(digits.first().copied().unwrap_or(0));
    if digits.get(1).is_some_and(|&d| d >= 5) {
        tenths += 1;
    }
    let sign = if x < 0.0 && tenths > 0 { "-" } else { "" };
    let frac = char::from_digit((tenths % 10) as u32, 10).unwrap_or('0');
    (format!("{sign}{}", tenths / 10), frac)
}

/// Nothing on the page may be wider than the screen: a phone must never scroll sideways.
fn assert_fits_width(b: &mut Browser, width: u32, page: &str) {
    let scroll = b
        .eval("document.documentElement.scrollWidth")
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        scroll <= u64::from(width),
        "the {page} is {scroll} px wide on a {width} px screen"
    );
}

fn group_it(int: &str) -> String {
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('.');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

#[test]
fn italian_power_format_groups_thousands_with_dots() {
    assert_eq!(it_power(738.0), "738 W");
    assert_eq!(it_power(7158.07), "7,2 kW");
    assert_eq!(it_power(-485_400.0), "-485,4 kW");
    assert_eq!(it_power(1_234_500.0), "1.234,5 kW");
    // A value on a rounding boundary: the browser shows 101,1 (shortest decimal 101.05, half up).
    assert_eq!(it_power(101_050.0), "101,1 kW");
    assert_eq!(it_power(-101_050.0), "-101,1 kW");
    assert_eq!(it_power(101_049.0), "101,0 kW");
}

fn text(b: &mut Browser, sel: &str) -> String {
    b.eval(&format!(
        "(document.querySelector({sel:?}) || {{}}).textContent || ''"
    ))
    .as_str()
    .unwrap_or("")
    .trim()
    .to_string()
}

fn click(b: &mut Browser, sel: &str) {
    b.eval(&format!("document.querySelector({sel:?}).click(), true"));
}

/// Press the language switch; English texts are fetched the first time (a few ms on loopback).
fn switch_lang(b: &mut Browser, lang: &str) {
    click(b, &format!(".lang button[data-lang='{lang}']"));
    assert!(
        b.wait_for(
            &format!("document.documentElement.lang === '{lang}'"),
            Duration::from_secs(10)
        ),
        "the page did not switch to {lang}"
    );
}

fn weigh(b: &Browser, since: usize, page: &str) -> f64 {
    let all = b.transferred_since(since);
    let total: f64 = all.iter().map(|(_, n)| n).sum();
    let assets: f64 = all
        .iter()
        .filter(|(u, _)| !u.contains("/api/"))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "page weight {page}: {total:.0} bytes on the wire in {} requests ({assets:.0} bytes of page and assets)",
        all.len()
    );
    for (u, n) in &all {
        eprintln!("  {n:>8.0}  {u}");
    }
    assert!(total > 0.0, "{page}: nothing transferred?");
    assert!(
        total <= MAX_PAGE_BYTES,
        "{page} weighs {total} bytes, over {MAX_PAGE_BYTES}"
    );
    total
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * (1.0 + b.abs())
}

fn resident(b: &mut Browser, port: u16) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}/");
    b.set_width(1280);
    let mark = b.events.len();
    b.open(&url);
    b.pump(Duration::from_millis(500));
    weigh(b, mark, "resident");

    // Italian by default.
    assert_eq!(b.eval("document.documentElement.lang"), "it");
    assert_eq!(text(b, "#h-now"), "Il tuo edificio adesso");

    // The values shown are those of /api/v1/now at the same moment: retry until no reading
    // arrived between the page's state and the API's answer.
    let mut matched = None;
    for _ in 0..30 {
        let v = b.eval(
            "(async () => { const n = await (await fetch('/api/v1/now', {cache: 'no-store'})).json();
               const d = (id) => { const e = document.getElementById(id); return [Number(e.dataset.w), e.textContent]; };
               return { t: n.totals, meters: n.meters, prod: d('v-prod'), use: d('v-use'), grid: d('v-grid') }; })()",
        );
        let t = &v["t"];
        let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
        let dom = |k: &str| v[k][0].as_f64().unwrap_or(f64::NAN);
        if near(dom("prod"), f("production_w"))
            && near(dom("use"), f("building_load_w"))
            && near(dom("grid"), f("grid_w"))
        {
            matched = Some(v);
            break;
        }
        b.pump(Duration::from_millis(150));
    }
    let v = matched.expect("the page's figures never equalled /api/v1/now in 30 tries");
    let readings = v["meters"]
        .as_array()
        .map(|m| m.iter().filter(|m| !m["reading"].is_null()).count())
        .unwrap_or(0);
    assert!(readings > 0, "the site has no live reading yet: {v}");
    assert_eq!(
        v["prod"][1].as_str().unwrap_or(""),
        it_power(v["t"]["production_w"].as_f64().unwrap_or(0.0))
    );
    assert_eq!(
        v["use"][1].as_str().unwrap_or(""),
        it_power(v["t"]["building_load_w"].as_f64().unwrap_or(0.0))
    );
    assert_eq!(
        v["grid"][1].as_str().unwrap_or(""),
        it_power(v["t"]["grid_w"].as_f64().unwrap_or(0.0).abs())
    );

    // The community's level as the building received it, in words and not by colour alone
    // (the page polls the signal; a change may take one poll to show).
    let same_level = "(async () => {
        const r = await (await fetch('/api/v1/signal', {cache: 'no-store'})).json();
        const lv = r.signal ? r.signal.community.level : 'none';
        const words = { green: 'Verde: energia in abbondanza', yellow: 'Giallo: in equilibrio',
                        red: 'Rosso: meglio aspettare', none: 'Segnale non disponibile' }[lv];
        window.__socerLevel = lv;
        return document.getElementById('level').className === 'level lv-' + lv
            && document.querySelector('#level strong').textContent === words; })()";
    assert!(
        b.wait_for(same_level, Duration::from_secs(40)),
        "the level shown is not the site's /api/v1/signal"
    );
    eprintln!("resident page level: {}", b.eval("window.__socerLevel"));

    // The month's share of the community's shared energy, as the hub sealed it for this
    // building (`site/{site}/summary` → `community_share`), in Italian with one decimal.
    let share_shown = "(async () => {
        const n = await (await fetch('/api/v1/now', {cache: 'no-store'})).json();
        const sh = n.community_share, text = document.getElementById('share').textContent;
        if (!sh) return false;
        window.__socerShare = text;
        if (!(sh.community_shared_kwh > 0)) return text.startsWith('Non ancora disponibile');
        // The larger of its two roles comes first.
        const producer = sh.shared_as_producer_kwh > sh.shared_as_consumer_kwh;
        const kwh = producer ? sh.shared_as_producer_kwh : sh.shared_as_consumer_kwh;
        const pct = new Intl.NumberFormat('it-IT', { minimumFractionDigits: 1, maximumFractionDigits: 1,
            useGrouping: 'always' }).format(100 * kwh / sh.community_shared_kwh);
        return text.startsWith(pct + ' % dell\\'energia condivisa della comunità')
            && text.includes(producer ? 'come produzione' : 'come consumo')
            && text.includes(S.monthName(sh.month).replace(/^./, (c) => c.toUpperCase()) + ': dati della comunità alle')
            && /^(gennaio|febbraio|marzo|aprile|maggio|giugno|luglio|agosto|settembre|ottobre|novembre|dicembre) \\d{4}$/
                .test(S.monthName(sh.month)); })()";
    assert!(
        b.wait_for(share_shown, Duration::from_secs(75)),
        "the page does not show the site's community_share: {}",
        b.eval("window.__socerShare")
    );
    eprintln!("resident page share: {}", b.eval("window.__socerShare"));

    // A live update arrives by server-sent events, without a reload.
    b.eval("window.__socerMark = 'same page', true");
    let n0 = b.eval("Number(document.getElementById('live-count').dataset.n)");
    let n0 = n0.as_f64().unwrap_or(0.0);
    let shown0 = text(b, "#updated");
    assert!(
        b.wait_for(
            &format!(
                "Number(document.getElementById('live-count').dataset.n) > {n0} + 1 \
                 && document.getElementById('updated').textContent !== {shown0:?}"
            ),
            Duration::from_secs(30)
        ),
        "no live update within 30 s"
    );
    assert_eq!(b.eval("window.__socerMark"), "same page");
    assert_eq!(
        b.eval("performance.getEntriesByType('navigation').length"),
        1
    );

    // The technician tab lists every meter with its bus and state, the uplink and the clock.
    let meters = v["meters"].as_array().cloned().unwrap_or_default();
    click(b, "#tab-tech");
    assert!(
        b.wait_for(
            &format!(
                "document.querySelectorAll('#meters tr').length === {} && document.querySelectorAll('#link dd').length >= 5",
                meters.len()
            ),
            Duration::from_secs(10)
        ),
        "the technician tab did not fill"
    );
    assert_eq!(b.eval("document.getElementById('main').hidden"), true);
    for m in &meters {
        let name = m["name"].as_str().unwrap_or("");
        let row = text(b, &format!("#meters tr[data-meter='{name}']"));
        let bus = format!("{} · {}", m["bus"].as_str().unwrap_or("?"), m["unit"]);
        assert!(row.contains(&bus), "row of {name} lacks {bus}: {row}");
        assert!(row.contains(m["model"].as_str().unwrap_or("?")), "{row}");
    }
    let link = text(b, "#link");
    assert!(
        link.contains("connesso") && link.contains("Orologio"),
        "{link}"
    );
    b.set_width(360);
    b.screenshot(&screenshots().join("resident-tech-360.png"));
    b.set_width(1280);
    click(b, "#tab-home");

    // The language switch, and the browser's language.
    switch_lang(b, "en");
    assert_eq!(b.eval("document.documentElement.lang"), "en");
    assert_eq!(text(b, "#h-now"), "Your building now");
    assert_eq!(text(b, "#d7"), "7 days");
    // English keeps 24-hour Rome time but writes numbers the English way.
    let grid = b.eval(
        "(() => { const e = document.getElementById('v-grid'); return [Number(e.dataset.w), e.textContent]; })()",
    );
    let grid_it = it_power(grid[0].as_f64().unwrap_or(0.0).abs());
    let grid_en: String = grid_it
        .chars()
        .map(|c| match c {
            '.' => ',',
            ',' => '.',
            c => c,
        })
        .collect();
    assert_eq!(grid[1], grid_en.as_str());
    click(b, ".lang button[data-lang='it']");
    assert_eq!(text(b, "#h-now"), "Il tuo edificio adesso");
    b.eval("localStorage.removeItem('socer.lang'), true");
    b.set_language("en-US,en;q=0.9");
    b.open(&url);
    assert_eq!(
        b.eval("document.documentElement.lang"),
        "en",
        "an English browser gets English"
    );
    b.set_language("de-DE,de;q=0.9");
    b.open(&url);
    assert_eq!(
        b.eval("document.documentElement.lang"),
        "it",
        "other languages get Italian"
    );
    b.set_language("it-IT,it;q=0.9");
    b.open(&url);

    for w in [360, 1280] {
        b.set_width(w);
        b.screenshot(&screenshots().join(format!("resident-{w}.png")));
        assert_fits_width(b, w, "resident page");
    }
    b.eval("localStorage.removeItem('socer.lang'), true");
    b.set_language("en-US,en;q=0.9");
    b.open(&url);
    b.set_width(360);
    b.screenshot(&screenshots().join("resident-360-en.png"));
    b.set_language("it-IT,it;q=0.9");
    Vec::new()
}

/// Returns the API paths the test saw answer with an error on purpose or because another part
/// is not merged yet (their failed loads are expected in the console).
fn dashboard(b: &mut Browser, port: u16, token: &str) -> Vec<String> {
    let url = format!("http://127.0.0.1:{port}/");
    // The hub publishes a signal once live readings arrive; give it that time.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while http_status(port, "/api/v1/signal") != 200 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
    }
    b.set_width(1280);
    let mark = b.events.len();
    b.open(&url);
    b.pump(Duration::from_millis(500));
    weigh(b, mark, "dashboard");
    assert_eq!(b.eval("document.documentElement.lang"), "it");
    assert_eq!(text(b, "#h-now"), "La comunità adesso");

    // The figures shown equal /api/v1/community/now of the same balance.
    let mut matched = None;
    for _ in 0..20 {
        let v = b.eval(
            "(async () => { await window.socerRefresh();
               const n = await (await fetch('/api/v1/community/now', {cache: 'no-store'})).json();
               const dom = {};
               for (const k of ['production', 'consumption', 'injection', 'withdrawal', 'surplus', 'shared']) {
                 const e = document.getElementById('v-' + k);
                 dom[k] = [Number(e.dataset.w), e.textContent];
               }
               return { n, dom, ts: document.getElementById('updated').dataset.ts,
                        label: document.getElementById('surplus-label').textContent }; })()",
        );
        if v["ts"] == v["n"]["balance"]["ts"] {
            matched = Some(v);
            break;
        }
        b.pump(Duration::from_millis(100));
    }
    let v = matched.expect("never caught the page and the API on the same balance");
    for k in [
        "production",
        "consumption",
        "injection",
        "withdrawal",
        "surplus",
        "shared",
    ] {
        let api = v["n"]["balance"][format!("{k}_w")]
            .as_f64()
            .unwrap_or(f64::NAN);
        let dom = v["dom"][k][0].as_f64().unwrap_or(f64::NAN);
        assert!(near(dom, api), "{k}: page {dom}, API {api}");
        if k == "surplus" {
            // A negative surplus is a deficit, in words, never "Surplus −377,5 kW".
            assert_eq!(v["dom"][k][1].as_str().unwrap_or(""), it_power(api.abs()));
            let label = if api < 0.0 { "Deficit" } else { "Surplus" };
            assert_eq!(v["label"].as_str().unwrap_or(""), label, "surplus {api}");
        } else {
            assert_eq!(v["dom"][k][1].as_str().unwrap_or(""), it_power(api), "{k}");
        }
    }

    // Every site is listed with its state in words.
    let sites = v["n"]["sites_total"].as_u64().unwrap_or(0);
    assert!(sites > 0);
    assert_eq!(
        b.eval("document.querySelectorAll('#sites tr').length"),
        sites
    );
    assert!(text(b, "#sites").contains("in linea"));

    // Live figures arrive without a reload.
    b.eval("window.__socerMark = 'same page', true");
    let n0 = b
        .eval("Number(document.getElementById('updated').dataset.n)")
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        b.wait_for(
            &format!("Number(document.getElementById('updated').dataset.n) > {n0}"),
            Duration::from_secs(15)
        ),
        "no live refresh within 15 s"
    );
    assert_eq!(b.eval("window.__socerMark"), "same page");

    // Hourly shared energy of today and the month's days are drawn.
    assert!(
        b.eval("document.querySelectorAll('#chart-day rect').length")
            .as_u64()
            > Some(0)
    );
    assert!(text(b, "#day-sum").starts_with("Nel giorno: condivisa"));
    assert!(text(b, "#month-sum").starts_with("Nel mese: condivisa"));

    let mut failing = Vec::new();
    for path in ["/api/v1/signal", "/api/v1/incentive?month="] {
        let month: String = b
            .eval("document.getElementById('month').value")
            .as_str()
            .unwrap_or("")
            .into();
        let full = if path.ends_with('=') {
            format!("{path}{month}")
        } else {
            path.to_string()
        };
        let code = http_status(port, &full);
        if code != 200 {
            eprintln!("note: {full} answers {code}: the page says so instead of a figure");
            failing.push(path.trim_end_matches("?month=").to_string());
            if path.starts_with("/api/v1/signal") {
                assert_eq!(text(b, "#level strong"), "Segnale non disponibile");
            } else {
                assert!(text(b, "#inc-note").contains(&format!("HTTP {code}")));
            }
        } else if path.starts_with("/api/v1/signal") {
            assert!(
                b.eval("document.querySelectorAll('#forecast span').length")
                    .as_u64()
                    > Some(0)
            );
        }
    }

    // Reports need the token: a wrong one is refused, the right one gets what the API gives.
    b.eval("document.getElementById('token').value = 'wrong', true");
    click(b, "#report button[type=submit]");
    assert!(b.wait_for(
        "document.getElementById('rep-msg').textContent.startsWith('Chiave non valida')",
        Duration::from_secs(10)
    ));
    failing.push("/api/v1/report/".into());
    b.eval(&format!(
        "document.getElementById('token').value = {token:?}, true"
    ));
    click(b, "#report button[type=submit]");
    assert_eq!(
        b.eval("sessionStorage.getItem('socer.token')"),
        Value::String(token.into())
    );
    assert!(b.wait_for(
        "!document.getElementById('rep-msg').textContent.startsWith('Chiave non valida') \
         && !document.getElementById('rep-msg').textContent.startsWith('Scaricamento')",
        Duration::from_secs(15)
    ));
    let msg = text(b, "#rep-msg");
    assert!(
        msg.starts_with("Rendiconto socer-") || msg.starts_with("Rendiconto non disponibile (HTTP"),
        "{msg}"
    );

    switch_lang(b, "en");
    assert_eq!(text(b, "#h-now"), "The community now");
    assert_eq!(text(b, "#h-sites"), "Sites");
    click(b, ".lang button[data-lang='it']");
    assert_eq!(text(b, "#h-sites"), "Edifici");

    for w in [360, 1280] {
        b.set_width(w);
        b.screenshot(&screenshots().join(format!("dashboard-{w}.png")));
        assert_fits_width(b, w, "dashboard");
    }
    failing
}

/// The building's share paragraph quotes the community total the hub has: once the hub has worked
/// through the demo's backlog, the building has the complete total within seconds, not a partial
/// one held for a minute. The summary may trail the live figures by the hour being filled.
fn share_total_follows_the_hub(site_port: u16, hub_port: u16) {
    let json = |port: u16, path: &str| -> Value {
        pages_support::http_get(port, path)
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    };
    let month = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .format("%Y-%m")
        .to_string();
    let hub_total = || {
        json(hub_port, &format!("/api/v1/incentive?month={month}"))["community"]["shared_mwh"]
            .as_f64()
    };
    // The hub is done with the backlog when its total holds still and is not zero.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let mut last = None;
    let hub_mwh = loop {
        let now = hub_total();
        if now.is_some_and(|v| v > 0.0) && now == last {
            break now.unwrap_or(0.0);
        }
        assert!(
            std::time::Instant::now() < until,
            "the hub's month total never settled: {now:?}"
        );
        last = now;
        std::thread::sleep(Duration::from_secs(4));
    };
    let settled = std::time::Instant::now();
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Rome)
        .date_naive();
    let day = json(
        hub_port,
        &format!(
            "/api/v1/energy?from={today}&to={}&step=1h",
            today.succ_opt().unwrap_or(today)
        ),
    );
    let filled: Vec<f64> = day["slots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|s| s["periods"].as_u64() > Some(0))
        .map(|s| s["shared_mwh"].as_f64().unwrap_or(0.0))
        .collect();
    let lag_kwh = filled.iter().rev().take(2).sum::<f64>() / 1e6 + 0.1;
    let hub_kwh = hub_mwh / 1e6;
    let mut site_kwh = -1.0;
    while settled.elapsed() < Duration::from_secs(20) {
        site_kwh = json(site_port, "/api/v1/now")["community_share"]["community_shared_kwh"]
            .as_f64()
            .unwrap_or(-1.0);
        if site_kwh >= 0.0 && site_kwh <= hub_kwh + 0.01 && hub_kwh - site_kwh <= lag_kwh {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "community total {:.0} s after the hub settled: site {site_kwh} kWh, hub {hub_kwh} kWh (may trail by {lag_kwh:.3})",
        settled.elapsed().as_secs_f64()
    );
    assert!(
        site_kwh >= 0.0 && site_kwh <= hub_kwh + 0.01 && hub_kwh - site_kwh <= lag_kwh,
        "20 s after the hub settled, the building quotes {site_kwh} kWh as the community's total; the hub has {hub_kwh}"
    );
}

/// Every visible button, link, input and tab is at least 44 × 44 px at 360 px width.
fn assert_tap_targets(b: &mut Browser, page: &str) {
    b.set_width(360);
    b.pump(Duration::from_millis(300));
    let small = b.eval(
        "[...document.querySelectorAll('button, a, input, select, [role=tab]')]
           .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > 0)
           .map((e) => { const r = e.getBoundingClientRect();
             return { what: e.outerHTML.slice(0, 80), w: Math.round(r.width * 10) / 10, h: Math.round(r.height * 10) / 10 }; })
           .filter((x) => x.w < 44 || x.h < 44)",
    );
    let measured = b.eval(
        "[...document.querySelectorAll('button, a, input, select, [role=tab]')].filter((e) => e.offsetParent !== null).length",
    );
    assert!(measured.as_u64() > Some(2), "{page}: nothing measured");
    assert_eq!(
        small,
        Value::Array(vec![]),
        "{page}: tap targets under 44 px"
    );
}

/// A meter that stops answering (the demo's `--silence domus-3/pv`) is shown greyed, with since
/// when, on Casa, on Tecnico and on the hub; "Aggiornato alle" stops with its last reading.
fn dead_meter(b: &mut Browser, site_port: u16, hub_port: u16) {
    let url = format!("http://127.0.0.1:{site_port}/");
    b.set_width(360);
    b.open(&url);
    assert!(
        b.wait_for(
            "document.getElementById('t-prod').dataset.stale === '1'",
            Duration::from_secs(120)
        ),
        "the silent PV meter never greyed the production figure: {}",
        text(b, "#h-now ~ *")
    );
    let since = text(b, "#t-prod .since");
    assert!(since.starts_with("non risponde dalle "), "{since}");
    assert_eq!(
        b.eval("document.getElementById('t-use').dataset.stale"),
        "1",
        "Usa is made of the PV meter's figure too"
    );
    assert_eq!(
        b.eval("document.getElementById('t-grid').dataset.stale"),
        ""
    );
    let note = text(b, "#stale-note");
    assert!(
        note.contains("«pv»") && note.contains("non risponde dalle"),
        "{note}"
    );
    // The server agrees, and "Aggiornato alle" is the dead meter's last reading, not the newest.
    let v = b.eval(
        "(async () => { const n = await (await fetch('/api/v1/now', {cache: 'no-store'})).json();
           const pv = n.meters.find((m) => m.name === 'pv');
           return { silent: pv.silent_since, last: pv.reading && pv.reading.ts,
                    shown: document.getElementById('updated').dataset.ts }; })()",
    );
    assert!(v["silent"].is_string(), "{v}");
    let ms = |x: &Value| {
        chrono::DateTime::parse_from_rfc3339(x.as_str().unwrap_or(""))
            .map(|t| t.timestamp_millis())
            .unwrap_or(-1)
    };
    assert_eq!(
        ms(&v["shown"]),
        ms(&v["last"]),
        "Aggiornato alle must be the dead meter's last reading: {v}"
    );
    let shown = text(b, "#updated");
    b.pump(Duration::from_secs(7));
    assert_eq!(
        text(b, "#updated"),
        shown,
        "Aggiornato alle advanced on a dead meter's figures"
    );
    b.screenshot(&screenshots().join("resident-dead-meter-360.png"));

    click(b, "#tab-tech");
    assert!(
        b.wait_for(
            "(() => { const r = document.querySelector(\"#meters tr[data-meter='pv']\");
               return !!r && r.dataset.state === 'silent' && !!r.querySelector('td.err[data-kind]')
                 && r.textContent.includes('nessuna risposta entro il tempo limite'); })()",
            Duration::from_secs(20)
        ),
        "the technician tab does not show the PV meter as not answering: {}",
        text(b, "#meters")
    );
    let row = text(b, "#meters tr[data-meter='pv']");
    assert!(row.contains("non risponde dalle"), "{row}");
    assert!(
        row.contains("nessuna risposta entro il tempo limite"),
        "the error kind in plain words: {row}"
    );
    assert!(!row.contains("os error"), "{row}");
    assert!(
        row.contains("serial /dev/"),
        "the bus endpoint of an RS-485 line: {row}"
    );
    let fails = b.eval(
        "Number(document.querySelector(\"#meters tr[data-meter='pv'] td[data-n]\").dataset.n)",
    );
    assert!(fails.as_f64() >= Some(1.0), "consecutive failures: {fails}");
    let grid = text(b, "#meters tr[data-meter='grid']");
    for unit in [" V", " A", "PF ", " Hz"] {
        assert!(grid.contains(unit), "V/I/PF/Hz of a live meter: {grid}");
    }
    b.screenshot(&screenshots().join("resident-tech-dead-meter-360.png"));
    click(b, "#tab-home");

    // The hub lists the failing meter of that site, since when and why.
    let hub = format!("http://127.0.0.1:{hub_port}/");
    b.open(&hub);
    assert!(
        b.wait_for(
            "(() => { const li = document.querySelector(\"#sites tr[data-site='domus-3'] li[data-meter='pv']\");
               return !!li && li.textContent.includes('non risponde dalle')
                 && li.textContent.includes('nessuna risposta entro il tempo limite'); })()",
            Duration::from_secs(90)
        ),
        "the hub does not list domus-3's silent meter: {}",
        text(b, "#sites")
    );
    let row = text(b, "#sites tr[data-site='domus-3']");
    assert!(
        row.contains("nessuna risposta entro il tempo limite"),
        "{row}"
    );
    assert_eq!(
        b.eval("document.querySelector(\"#sites tr[data-site='domus-1']\").dataset.failing"),
        ""
    );
    b.screenshot(&screenshots().join("dashboard-dead-meter-360.png"));
}

/// A building with no panels (the bank branch: one grid meter) shows no production tile, series or
/// legend, and "Usa" is not repeated as "Preleva".
fn no_panels(b: &mut Browser, port: u16) {
    b.set_width(360);
    b.open(&format!("http://127.0.0.1:{port}/"));
    assert_eq!(b.eval("document.getElementById('t-prod').hidden"), true);
    assert_eq!(b.eval("document.getElementById('t-grid').hidden"), true);
    assert_eq!(
        b.eval("[...document.querySelectorAll('.legend li.prod')].every((e) => e.hidden)"),
        true
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#chart-today .l-prod, #chart-hist .b-prod').length"),
        0
    );
    assert_eq!(text(b, "#use-label"), "Usa (tutto dalla rete)");
    let sum = text(b, "#today-sum");
    assert!(!sum.contains("prodotta"), "{sum}");
    let hist = text(b, "#hist-sum");
    assert!(
        hist.starts_with("In 1 giorno:")
            || hist.contains(" giorni:")
            || hist == "Nessun dato ancora.",
        "{hist}"
    );
    b.screenshot(&screenshots().join("resident-no-panels-360.png"));
}

/// The dashboard's day, month and incentive figures are fetched again while the page stays open,
/// and equal the hub's at that moment, in the right words: days covered, plurals, month names.
fn dashboard_follows_the_hub(b: &mut Browser, port: u16) {
    b.set_width(1280);
    b.open(&format!("http://127.0.0.1:{port}/"));
    b.eval("window.__socerMark = 'same page', true");
    let counts = "['day-sum', 'month-sum', 'inc-note'].map((id) => Number(document.getElementById(id).dataset.n || 0))";
    let before = b.eval(counts);
    let first_day = text(b, "#day-sum");
    assert!(
        b.wait_for(
            &format!(
                "(() => {{ const b = {before}; const n = {counts}; return n.every((x, i) => x > b[i]); }})()"
            ),
            Duration::from_secs(75)
        ),
        "the day, month and incentive figures were not fetched again without a reload"
    );
    assert_eq!(b.eval("window.__socerMark"), "same page");
    // What the page shows is the hub's answer of now (computed here the page's way).
    let same = "(async () => {
        await new Promise((r) => setTimeout(r, 50));
        const d = document.getElementById('day').value, m = document.getElementById('month').value;
        const next = new Date(Date.parse(d + 'T12:00:00Z') + 86400e3).toISOString().slice(0, 10);
        const day = await (await fetch(`/api/v1/energy?from=${d}&to=${next}&step=1h`, {cache: 'no-store'})).json();
        const sum = (k) => day.slots.reduce((a, s) => a + s[k], 0) / 1e6;
        const want = 'Nel giorno: condivisa ' + S.kwh(sum('shared_mwh')) + ', immessa ' + S.kwh(sum('injection_mwh'))
          + ', prelevata ' + S.kwh(sum('withdrawal_mwh')) + '.';
        const [y, mo] = m.split('-').map(Number);
        const nm = mo === 12 ? `${y + 1}-01` : `${y}-${String(mo + 1).padStart(2, '0')}`;
        const month = await (await fetch(`/api/v1/energy?from=${m}-01&to=${nm}-01&step=1d`, {cache: 'no-store'})).json();
        const days = month.slots.filter((s) => S.romeDate(Date.parse(s.start)).slice(0, 7) === m && s.periods > 0).length;
        window.__socerDay = [document.getElementById('day-sum').textContent, want];
        window.__socerDays = days;
        return document.getElementById('day-sum').textContent.startsWith(want)
          && Number(document.getElementById('month-sum').dataset.days) === days; })()";
    assert!(
        b.wait_for(same, Duration::from_secs(45)),
        "the day's figures are not the hub's: {}",
        b.eval("window.__socerDay")
    );
    let days = b.eval("window.__socerDays").as_u64().unwrap_or(0);
    let month_sum = text(b, "#month-sum");
    let words = if days == 1 {
        "in 1 giorno con dati".to_string()
    } else {
        format!("in {days} giorni con dati")
    };
    assert!(month_sum.contains(&words), "{month_sum} (days {days})");
    eprintln!("dashboard day: {first_day} → {}", text(b, "#day-sum"));
    // Plurals: "1 ora stimata", never "1 ore stimate".
    assert_eq!(b.eval("S.count('est', 1)"), "1 ora stimata o incompleta");
    assert_eq!(b.eval("S.count('est', 3)"), "3 ore stimate o incomplete");
    assert_eq!(b.eval("S.count('hours', 1)"), "1 ora");
    assert_eq!(b.eval("S.monthName('2026-11')"), "novembre 2026");
    let inc = b.eval(
        "(async () => { const m = document.getElementById('month').value;
           const r = await fetch('/api/v1/incentive?month=' + m, {cache: 'no-store'});
           if (!r.ok) return null;
           const c = (await r.json()).community;
           return [c.periods, c.estimated_periods + c.incomplete_periods, document.getElementById('inc-note').textContent]; })()",
    );
    if let Some(a) = inc.as_array() {
        let (n, e) = (a[0].as_u64().unwrap_or(0), a[1].as_u64().unwrap_or(0));
        let note = a[2].as_str().unwrap_or("");
        let hours = if n == 1 {
            "1 ora".into()
        } else {
            format!("{} ore", group_it(&n.to_string()))
        };
        let est = match e {
            0 => "nessuna ora stimata".to_string(),
            1 => "1 ora stimata o incompleta".to_string(),
            e => format!("{} ore stimate o incomplete", group_it(&e.to_string())),
        };
        // The note may be one refresh behind the API: compare when they agree on the hours.
        if note.contains(&hours) {
            assert_eq!(note, format!("Stima su {hours}; {est}."));
        }
    }
    switch_lang(b, "en");
    let label = text(b, "#surplus-label");
    assert!(label == "Deficit" || label == "Surplus", "{label}");
    click(b, ".lang button[data-lang='it']");
}

#[test]
fn resident_page_and_dashboard_match_the_api_update_live_and_switch_language_in_chromium() {
    pages_support::require_chromium();
    // domus-3's PV meter (on the RS-485 line) stops answering once the pages are up.
    let demo = Demo::start_with("2d", &["--silence", "domus-3/pv", "--silence-after", "20s"]);
    let token = demo.report_token();
    let mut b = Browser::launch();
    b.set_language("it-IT,it;q=0.9");
    // The dashboard first: by then the sites have had time to receive the community's signal.
    share_total_follows_the_hub(demo.site_port(), demo.dashboard_port());
    let mut expected = dashboard(&mut b, demo.dashboard_port(), &token);
    assert_tap_targets(&mut b, "dashboard");
    expected.extend(resident(&mut b, demo.site_port()));
    assert_tap_targets(&mut b, "resident page");
    click(&mut b, "#tab-tech");
    assert_tap_targets(&mut b, "technician tab");
    click(&mut b, "#tab-home");
    dead_meter(&mut b, demo.site_port_of("domus-3"), demo.dashboard_port());
    no_panels(&mut b, demo.site_port_of("bps"));
    dashboard_follows_the_hub(&mut b, demo.dashboard_port());
    b.pump(Duration::from_millis(300));
    let errors: Vec<String> = b
        .console_errors()
        .into_iter()
        .filter(|e| {
            let known = expected.iter().any(|p| e.contains(p.as_str()));
            if known {
                eprintln!("expected: {e}");
            }
            !known
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
