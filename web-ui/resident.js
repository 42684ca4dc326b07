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
      shareMonth: "Mese {month}, aggiornato alle {time}.",
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
      todaySum: "Oggi finora: prodotta circa {p}, usata circa {u}.", histSum: "In {n} giorni: prodotta {p}, usata {u}.",
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
    },
    en: {
      title: "socer · your energy", skip: "Skip to content", subtitle: "Renewable energy community",
      language: "Language", views: "Views", tabHome: "Home", tabTech: "Technician",
      hLevel: "The community now", hNow: "Your building now", producing: "Producing", using: "Using",
      gridIdle: "Grid exchange", gridIn: "Drawing from the grid", gridOut: "Feeding into the grid",
      updated: "Updated at", liveUpdates: "live updates", hToday: "Today", produced: "Produced", used: "Used",
      hHistory: "Recent days", period: "Period", days7: "7 days", days30: "30 days",
      hShare: "Your share of the shared energy this month",
      shareNone: "Not available yet: this building has not yet received the month's split from the community.",
      share: "{pct} of the community's shared energy ({kwh} of {total}), as a consumer.",
      shareProd: "{pct} of the community's shared energy ({kwh} of {total}), as a producer.", shareEur: "Estimated incentive so far: {eur}.",
      shareMonth: "Month {month}, updated at {time}.",
      lv_green: "Green: plenty of energy",
      adv_green: "Shared energy is available now: a good time to run the washing machine and the dishwasher.",
      lv_yellow: "Yellow: balanced",
      adv_yellow: "The community produces about what it uses: if you can, wait for the next green window.",
      lv_red: "Red: better wait",
      adv_red: "The community is using more than it produces: postpone appliances that can wait.",
      lv_none: "Signal not available",
      adv_none: "The community's signal has not reached this building yet.",
      window: "Next green window: {day}, {start} – {end}.", windowNow: "Green window until {end}.",
      noWindow: "No green window forecast in the coming hours.", today: "today", tomorrow: "tomorrow",
      todaySum: "Today so far: about {p} produced, {u} used.", histSum: "Over {n} days: produced {p}, used {u}.",
      noData: "No data yet.",
      hMeters: "Meters", meter: "Meter", state: "State", bus: "Bus", power: "Power",
      lastReading: "Last reading", reads: "Reads ok / partial / failed", latency: "Latency", lastError: "Last error",
      hLink: "Uplink and clock", healthAt: "Health read at",
      st_ok: "ok", st_degraded: "partial", st_failed: "failed", st_unknown: "unknown",
      uplink: "Link to the community", connected: "connected", disconnected: "not connected",
      backlog: "Readings to send", lastAck: "Last ack (seq)", lastSeq: "Last stored reading (seq)",
      reconnects: "Reconnections", clock: "Clock", synced: "synchronised", unsynced: "not synchronised",
      disk: "Disk used", uptime: "Up for", linkError: "Uplink error",
      role_grid: "grid", role_production: "production", role_consumption: "consumption", role_storage: "storage",
    },
  };
  const $ = (id) => document.getElementById(id);
  const st = { now: null, latest: {}, signal: null, share: null, alerts: [], today: null, days: null, span: 7, health: null, live: 0 };

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

  function setW(id, w) {
    const e = $(id);
    e.dataset.w = String(w);
    e.textContent = S.power(w);
  }
  function renderNow() {
    if (!st.now) return;
    const t = totals();
    setW("v-prod", t.production_w);
    setW("v-use", hasGrid() ? t.building_load_w : t.consumption_w);
    setW("v-grid", Math.abs(t.grid_w));
    $("v-grid").dataset.w = String(t.grid_w);
    const gl = $("grid-label");
    gl.dataset.i18n = t.grid_w > 0 ? "gridIn" : t.grid_w < 0 ? "gridOut" : "gridIdle";
    gl.textContent = S.t(gl.dataset.i18n);
    const stamps = Object.values(st.latest).map((r) => Date.parse(r.ts)).filter(isFinite);
    $("updated").textContent = stamps.length ? S.timeS(Math.max(...stamps)) : "–";
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
    parts.push(S.tf("shareMonth", { month: sh.month, time: S.time(Date.parse(sh.updated)) }));
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
    S.lines($("chart-today"), [
      { cls: "l-prod", pts: steps.map(([k, e]) => [k, e.pw / 1000]) },
      { cls: "l-use", pts: steps.map(([k, e]) => [k, e.uw / 1000]) },
    ], from, to, (v) => S.num(v, v < 10 ? 1 : 0) + " kW", 6);
    // Average power × step: counter increases inside short steps miss the gaps between them.
    const h = (k, e) => Math.max(0, Math.min(e.s, (Date.now() - k) / 1000)) / 3600; // the current step is partial
    const p = steps.reduce((a, [k, e]) => a + e.pw * h(k, e), 0) / 1000;
    const u = steps.reduce((a, [k, e]) => a + e.uw * h(k, e), 0) / 1000;
    $("today-sum").textContent = steps.length ? S.tf("todaySum", { p: S.kwh(p), u: S.kwh(u) }) : S.t("noData");
  }

  function renderDays() {
    if (!st.days || !st.now) return;
    const steps = energyByStep(st.days.rows).slice(-st.span);
    const labels = steps.map(([k]) => S.day(k));
    S.bars($("chart-hist"), labels, [
      { cls: "b-prod", values: steps.map(([, e]) => e.p / 1000) },
      { cls: "b-use", values: steps.map(([, e]) => e.u / 1000) },
    ], (v) => S.num(v, 0) + " kWh", st.span > 7 ? 5 : 1);
    const p = steps.reduce((a, [, e]) => a + e.p, 0) / 1000, u = steps.reduce((a, [, e]) => a + e.u, 0) / 1000;
    $("hist-sum").textContent = steps.length ? S.tf("histSum", { n: steps.length, p: S.kwh(p), u: S.kwh(u) }) : S.t("noData");
  }

  // A cell labelled by its column's header (shown on narrow screens, where rows become cards).
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    td.dataset.label = document.querySelectorAll("#tech thead th")[tr.children.length].textContent;
    if (cls) td.className = cls;
    tr.append(td);
  }
  function renderTech() {
    if (!st.now) return;
    const h = st.health, body = $("meters");
    body.replaceChildren();
    for (const m of st.now.meters) {
      const mh = h && h.meters[m.name];
      const r = st.latest[m.name];
      const state = mh ? mh.state : m.health || "unknown";
      const tr = document.createElement("tr");
      tr.dataset.meter = m.name;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = `${m.name} (${S.t("role_" + m.role)}, ${m.model})`;
      tr.append(th);
      cell(tr, S.t("st_" + state), "st st-" + state);
      cell(tr, m.bus != null ? `${m.bus} · ${m.unit}` : "–");
      cell(tr, r && r.p_w != null ? S.power(r.p_w) : "–", "n");
      tr.lastChild.dataset.w = r && r.p_w != null ? String(r.p_w) : "";
      cell(tr, r ? S.timeS(r.ts) : "–");
      tr.lastChild.dataset.ts = r ? r.ts : "";
      cell(tr, mh ? `${mh.reads_ok} / ${mh.reads_partial} / ${mh.reads_failed}` : "–", "n");
      const n = mh ? mh.reads_ok + mh.reads_partial : 0;
      cell(tr, mh ? `${S.num(mh.latency_ms_last, 0)} ms (⌀ ${S.num(n ? mh.latency_ms_sum / n : 0, 0)})` : "–", "n");
      cell(tr, mh && mh.last_error ? mh.last_error : "–", mh && mh.last_error ? "err" : "");
      body.append(tr);
    }
    const link = $("link");
    link.replaceChildren();
    if (!h) return;
    const tile = (k, v, small) => {
      const d = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = S.t(k);
      dd.textContent = v;
      if (small) { const s = document.createElement("small"); s.textContent = small; dd.append(s); }
      d.append(dt, dd);
      link.append(d);
    };
    tile("uplink", S.t(h.uplink.connected ? "connected" : "disconnected"), h.uplink.last_error || "");
    tile("backlog", S.num(h.outbox.backlog, 0));
    tile("lastAck", String(h.uplink.last_ack_seq), `${S.t("lastSeq")}: ${h.outbox.last_seq}`);
    tile("reconnects", S.num(h.uplink.reconnects, 0));
    tile("clock", S.t(h.clock_synced ? "synced" : "unsynced"), st.now.ts ? S.dateTime(st.now.ts) : "");
    tile("disk", S.num(h.outbox.disk_bytes / 1048576, 1) + " MiB", `/ ${S.num(h.outbox.budget_bytes / 1048576, 0)} MiB`);
    tile("uptime", h.uptime_s < 3600 ? S.num(Math.floor(h.uptime_s / 60), 0) + " min" : S.num(h.uptime_s / 3600, 1) + " h");
    $("health-at").textContent = S.timeS(Date.now());
  }

  function renderAll() {
    renderNow(); renderSignal(); renderShare(); renderToday(); renderDays(); renderTech();
  }

  async function loadNow() {
    st.now = await S.get("/api/v1/now");
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
      if (r.quality === "failed") return; // the server keeps the last good reading too
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
    S.init(I18N, renderAll);
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
      document.body.dataset.ready = "1";
    } catch (e) {
      $("updated").textContent = String(e.message || e);
    }
    // History and health refresh quietly; the building's values are live.
    setInterval(() => { loadHistory().then(() => { renderToday(); renderDays(); }).catch(() => {}); }, 300e3);
    setInterval(() => { loadSignal().then(() => { renderSignal(); renderShare(); }).catch(() => {}); }, 30e3);
    setInterval(() => { if (!$("tech").hidden) loadHealth().then(renderTech).catch(() => {}); }, 5e3);
  });
})();
