// The community dashboard: signal and forecast, the community now, sites, shared energy per hour
// and per day, the month's incentive and the token-protected report download. Reads only the hub.
"use strict";
(() => {
  const I18N = {
    it: {
      title: "socer · cruscotto della comunità", skip: "Vai al contenuto", subtitle: "Cruscotto della comunità",
      language: "Lingua", hSignal: "Segnale adesso", hNow: "La comunità adesso",
      production: "Produzione", consumption: "Consumo", injection: "Immissione", withdrawal: "Prelievo",
      surplus: "Surplus", deficit: "Deficit", sharedNow: "Condivisa", shared: "Condivisa",
      updated: "Aggiornato alle", fresh: "{n} contatori su {m} aggiornati · {s} edifici su {t} in linea",
      hSites: "Edifici", site: "Edificio", state: "Stato", lastSeen: "Ultimo contatto", backlog: "Letture in coda",
      meters: "Contatori ok", failing: "Contatori con problemi", noFailing: "nessuno", batterySoc: "batteria {pct}", st_online: "in linea", st_offline: "non in linea", st_unknown: "mai visto",
      hDay: "Energia condivisa per ora", day: "Giorno", hMonth: "Energia condivisa per giorno", month: "Mese",
      daySum: "Nel giorno: condivisa {s}, immessa {i}, prelevata {w}.", monthSum: "Nel mese: condivisa {s} in {n} con dati.",
      estimated: "alcune ore sono stimate o incomplete",
      hIncentive: "Incentivo stimato del mese", incentive: "Incentivo (TIP)", valorisation: "Valorizzazione ARERA",
      social: "Parte destinata a fini sociali", sharedMonth: "Energia condivisa",
      incNone: "Stima non disponibile ({why}).", incNote: "Stima su {n}; {e}.",
      hours_one: "{n} ora", hours_other: "{n} ore", est_one: "{n} ora stimata o incompleta", est_other: "{n} ore stimate o incomplete",
      est_zero: "nessuna ora stimata", days_one: "{n} giorno", days_other: "{n} giorni",
      hReports: "Rendiconti mensili", token: "Chiave di accesso", download: "Scarica CSV",
      repOk: "Rendiconto {f} scaricato.", repAuth: "Chiave non valida: il rendiconto contiene dati dei singoli soci.",
      repErr: "Rendiconto non disponibile ({why}).", repBusy: "Scaricamento…",
      lv_green: "Verde: energia condivisa disponibile",
      adv_green: "La comunità produce più di quanto consuma: è il momento dei carichi flessibili.",
      lv_yellow: "Giallo: in equilibrio", adv_yellow: "Produzione e consumi si equivalgono.",
      lv_red: "Rosso: deficit", adv_red: "La comunità consuma più di quanto produce: rimandare i carichi flessibili.",
      lv_none: "Segnale non disponibile", adv_none: "Il motore del segnale non ha ancora pubblicato un segnale.",
      window: "Prossima finestra verde: {day}, {start} – {end}.", windowNow: "Finestra verde in corso fino alle {end}.",
      noWindow: "Nessuna finestra verde prevista nelle prossime ore.", today: "oggi", tomorrow: "domani",
      forecast: "Previsione oraria: {list}", never: "mai",
      st_meter_failed: "guasto", st_meter_degraded: "letture parziali", st_meter_unknown: "mai letto",
    },
  };
  const $ = (id) => document.getElementById(id);
  const st = { now: null, sites: null, signal: null, day: null, month: null, inc: null, incErr: null };
  const kwhOf = (mwh) => mwh / 1e6;

  function renderNow() {
    const n = st.now;
    if (!n) return;
    $("name").textContent = n.name || n.community;
    const b = n.balance || {};
    for (const k of ["production", "consumption", "injection", "withdrawal", "surplus", "shared"]) {
      const e = $("v-" + k), w = b[k + "_w"];
      e.dataset.w = w == null ? "" : String(w);
      // A negative surplus is a deficit: said in words, shown without the sign.
      e.textContent = S.power(k === "surplus" && w != null ? Math.abs(w) : w);
    }
    const sl = $("surplus-label");
    sl.dataset.i18n = b.surplus_w < 0 ? "deficit" : "surplus";
    sl.textContent = S.t(sl.dataset.i18n);
    $("updated").textContent = b.ts ? S.timeS(b.ts) : "–";
    $("updated").dataset.ts = b.ts || "";
    $("fresh").textContent = S.tf("fresh", { n: b.meters_fresh ?? 0, m: b.meters_total ?? 0, s: n.sites_online, t: n.sites_total });
  }

  function renderSites() {
    const body = $("sites");
    body.replaceChildren();
    for (const s of (st.sites && st.sites.sites) || []) {
      const tr = document.createElement("tr");
      tr.dataset.site = s.id;
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = s.name || s.id;
      tr.append(th);
      const heads = document.querySelectorAll("#h-sites ~ .tbl thead th");
      const td = (text, cls) => {
        const c = document.createElement("td");
        c.textContent = text;
        c.dataset.label = heads[tr.children.length].textContent;
        if (cls) c.className = cls;
        tr.append(c);
      };
      td(S.t("st_" + s.state), "st st-" + s.state);
      const seenToday = s.last_seen && S.romeDate(s.last_seen) === S.romeDate(Date.now());
      td(s.last_seen ? (seenToday ? S.timeS(s.last_seen) : S.dateTime(s.last_seen)) : S.t("never"));
      td(S.num(s.backlog, 0), "n");
      const ms = s.meters || [];
      const bad = ms.filter((m) => m.health !== "ok" || m.silent_since);
      td(`${ms.length - bad.length} / ${ms.length}`, "n");
      // A battery's state of charge, while its meter is current.
      const bat = ms.filter((m) => m.role === "storage" && m.soc_pct != null && !bad.includes(m));
      if (bat.length) {
        const soc = bat.reduce((a, m) => a + m.soc_pct, 0) / bat.length;
        const small = document.createElement("small");
        small.className = "bat";
        small.dataset.soc = String(soc);
        small.textContent = S.tf("batterySoc", { pct: S.num(soc, 0) + " %" });
        tr.lastChild.append(document.createElement("br"), small);
      }
      // Which meters fail, since when, and why, from the site's own status.
      td("");
      const cellBad = tr.lastChild;
      tr.dataset.failing = bad.map((m) => m.name).join(",");
      if (!bad.length) cellBad.textContent = S.t("noFailing");
      else {
        const ul = document.createElement("ul");
        ul.className = "fails";
        for (const m of bad) {
          const li = document.createElement("li"), b = document.createElement("strong");
          li.dataset.meter = m.name;
          b.textContent = m.name;
          const why = m.silent_since ? S.tf("notAnswering", { since: S.since(Date.parse(m.silent_since), Date.now()) })
            : S.t("st_meter_" + m.health);
          const words = S.errorWords(m.error_kind) || m.last_error || "";
          li.append(b, document.createTextNode(`: ${why}${words ? " (" + words + ")" : ""}`));
          if (m.silent_since) li.dataset.since = m.silent_since;
          ul.append(li);
        }
        cellBad.append(ul);
      }
      body.append(tr);
    }
  }

  function renderSignal() {
    const sig = st.signal;
    S.level($("level"), sig && sig.community ? sig.community.level : null);
    $("window").textContent = sig ? S.windowText(S.nextGreen(sig.forecast, Date.now()), Date.now()) : "";
    const fc = $("forecast");
    fc.replaceChildren();
    const slots = ((sig && sig.forecast) || []).slice(0, 24);
    const words = [];
    for (const s of slots) {
      const c = document.createElement("span");
      c.className = { green: "g", yellow: "y", red: "r" }[s.level] || "";
      const h = S.time(s.start);
      // The hour and a symbol: the level is not told by colour alone.
      c.textContent = h.slice(0, 2) + "\n" + ({ green: "✓", yellow: "=", red: "!" }[s.level] || "");
      c.title = `${h} ${S.t("lv_" + s.level)} (${S.kwh(s.surplus_kwh)})`;
      words.push(`${h} ${S.t("lv_" + s.level)}`);
      fc.append(c);
    }
    fc.setAttribute("aria-label", slots.length ? S.tf("forecast", { list: words.join("; ") }) : "");
  }

  // The Rome date of a slot: `step=1d` slots start at local midnight (23 or 25 h long at the DST
  // changes), so the slot's start names its day.
  function slotLabelDate(slot) {
    return S.romeDate(Date.parse(slot.start));
  }
  function renderDay() {
    const d = st.day;
    if (!d) return;
    const slots = d.slots;
    S.bars($("chart-day"), slots.map((s) => S.time(s.start)), [
      { cls: "b-shared", values: slots.map((s) => kwhOf(s.shared_mwh)) },
      { cls: "b-inj", values: slots.map((s) => kwhOf(s.injection_mwh)) },
      { cls: "b-wd", values: slots.map((s) => kwhOf(s.withdrawal_mwh)) },
    ], (v) => S.num(v, 0) + " kWh", 6);
    const sum = (k) => slots.reduce((a, s) => a + s[k], 0);
    const est = slots.some((s) => s.estimated);
    $("day-sum").textContent = S.tf("daySum", { s: S.kwh(kwhOf(sum("shared_mwh"))), i: S.kwh(kwhOf(sum("injection_mwh"))),
      w: S.kwh(kwhOf(sum("withdrawal_mwh"))) }) + (est ? " (" + S.t("estimated") + ")" : "");
  }
  function renderMonth() {
    const m = st.month;
    if (!m) return;
    // Local days of the month (the API's `1d`): keep those whose day falls in the month.
    const slots = m.slots.filter((s) => slotLabelDate(s).slice(0, 7) === m.month);
    S.bars($("chart-month"), slots.map((s) => slotLabelDate(s).slice(8)), [
      { cls: "b-shared", values: slots.map((s) => kwhOf(s.shared_mwh)) },
    ], (v) => S.num(v, 0) + " kWh", 5);
    const total = slots.reduce((a, s) => a + s.shared_mwh, 0);
    // The days the hub has figures for, not the days of the month.
    const covered = slots.filter((s) => s.periods > 0).length;
    $("month-sum").dataset.days = String(covered);
    $("month-sum").textContent = S.tf("monthSum", { s: S.kwh(kwhOf(total)), n: S.count("days", covered) })
      + (slots.some((s) => s.estimated) ? " (" + S.t("estimated") + ")" : "");
  }

  function renderIncentive() {
    const box = $("incentive");
    box.replaceChildren();
    const r = st.inc;
    if (!r || !r.community) {
      $("inc-note").textContent = S.tf("incNone", { why: st.incErr || "…" });
      return;
    }
    const c = r.community;
    const tile = (k, v) => {
      const d = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = S.t(k);
      dd.textContent = v;
      d.append(dt, dd);
      box.append(d);
    };
    tile("incentive", S.eur(c.incentive_ueur / 1e6));
    tile("valorisation", S.eur(c.valorisation_ueur / 1e6));
    tile("social", S.eur(c.social_ueur / 1e6));
    tile("sharedMonth", S.kwh(kwhOf(c.shared_mwh)));
    const e = c.estimated_periods + c.incomplete_periods;
    $("inc-note").textContent = S.tf("incNote", { n: S.count("hours", c.periods), e: e ? S.count("est", e) : S.t("est_zero") });
  }

  function renderAll() {
    renderNow(); renderSites(); renderSignal(); renderDay(); renderMonth(); renderIncentive();
  }

  const nextDay = (ymd) => new Date(Date.parse(ymd + "T12:00:00Z") + 86400e3).toISOString().slice(0, 10);
  function nextMonth(ym) {
    const [y, m] = ym.split("-").map(Number);
    return m === 12 ? `${y + 1}-01` : `${y}-${String(m + 1).padStart(2, "0")}`;
  }

  // Counts the loads of a figure (tests see it refresh without a reload).
  function bump(id) {
    const e = $(id);
    e.dataset.n = String(Number(e.dataset.n || 0) + 1);
  }
  async function loadLive() {
    const [now, sites] = await Promise.all([S.get("/api/v1/community/now"), S.get("/api/v1/sites")]);
    st.now = now;
    st.sites = sites;
    const u = $("updated");
    u.dataset.n = String(Number(u.dataset.n || 0) + 1);
    renderNow();
    renderSites();
  }
  async function loadSignal() {
    try {
      st.signal = await S.get("/api/v1/signal");
    } catch (e) {
      st.signal = null;
    }
    renderSignal();
  }
  async function loadDay() {
    const d = $("day").value;
    st.day = await S.get(`/api/v1/energy?from=${d}&to=${nextDay(d)}&step=1h`);
    bump("day-sum");
    renderDay();
  }
  async function loadMonth() {
    const m = $("month").value;
    const r = await S.get(`/api/v1/energy?from=${m}-01&to=${nextMonth(m)}-01&step=1d`);
    r.month = m;
    st.month = r;
    bump("month-sum");
    renderMonth();
    try {
      st.inc = await S.get(`/api/v1/incentive?month=${m}`);
      st.incErr = null;
    } catch (e) {
      st.inc = null;
      st.incErr = "HTTP " + (e.status || "?");
    }
    bump("inc-note");
    renderIncentive();
  }

  async function download(ev) {
    ev.preventDefault();
    const token = $("token").value.trim();
    sessionStorage.setItem("socer.token", token);
    const file = `${$("rmonth").value}.csv`;
    const msg = $("rep-msg");
    msg.textContent = S.t("repBusy");
    try {
      const r = await fetch(`/api/v1/report/${file}`, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (r.status === 401) { msg.textContent = S.t("repAuth"); return; }
      if (!r.ok) { msg.textContent = S.tf("repErr", { why: "HTTP " + r.status }); return; }
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = `socer-${file}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10e3);
      msg.textContent = S.tf("repOk", { f: a.download });
    } catch (e) {
      msg.textContent = S.tf("repErr", { why: String(e.message || e) });
    }
  }

  // Fetch the live figures now (tests use it to compare the page with the API at one moment).
  window.socerRefresh = () => Promise.all([loadLive(), loadSignal()]);
  // The hub's day, month and incentive figures as they grow; a past day or month only on demand.
  function refreshEnergy() {
    const today = S.romeDate(Date.now());
    if ($("day").value === today) loadDay().catch(() => {});
    if ($("month").value === today.slice(0, 7)) loadMonth().catch(() => {});
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const langReady = S.init(I18N, renderAll, "dashboard");
    const today = S.romeDate(Date.now());
    $("day").value = today;
    $("month").value = today.slice(0, 7);
    $("rmonth").value = today.slice(0, 7);
    $("token").value = sessionStorage.getItem("socer.token") || "";
    $("day").addEventListener("change", () => loadDay().catch(() => {}));
    $("month").addEventListener("change", () => loadMonth().catch(() => {}));
    $("report").addEventListener("submit", download);
    try {
      await Promise.all([loadLive(), loadSignal(), loadDay(), loadMonth()]);
      renderAll();
      await langReady;
      document.body.dataset.ready = "1";
    } catch (e) {
      $("updated").textContent = String(e.message || e);
    }
    // No reloads: live figures every 5 s, today's and this month's energy and incentive every
    // 30 s, the signal every minute.
    setInterval(() => loadLive().catch(() => {}), 5e3);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) { loadLive().catch(() => {}); refreshEnergy(); } });
    setInterval(() => loadSignal(), 60e3);
    setInterval(refreshEnergy, 30e3);
  });
})();
