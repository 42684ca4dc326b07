// The resident page's technician tab: every meter with its state (not answering, since when),
// bus and endpoint, V/I/PF/Hz, reads, failures in a row, latency and its error in plain words;
// the uplink and the clock. Fetched by resident.js when the tab first opens.
"use strict";
window.socerTech = (() => {
  let $, st, serverNow, silentSince;
  // A cell labelled by its column's header (shown on narrow screens, where rows become cards).
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    td.dataset.label = document.querySelectorAll("#tech thead th")[tr.children.length].textContent;
    if (cls) td.className = cls;
    tr.append(td);
  }
  // "230,1 / 229,8 / 231,0 V · 4,1 A · PF 0,98 · 50,00 Hz" of the phases the meter reports.
  function electrical(r) {
    const ph = (a, d) => (a || []).filter((x) => x != null).map((x) => S.num(x, d)).join(" / ");
    const parts = [];
    if (ph(r.v_v, 1)) parts.push(ph(r.v_v, 1) + " V");
    if (ph(r.i_a, 2)) parts.push(ph(r.i_a, 2) + " A");
    if (r.pf != null) parts.push("PF " + S.num(r.pf, 2));
    if (r.f_hz != null) parts.push(S.num(r.f_hz, 2) + " Hz");
    return parts.length ? parts.join(" · ") : "–";
  }
  function renderTech() {
    if (!st.now) return;
    const h = st.health, body = $("meters");
    body.replaceChildren();
    const now = serverNow();
    for (const m of st.now.meters) {
      const mh = h && h.meters[m.name];
      const r = st.latest[m.name];
      const ss = silentSince(m);
      const state = ss != null ? "silent" : mh ? mh.state : m.health || "unknown";
      const tr = document.createElement("tr");
      tr.dataset.meter = m.name;
      tr.dataset.state = state;
      if (ss != null) tr.className = "silent";
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = `${m.name} (${S.t("role_" + m.role)}, ${m.model})`;
      tr.append(th);
      // Failing but not yet silent for three intervals: since when it fails.
      const failing = mh && mh.failing_since && state === "failed" ? " " + S.since(Date.parse(mh.failing_since), now) : "";
      cell(tr, ss != null ? S.tf("notAnswering", { since: S.since(ss, now) }) : S.t("st_" + state) + failing, "st st-" + state);
      if (ss != null) tr.lastChild.dataset.since = new Date(ss).toISOString();
      cell(tr, m.bus != null ? `${m.bus} · ${m.unit}${m.endpoint ? " · " + m.endpoint : ""}` : "–");
      cell(tr, r && r.p_w != null ? S.power(r.p_w) : "–", "n");
      tr.lastChild.dataset.w = r && r.p_w != null ? String(r.p_w) : "";
      cell(tr, r ? electrical(r) : "–", "n");
      cell(tr, r ? (ss != null ? S.tf("lastRead", { t: S.dateTime(r.ts) }) : S.timeS(r.ts)) : "–");
      tr.lastChild.dataset.ts = r ? r.ts : "";
      cell(tr, mh ? `${mh.reads_ok} / ${mh.reads_partial} / ${mh.reads_failed}` : "–", "n");
      const fails = mh ? mh.consecutive_failures || 0 : (m.consecutive_failures || 0);
      cell(tr, S.num(fails, 0), "n");
      tr.lastChild.dataset.n = String(fails);
      const n = mh ? mh.reads_ok + mh.reads_partial : 0;
      cell(tr, mh ? `${S.num(mh.latency_ms_last, 0)} ms (⌀ ${S.num(n ? mh.latency_ms_sum / n : 0, 0)})` : "–", "n");
      const kind = mh ? mh.last_error_kind : m.error_kind, raw = mh ? mh.last_error : m.last_error;
      cell(tr, "", raw ? "err" : "");
      // The kind in plain words, the device's own message under it; one block on a phone.
      const box = document.createElement("span");
      box.textContent = raw ? (S.errorWords(kind) || raw) : "–";
      if (raw && kind) {
        const small = document.createElement("small");
        small.textContent = raw;
        box.append(small);
        tr.lastChild.dataset.kind = kind.kind;
      }
      tr.lastChild.append(box);
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

  return (R) => {
    ({ $, st, serverNow, silentSince } = R);
    renderTech();
  };
})();
