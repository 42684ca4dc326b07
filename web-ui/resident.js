// The resident page: the community's level, the building now (live by server-sent events), today,
// the last 7/30 days, and a technician tab. It only reads this site's own API.
"use strict";
(() => {
  const I18N = {
    it: {
      title: "socer · la tua energia", skip: "Vai al contenuto", subtitle: "Comunità energetica rinnovabile",
      language: "Lingua", views: "Viste", tabHome: "Casa", tabTech: "Tecnico",
      hLevel: "La comunità adesso", hNow: "Il tuo edificio adesso", producing: "Produce", using: "Usa",
      gridIdle: "Scambio con la rete", gridIn: "Preleva dalla rete", gridOut: "Immette in rete",
      updated: "Aggiornato alle", liveUpdates: "aggiornamenti ricevuti", hToday: "Oggi", produced: "Prodotta", used: "Usata",
      hHistory: "Ultimi giorni", period: "Periodo", days7: "7 giorni", days30: "30 giorni",
      hShare: "La tua parte di energia condivisa questo mese",
      shareNone: "Non ancora disponibile: questo edificio non ha ancora ricevuto dalla comunità la ripartizione del mese.",
      share: "{pct} dell'energia condivisa della comunità ({kwh} su {total}), come consumo.",
      shareProd: "{pct} dell'energia condivisa della comunità ({kwh} su {total}), come produzione.", shareEur: "Incentivo stimato finora: {eur}.",
      shareMonth: "{month}: dati della comunità alle {time}.",
      usingGrid: "Usa (tutto dalla rete)", staleNote: "{meters}: {since}. I valori in grigio sono gli ultimi letti, non quelli di adesso.",
      lastRead: "ultimo valore {t}", elec: "V / I / PF / Hz", fails: "Errori di fila", st_silent: "non risponde",
      days_one: "{n} giorno", days_other: "{n} giorni",
      lv_green: "Verde: energia in abbondanza",
      adv_green: "Adesso c'è energia condivisa: è il momento di usare lavatrice e lavastoviglie.",
      lv_yellow: "Giallo: in equilibrio",
      adv_yellow: "Produzione e consumi della comunità si equivalgono: se puoi, aspetta la prossima finestra verde.",
      lv_red: "Rosso: meglio aspettare",
      adv_red: "Ora la comunità consuma più di quanto produce: rimanda gli elettrodomestici che possono aspettare.",
      lv_none: "Segnale non disponibile",
      adv_none: "Il segnale della comunità non è ancora arrivato a questo edificio.",
      window: "Prossima finestra verde: {day}, {start} – {end}.", windowNow: "Finestra verde in corso fino alle {end}.",
      noWindow: "Nessuna finestra verde prevista nelle prossime ore.", today: "oggi", tomorrow: "domani",
      todaySum: "Oggi finora: prodotta circa {p}, usata circa {u}.", histSum: "In {n}: prodotta {p}, usata {u}.",
      todaySumUse: "Oggi finora: usata circa {u}.", histSumUse: "In {n}: usata {u}.",
      noData: "Nessun dato ancora.",
      hMeters: "Contatori", meter: "Contatore", state: "Stato", bus: "Bus", power: "Potenza",
      lastReading: "Ultima lettura", reads: "Letture ok / parziali / fallite", latency: "Latenza", lastError: "Ultimo errore",
      hLink: "Collegamento e orologio", healthAt: "Stato letto alle",
      st_ok: "ok", st_degraded: "parziale", st_failed: "guasto", st_unknown: "sconosciuto",
      uplink: "Collegamento alla comunità", connected: "connesso", disconnected: "non connesso",
      backlog: "Letture da inviare", lastAck: "Ultima conferma (seq)", lastSeq: "Ultima lettura salvata (seq)",
      reconnects: "Riconnessioni", clock: "Orologio", synced: "sincronizzato", unsynced: "non sincronizzato",
      disk: "Disco usato", uptime: "In funzione da", linkError: "Errore del collegamento",
      role_grid: "scambio", role_production: "produzione", role_consumption: "consumo", role_storage: "accumulo",
      battery: "Batteria", batCharging: "in carica, {p}", batDischarging: "in scarica, {p}", batIdle: "ferma",
    },
  };
  const $ = (id) => document.getElementById(id);
  const st = { now: null, latest: {}, signal: null, share: null, alerts: [], today: null, days: null, span: 7, health: null, live: 0,
    skew: 0, fail: {}, loaded: Date.now() };
  // The server's clock now (readings are stamped with it).
  const serverNow = () => Date.now() + st.skew;
  const hasRole = (role) => st.now.meters.some((m) => m.role === role);
  const hasProduction = () => hasRole("production") || hasRole("storage");
  // Since when a meter has not answered (ms), or null while its last reading is current: older
  // than three poll intervals is not current.
  function silentSince(m) {
    const r = st.latest[m.name], now = serverNow();
    const limit = 1000 * (m.stale_after_s || 3 * (m.interval_s || 5));
    const last = r ? Date.parse(r.ts) : null;
    if (last != null && now - last <= limit) return null;
    const f = st.fail[m.name];
    const failing = f ? f.since : (m.silent_since ? Date.parse(m.silent_since) : null);
    if (last == null) return failing != null ? failing : (now - st.loaded > limit ? st.loaded : null);
    return failing != null && failing >= last ? failing : last;
  }
  // The meters a tile's figure is made of.
  function inputs(tile) {
    const ms = st.now.meters, grid = hasRole("grid");
    if (tile === "prod") return ms.filter((m) => m.role === "production");
    if (tile === "grid") return ms.filter((m) => m.role === "grid");
    if (tile === "bat") return ms.filter((m) => m.role === "storage");
    return ms.filter((m) => (grid ? m.role !== "consumption" : m.role === "consumption"));
  }

  // Building totals from the latest readings, with the same sign rules as the server (site/web.rs).
  function totals() {
    const t = { production_w: 0, consumption_w: 0, grid_w: 0, storage_w: 0 };
    for (const m of st.now.meters) {
      const r = st.latest[m.name];
      const p = r && r.p_w;
      if (p == null) continue;
      if (m.role === "production") t.production_w += -p;
      else if (m.role === "consumption") t.consumption_w += p;
      else if (m.role === "grid") t.grid_w += p;
      else if (m.role === "storage") t.storage_w += -p;
    }
    t.building_load_w = t.grid_w + t.production_w + t.storage_w;
    return t;
  }
  const hasGrid = () => st.now.meters.some((m) => m.role === "grid");

  // The battery from its storage meters' latest readings (site/web.rs `battery`): the mean state
  // of charge of those reporting one, the power summed, positive charging.
  function battery() {
    let soc = [], w = null;
    for (const m of inputs("bat")) {
      const r = st.latest[m.name];
      if (!r) continue;
      if (r.soc_pct != null) soc.push(r.soc_pct);
      const p = r.p_w != null ? r.p_w : r.bat_p_w;
      if (p != null) w = (w || 0) + p;
    }
    return { soc: soc.length ? soc.reduce((a, b) => a + b, 0) / soc.length : null, w };
  }
  function renderBattery() {
    const box = $("t-bat");
    box.hidden = !hasRole("storage");
    if (box.hidden) return;
    const b = battery(), v = $("v-bat"), s = $("bat-state");
    v.dataset.soc = b.soc != null ? String(b.soc) : "";
    v.dataset.w = b.w != null ? String(b.w) : "";
    v.textContent = b.soc != null ? S.num(b.soc, 0) + " %" : "–";
    s.dataset.i18n = b.w == null ? "" : b.w > 1 ? "batCharging" : b.w < -1 ? "batDischarging" : "batIdle";
    s.textContent = s.dataset.i18n ? S.tf(s.dataset.i18n, { p: S.power(Math.abs(b.w)) }) : "";
  }

  function setW(id, w) {
    const e = $(id);
    e.dataset.w = String(w);
    e.textContent = S.power(w);
  }
  function renderNow() {
    if (!st.now) return;
    const t = totals();
    const prod = hasProduction();
    // No panels nor battery: no production tile. All of what the building uses comes from the
    // grid (no panels, or none producing now): the grid tile would only repeat "Usa".
    for (const e of document.querySelectorAll(".prod")) e.hidden = !prod;
    const allFromGrid = hasGrid() && t.grid_w > 0 && Math.abs(t.building_load_w - t.grid_w) < 1
      && inputs("use").every((m) => m.role === "grid" || silentSince(m) == null); // a silent PV meter's 0 W proves nothing
    $("t-grid").hidden = !prod || allFromGrid;
    const ul = $("use-label");
    ul.dataset.i18n = hasGrid() && (!prod || allFromGrid) ? "usingGrid" : "using";
    ul.textContent = S.t(ul.dataset.i18n);
    setW("v-prod", t.production_w);
    setW("v-use", hasGrid() ? t.building_load_w : t.consumption_w);
    setW("v-grid", Math.abs(t.grid_w));
    $("v-grid").dataset.w = String(t.grid_w);
    const gl = $("grid-label");
    gl.dataset.i18n = t.grid_w > 0 ? "gridIn" : t.grid_w < 0 ? "gridOut" : "gridIdle";
    gl.textContent = S.t(gl.dataset.i18n);
    renderBattery();
    // Each figure is as old as its oldest input; a silent input greys it and says since when.
    const now = serverNow(), silent = new Map();
    let oldest = null;
    for (const tile of ["prod", "use", "grid", "bat"]) {
      const box = $("t-" + tile);
      let tileOld = null, tileSilent = null;
      for (const m of inputs(tile)) {
        const r = st.latest[m.name], ss = silentSince(m);
        if (r) tileOld = tileOld == null ? Date.parse(r.ts) : Math.min(tileOld, Date.parse(r.ts));
        if (ss != null) { silent.set(m.name, ss); tileSilent = tileSilent == null ? ss : Math.min(tileSilent, ss); }
      }
      box.classList.toggle("stale", tileSilent != null);
      box.dataset.stale = tileSilent != null ? "1" : "";
      box.querySelector(".since").textContent = tileSilent != null
        ? S.tf("notAnswering", { since: S.since(tileSilent, now) }) : "";
      if (!box.hidden && tileOld != null) oldest = oldest == null ? tileOld : Math.min(oldest, tileOld);
    }
    const u = $("updated");
    u.textContent = oldest != null ? S.timeS(oldest) : "–";
    u.dataset.ts = oldest != null ? new Date(oldest).toISOString() : "";
    const note = $("stale-note");
    note.hidden = silent.size === 0;
    note.textContent = silent.size === 0 ? "" : S.tf("staleNote", {
      meters: [...silent.keys()].map((n) => `«${n}»`).join(", "),
      since: S.tf("notAnswering", { since: S.since(Math.min(...silent.values()), now) }),
    });
  }

  function renderSignal() {
    const sig = st.signal;
    S.level($("level"), sig && sig.community ? sig.community.level : null);
    $("window").textContent = sig ? S.windowText(S.nextGreen(sig.forecast, Date.now()), Date.now()) : "";
    // The newest alert whose window has not ended, in the page's language.
    const now = Date.now();
    const a = st.alerts.filter((x) => Date.parse(x.window_end) > now && x.kind !== "close").pop();
    $("alert").hidden = !a;
    $("alert").textContent = a ? (S.lang() === "it" ? a.text_it : a.text_en) : "";
  }

  // The month's share as the community hub sealed it for this building (GET /api/v1/now,
  // community_share: the wire's SiteSummary): as a consumer and as a producer.
  const cap = (x) => x.charAt(0).toUpperCase() + x.slice(1);
  function renderShare() {
    const sh = st.share || (st.now && st.now.community_share);
    if (!sh || !(sh.community_shared_kwh > 0)) { $("share").textContent = S.t("shareNone"); return; }
    const pct = (v) => S.num(100 * v / sh.community_shared_kwh, 1) + " %";
    const line = (key, v) => S.tf(key, { pct: pct(v), kwh: S.kwh(v), total: S.kwh(sh.community_shared_kwh) });
    // The larger role first; the other only when it shows as at least 0.1 %.
    const roles = [["share", sh.shared_as_consumer_kwh || 0], ["shareProd", sh.shared_as_producer_kwh || 0]]
      .sort((a, b) => b[1] - a[1]);
    const shown = roles.filter(([, v], i) => i === 0 || 100 * v / sh.community_shared_kwh >= 0.05);
    const parts = shown.map(([key, v]) => line(key, v));
    // The hub apportions the incentive twice (pro rata as consumers, pro rata as producers):
    // show the apportionment of the building's larger role, never their sum.
    const eur = roles[0][0] === "share" ? sh.incentive_as_consumer_eur : sh.incentive_as_producer_eur;
    if (eur != null && eur > 0) parts.push(S.tf("shareEur", { eur: S.eur(eur) }));
    parts.push(S.tf("shareMonth", { month: cap(S.monthName(sh.month)), time: S.time(Date.parse(sh.updated)) }));
    $("share").textContent = parts.join(" ");
  }

  // Per step: energy produced and used by the building, from the meters' counter increases.
  function energyByStep(rows) {
    const roles = Object.fromEntries(st.now.meters.map((m) => [m.name, m.role]));
    const grid = hasGrid();
    const by = new Map();
    for (const r of rows) {
      const k = Date.parse(r.start);
      const e = by.get(k) || { p: 0, u: 0, pw: 0, uw: 0, s: r.step_s };
      const imp = r.e_imp_wh || 0, exp = r.e_exp_wh || 0, pavg = r.p_avg_w || 0;
      switch (roles[r.meter]) {
        case "production": e.p += exp; e.u += grid ? exp : 0; e.pw += -pavg; e.uw += grid ? -pavg : 0; break;
        case "grid": e.u += imp - exp; e.uw += pavg; break;
        case "storage": e.u += exp - imp; e.uw += -pavg; break;
        case "consumption": if (!grid) { e.u += imp; e.uw += pavg; } break;
      }
      by.set(k, e);
    }
    return [...by.entries()].sort((a, b) => a[0] - b[0]);
  }

  function renderToday() {
    if (!st.today || !st.now) return;
    const steps = energyByStep(st.today.rows);
    const from = Date.parse(st.today.from), to = from + 24 * 3600e3;
    const prod = hasProduction();
    S.lines($("chart-today"), [
      ...(prod ? [{ cls: "l-prod", pts: steps.map(([k, e]) => [k, e.pw / 1000]) }] : []),
      { cls: "l-use", pts: steps.map(([k, e]) => [k, e.uw / 1000]) },
    ], from, to, (v) => S.num(v, v < 10 ? 1 : 0) + " kW", 6);
    // Average power × step: counter increases inside short steps miss the gaps between them.
    const h = (k, e) => Math.max(0, Math.min(e.s, (Date.now() - k) / 1000)) / 3600; // the current step is partial
    const p = steps.reduce((a, [k, e]) => a + e.pw * h(k, e), 0) / 1000;
    const u = steps.reduce((a, [k, e]) => a + e.uw * h(k, e), 0) / 1000;
    $("today-sum").textContent = steps.length ? S.tf(prod ? "todaySum" : "todaySumUse", { p: S.kwh(p), u: S.kwh(u) }) : S.t("noData");
  }

  function renderDays() {
    if (!st.days || !st.now) return;
    // The last N local days; only days that hold data are drawn and counted.
    const first = Date.parse(st.days.to || new Date().toISOString()) - st.span * 86400e3;
    const steps = energyByStep(st.days.rows).filter(([k]) => k >= first - 3600e3).slice(-st.span);
    const labels = steps.map(([k]) => S.day(k));
    const prod = hasProduction();
    S.bars($("chart-hist"), labels, [
      ...(prod ? [{ cls: "b-prod", values: steps.map(([, e]) => e.p / 1000) }] : []),
      { cls: "b-use", values: steps.map(([, e]) => e.u / 1000) },
    ], (v) => S.num(v, 0) + " kWh", st.span > 7 ? 5 : 1);
    const p = steps.reduce((a, [, e]) => a + e.p, 0) / 1000, u = steps.reduce((a, [, e]) => a + e.u, 0) / 1000;
    $("hist-sum").dataset.days = String(steps.length);
    $("hist-sum").textContent = steps.length
      ? S.tf(prod ? "histSum" : "histSumUse", { n: S.count("days", steps.length), p: S.kwh(p), u: S.kwh(u) }) : S.t("noData");
  }

  // The technician tab's table is drawn by resident-tech.js, fetched when the tab first opens.
  let techLoading = null;
  function renderTech() {
    if (window.socerTech) { window.socerTech(R); return; }
    techLoading = techLoading || S.need("resident-tech").catch(() => { techLoading = null; });
    techLoading.then(() => { if (window.socerTech && st.now) window.socerTech(R); });
  }
  // What resident-tech.js reads of this page.
  const R = { $, st, serverNow, silentSince };

  function renderAll() {
    renderNow(); renderSignal(); renderShare(); renderToday(); renderDays();
    if (!$("tech").hidden) renderTech();
  }

  async function loadNow() {
    st.now = await S.get("/api/v1/now");
    if (st.now.ts) st.skew = Date.parse(st.now.ts) - Date.now();
    document.getElementById("site-name").textContent = st.now.name || st.now.site;
    for (const m of st.now.meters) if (m.reading) st.latest[m.name] = m.reading;
  }
  // The community's signal as this building received it: {signal: null | Signal, alerts: [...]}.
  async function loadSignal() {
    const r = await S.get("/api/v1/signal");
    st.signal = r.signal || null;
    if (r.summary) st.share = r.summary; // the month's share comes with the signal poll too
    st.alerts = r.alerts || [];
  }
  async function loadHistory() {
    const now = Date.now();
    const midnight = S.romeMidnight(S.romeDate(now));
    const q = (from, step) => `/api/v1/history?from=${from.toISOString()}&to=${new Date(now + 60e3).toISOString()}&step=${step}`;
    const [today, days] = await Promise.all([
      S.get(q(midnight, "30m")), // 30-minute points keep a whole day under ~20 KB per meter
      S.get(q(new Date(midnight.getTime() - 30 * 86400e3), "1d")), // local days: 23 or 25 h at DST changes
    ]);
    today.from = midnight.toISOString();
    st.today = today;
    st.days = days;
  }
  async function loadHealth() {
    st.health = await S.get("/api/v1/health");
  }

  function live() {
    const es = new EventSource("/api/v1/events");
    es.addEventListener("reading", (ev) => {
      const r = JSON.parse(ev.data);
      if (r.quality === "failed") {
        // Kept apart: the last good reading stays, and the page learns since when it fails.
        const f = st.fail[r.meter] || { since: Date.parse(r.ts), n: 0 };
        f.n += 1;
        st.fail[r.meter] = f;
        renderNow();
        return;
      }
      delete st.fail[r.meter];
      st.latest[r.meter] = r;
      st.live += 1;
      const c = $("live-count");
      c.dataset.n = String(st.live);
      c.textContent = S.num(st.live, 0);
      renderNow();
      if (!$("tech").hidden) renderTech();
    });
  }

  function tabs() {
    const home = $("tab-home"), tech = $("tab-tech");
    const show = (techOn) => {
      home.setAttribute("aria-selected", String(!techOn));
      tech.setAttribute("aria-selected", String(techOn));
      home.tabIndex = techOn ? -1 : 0;
      tech.tabIndex = techOn ? 0 : -1;
      $("main").hidden = techOn;
      $("tech").hidden = !techOn;
      if (techOn) loadHealth().then(renderTech).catch(() => {});
    };
    home.addEventListener("click", () => show(false));
    tech.addEventListener("click", () => show(true));
    for (const b of [home, tech]) {
      b.addEventListener("keydown", (e) => {
        if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
          const other = b === home ? tech : home;
          other.focus();
          other.click();
        }
      });
    }
    show(location.hash === "#tech");
  }

  function span(n) {
    st.span = n;
    $("d7").setAttribute("aria-pressed", String(n === 7));
    $("d30").setAttribute("aria-pressed", String(n === 30));
    renderDays();
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const langReady = S.init(I18N, renderAll, "resident");
    tabs();
    $("d7").addEventListener("click", () => span(7));
    $("d30").addEventListener("click", () => span(30));
    try {
      await Promise.all([loadNow(), loadSignal().catch(() => {})]);
      renderAll();
      live();
      await Promise.all([
        loadHistory().catch((e) => { $("today-sum").textContent = String(e.message || e); }),
        loadHealth().catch(() => {}),
      ]);
      renderAll();
      await langReady;
      document.body.dataset.ready = "1";
    } catch (e) {
      $("updated").textContent = String(e.message || e);
    }
    // History and health refresh quietly; the building's values are live.
    setInterval(() => { loadHistory().then(() => { renderToday(); renderDays(); }).catch(() => {}); }, 300e3);
    setInterval(() => { loadSignal().then(() => { renderSignal(); renderShare(); }).catch(() => {}); }, 30e3);
    setInterval(() => { if (!$("tech").hidden) loadHealth().then(renderTech).catch(() => {}); }, 5e3);
    // A meter that falls silent sends nothing: its figures turn grey as they age.
    setInterval(() => { renderNow(); if (!$("tech").hidden) renderTech(); }, 2e3);
  });
})();
