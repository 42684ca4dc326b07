// socer pages, shared part: language, Italian-convention formatting (Intl, Europe/Rome), small SVG
// charts, JSON fetching. No third-party code; nothing here talks to anything but this server.
"use strict";
const S = (() => {
  const TZ = "Europe/Rome";
  let lang = "it";
  let dict = { it: {}, en: {} };

  function chooseLang() {
    const saved = localStorage.getItem("socer.lang");
    if (saved === "it" || saved === "en") return saved;
    for (const l of navigator.languages || [navigator.language || ""]) {
      const base = String(l).toLowerCase().slice(0, 2);
      if (base === "it") return "it";
      if (base === "en") return "en";
    }
    return "it";
  }
  const locale = () => (lang === "it" ? "it-IT" : "en-GB");
  const t = (k) => dict[lang][k] ?? dict.it[k] ?? k;
  // Replace {name} placeholders.
  const tf = (k, args) => t(k).replace(/\{(\w+)\}/g, (_, n) => (args[n] ?? ""));

  function applyStatic() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    for (const b of document.querySelectorAll(".lang button")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
    document.title = t("title");
  }

  // English texts come in their own file (`{page}.en.js`), fetched only when a
  // page is shown in English: most readers read Italian, and the first load stays light.
  let page = "", onLang = () => {};
  function addLang(d) { Object.assign(dict.en, d); }
  function addTexts(d) { Object.assign(dict.it, d.it); Object.assign(dict.en, d.en); }
  // Load `/assets/{name}.js` once; a failed load may be tried again.
  const loading = {};
  function need(name) {
    loading[name] = loading[name] || new Promise((ok, fail) => {
      const s = document.createElement("script");
      s.src = `/assets/${name}.js`;
      s.onload = ok;
      s.onerror = () => { delete loading[name]; s.remove(); fail(new Error(s.src)); };
      document.head.append(s);
    });
    return loading[name];
  }
  const loadEn = () => need(page + ".en");
  async function setLang(l, remember) {
    if (l === "en") {
      try { await loadEn(); } catch (e) { l = "it"; }
    }
    lang = l;
    if (remember) localStorage.setItem("socer.lang", lang);
    applyStatic();
    onLang();
  }

  // `onChange` re-renders the dynamic parts after a language switch or a resize. Resolves once
  // the chosen language's texts are in.
  function init(d, onChange, pageName) {
    dict = { it: { ...COMMON_IT, ...d.it }, en: {} };
    page = pageName;
    let pending = 0;
    addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(onChange, 150);
    });
    applyStatic();
    for (const b of document.querySelectorAll(".lang button")) {
      b.addEventListener("click", () => setLang(b.dataset.lang, true));
    }
    const ready = setLang(chooseLang(), false);
    onLang = onChange;
    return ready;
  }

  function num(v, digits) {
    return new Intl.NumberFormat(locale(), {
      minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: "always",
    }).format(v);
  }
  // Power in W: below 1 kW in W, otherwise kW with one decimal.
  function power(w) {
    if (w == null || !isFinite(w)) return "–";
    // `|| 0` turns a rounded −0 into 0: "-0 W" means nothing.
    return Math.abs(w) < 1000 ? num(Math.round(w) || 0, 0) + " W" : num(w / 1000, 1) + " kW";
  }
  function kwh(v, digits = 1) {
    return v == null || !isFinite(v) ? "–" : num(v, digits) + " kWh";
  }
  function eur(v) {
    return new Intl.NumberFormat(locale(), { style: "currency", currency: "EUR", useGrouping: "always" }).format(v);
  }
  const dtf = (opts) => new Intl.DateTimeFormat(locale(), { timeZone: TZ, hourCycle: "h23", ...opts });
  const time = (d) => dtf({ hour: "2-digit", minute: "2-digit" }).format(new Date(d));
  const timeS = (d) => dtf({ hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date(d));
  const day = (d) => dtf({ day: "numeric", month: "short" }).format(new Date(d));
  const dateTime = (d) => dtf({ day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(d));

  // YYYY-MM-DD of an instant in Rome.
  const romeDate = (d) => new Intl.DateTimeFormat("en-CA", { timeZone: TZ }).format(new Date(d));
  // The UTC instant of midnight in Rome of the given YYYY-MM-DD.
  function romeMidnight(ymd) {
    const guess = new Date(ymd + "T00:00:00Z");
    const off = new Intl.DateTimeFormat("en-US", { timeZone: TZ, timeZoneName: "shortOffset" })
      .formatToParts(guess).find((p) => p.type === "timeZoneName").value; // "GMT+1"
    const m = /GMT([+-]\d+)?/.exec(off);
    const h = m && m[1] ? parseInt(m[1], 10) : 0;
    return new Date(guess.getTime() - h * 3600e3);
  }

  async function get(url, headers) {
    const r = await fetch(url, { headers: headers || {}, cache: "no-store" });
    if (!r.ok) {
      const e = new Error(url + ": HTTP " + r.status);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  const NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  // A round step for about `n` ticks up to `max`.
  function niceStep(max, n) {
    const raw = max / n, p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) || raw;
  }
  // The chart's own width in CSS pixels, so 11-px labels stay 11 px on a phone.
  function size(svg) {
    const w = Math.round(svg.getBoundingClientRect().width) || 640;
    const W = Math.min(1200, Math.max(280, w));
    return { W, H: W < 500 ? 190 : 230 };
  }
  function frame(svg, W, H, maxV, fmtY) {
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const step = niceStep(maxV || 1, 4);
    const top = Math.max(step, Math.ceil((maxV || 1) / step) * step);
    const ticks = [];
    for (let v = 0; v <= top + 1e-9; v += step) ticks.push([v, fmtY(v)]);
    const pad = { l: 8 + 6.5 * Math.max(...ticks.map((x) => x[1].length)), r: 6, t: 8, b: 22 };
    const y = (v) => pad.t + (H - pad.t - pad.b) * (1 - v / top);
    for (const [v, label] of ticks) {
      svg.append(el("line", { class: "grid", x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }));
      svg.append(el("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end" }, label));
    }
    return { pad, y, x0: pad.l, x1: W - pad.r };
  }
  // Lines over time: series = [{cls, pts: [[ms, value]]}], x from `from` to `to` (ms).
  function lines(svg, series, from, to, fmtY, tickEveryH) {
    const { W, H } = size(svg);
    const maxV = Math.max(0, ...series.flatMap((s) => s.pts.map((p) => p[1])));
    const f = frame(svg, W, H, maxV, fmtY);
    const x = (ms) => f.x0 + (f.x1 - f.x0) * (ms - from) / (to - from);
    for (let ms = from; ms < to; ms += tickEveryH * 3600e3) {
      svg.append(el("text", { x: x(ms), y: H - 6, "text-anchor": "middle" }, time(ms)));
    }
    for (const s of series) {
      if (!s.pts.length) continue;
      const d = s.pts.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + f.y(Math.max(0, p[1])).toFixed(1)).join("");
      svg.append(el("path", { class: s.cls, d }));
    }
  }
  // Grouped bars: labels[i], series = [{cls, values[i]}].
  function bars(svg, labels, series, fmtY, labelEvery) {
    const { W, H } = size(svg);
    if (W < 500) labelEvery *= 2;
    const maxV = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v != null)));
    const f = frame(svg, W, H, maxV, fmtY);
    const slot = (f.x1 - f.x0) / Math.max(1, labels.length);
    const bw = Math.max(1, (slot * 0.8) / series.length);
    labels.forEach((lab, i) => {
      series.forEach((s, j) => {
        const v = s.values[i];
        if (v == null) return;
        const yv = f.y(Math.max(0, v));
        const r = el("rect", { class: s.cls, x: (f.x0 + i * slot + slot * 0.1 + j * bw).toFixed(1),
          y: yv.toFixed(1), width: bw.toFixed(1), height: Math.max(0, f.y(0) - yv).toFixed(1) });
        r.append(el("title", {}, lab + ": " + fmtY(v)));
        svg.append(r);
      });
      if (i % labelEvery === 0) svg.append(el("text", { x: f.x0 + i * slot + slot / 2, y: H - 6, "text-anchor": "middle" }, lab));
    });
  }

  // The first run of green slots of a forecast that has not ended: {start, end} or null.
  function nextGreen(forecast, nowMs) {
    let start = null, end = null;
    for (const s of forecast || []) {
      const a = Date.parse(s.start), b = a + 3600e3;
      if (b <= nowMs) continue;
      if (s.level === "green") {
        if (start == null) start = a;
        if (end == null || a <= end) end = b; else break;
      } else if (start != null) break;
    }
    return start == null ? null : { start, end };
  }
  // "oggi", "domani" or a date, for the day of an instant.
  function dayWord(ms, nowMs) {
    const d = romeDate(ms);
    if (d === romeDate(nowMs)) return t("today");
    if (d === romeDate(nowMs + 86400e3)) return t("tomorrow");
    return day(ms);
  }
  function windowText(w, nowMs) {
    if (!w) return t("noWindow");
    const end = romeDate(w.end - 1) === romeDate(w.start) ? time(w.end) : dayWord(w.end - 1, nowMs) + " " + time(w.end);
    return w.start <= nowMs ? tf("windowNow", { end })
      : tf("window", { day: dayWord(w.start, nowMs), start: time(w.start), end });
  }
  const LEVEL_SYM = { green: "✓", yellow: "=", red: "!", none: "?" };
  // Fill a .level box from a signal level (or null).
  function level(box, lv) {
    const k = lv || "none";
    box.className = "level lv-" + k;
    box.querySelector(".sym").textContent = LEVEL_SYM[k];
    box.querySelector("strong").textContent = t("lv_" + k);
    box.querySelector("p").textContent = t("adv_" + k);
  }

  // "novembre 2026" / "November 2026" for YYYY-MM.
  function monthName(ym) {
    const [y, m] = String(ym).split("-").map(Number);
    if (!y || !m) return String(ym);
    return new Intl.DateTimeFormat(locale(), { month: "long", year: "numeric", timeZone: "UTC" })
      .format(new Date(Date.UTC(y, m - 1, 15)));
  }
  // A count with its noun in the right number: dict keys `{k}_one` and `{k}_other` hold "{n} …".
  function count(k, n) {
    const form = new Intl.PluralRules(locale()).select(n) === "one" ? "_one" : "_other";
    return tf(k + form, { n: num(n, 0) });
  }
  // "dalle 21:10" today, "dal 30 nov, 21:10" before.
  function since(ms, nowMs) {
    return romeDate(ms) === romeDate(nowMs) ? tf("sinceTime", { t: time(ms) }) : tf("sinceDay", { t: dateTime(ms) });
  }
  // A meter error's kind ({kind, code}) in plain words.
  function errorWords(k) {
    if (!k || !k.kind) return "";
    if (!("err_timeout" in dict.it)) {
      need("errors").then(() => onLang(), () => {});
      return "";
    }
    if (k.kind === "exception") {
      const c = k.code, name = t("exc_" + c);
      return tf("err_exception", { code: c, name: name === "exc_" + c ? t("exc_other") : name });
    }
    return t("err_" + k.kind);
  }
  // Plain-word texts shared by both pages (merged under each page's own dictionary).
  const COMMON_IT = {
      sinceTime: "dalle {t}", sinceDay: "dal {t}", silent: "non risponde", notAnswering: "non risponde {since}",
  };


  return { init, addLang, addTexts, need, t, tf, lang: () => lang, num, power, kwh, eur, time, timeS, day, dateTime,
    romeDate, romeMidnight, get, lines, bars, nextGreen, windowText, level, monthName, count, since, errorWords };
})();
