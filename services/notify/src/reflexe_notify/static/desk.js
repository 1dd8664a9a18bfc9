// Réflexe desk page: live updates from the SSE stream, running clocks, desk actions.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ clocks
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
    return `${Math.floor(s / 86400)} j ${Math.floor((s % 86400) / 3600)} h`;
  }
  function tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll("[data-since]")) {
      const t = Date.parse(el.dataset.since);
      if (!isNaN(t)) el.textContent = duration((now - t) / 1000);
    }
    for (const el of document.querySelectorAll("[data-until]")) {
      const t = Date.parse(el.dataset.until);
      if (isNaN(t)) continue;
      el.textContent = t > now ? `expire dans ${duration((t - now) / 1000)}` : "expirée";
    }
  }
  setInterval(tick, 1000);
  tick();

  // A referral's own page has running clocks only; the queue's page has everything below.
  const main = $("desk");
  if (!main) return;
  const config = JSON.parse(main.dataset.config);
  const base = `/desk/${encodeURIComponent(config.department)}`;
  let head = config.head;

  // ------------------------------------------------------------ refreshing the regions
  let timer = null, inFlight = false, again = false;
  function schedule() {
    if (timer) return;
    timer = setTimeout(refresh, 120);
  }
  async function refresh() {
    timer = null;
    if (inFlight) { again = true; return; }
    inFlight = true;
    try {
      const r = await fetch(`${base}/fragments`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (r.status === 401) { location.href = `/desk?next=${encodeURIComponent(location.pathname)}`; return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const f = await r.json();
      swap("queue", f.queue);
      swap("board", f.board);
      syncSelect($("referral-select"), f.referral_options);
      syncSelect($("had-select"), f.had_options);
      markSelected();
      tick();
    } catch (e) {
      setTimeout(schedule, 2000);
    } finally {
      inFlight = false;
      if (again) { again = false; schedule(); }
    }
  }
  function swap(id, html) {
    const el = $(id);
    const active = document.activeElement;
    const focused = active && el.contains(active) && active.dataset.referral
      ? `${active.localName}[data-referral="${CSS.escape(active.dataset.referral)}"]` : null;
    el.innerHTML = html;
    if (focused) {  // keep the keyboard where it was: the same row's link or button
      (el.querySelector(focused) || $("queue-h")).focus();
    }
  }
  function syncSelect(select, html) {
    const value = select.value;
    select.innerHTML = html;
    if ([...select.options].some((o) => o.value === value)) select.value = value;
  }

  // ------------------------------------------------------------ alerts
  function addAlert(ev) {
    const list = $("alerts");
    if (list.querySelector(`li[data-seq="${ev.seq}"]`)) return;
    const li = document.createElement("li");
    li.dataset.seq = ev.seq;
    li.className = `alert alert-${ev.type.replace(/\./g, "-")}`;
    const time = document.createElement("time");
    time.dateTime = ev.occurred_at;
    time.textContent = new Date(ev.occurred_at).toLocaleString("fr-FR", {timeZone: config.timeZone, day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"});
    const title = document.createElement("strong");
    title.textContent = ev.title;
    li.append(time, " ", title, ` — ${ev.text}`);
    list.prepend(li);
    while (list.children.length > 100) list.lastElementChild.remove();
    $("no-alerts").hidden = true;
  }

  // ------------------------------------------------------------ the live stream
  let source = null, down = false;
  function setLive(ok) {
    $("stream-banner").hidden = ok;
    $("live-indicator").classList.toggle("down", !ok);
    $("live-text").textContent = ok ? "En direct" : "Hors ligne — reconnexion…";
  }
  function connect() {
    // After a drop the browser sends Last-Event-ID itself; `after` covers a new EventSource.
    source = new EventSource(`${base}/stream?after=${head}`);
    source.onopen = () => {
      setLive(true);
      if (down) { down = false; schedule(); }
    };
    source.addEventListener("desk", (e) => {
      head = Math.max(head, Number(e.lastEventId) || head);
      const ev = JSON.parse(e.data);
      if (ev.alert) addAlert(ev);
      schedule();
    });
    source.onerror = () => {
      down = true;
      setLive(false);
      if (source.readyState === EventSource.CLOSED) {  // refused (e.g. session over): start anew
        source.close();
        setTimeout(async () => {
          const r = await fetch(`${base}/fragments`, { credentials: "same-origin" }).catch(() => null);
          if (r && r.status === 401) { location.href = `/desk?next=${encodeURIComponent(location.pathname)}`; return; }
          connect();
        }, 2000);
      }
    };
  }
  connect();
  window.addEventListener("beforeunload", () => source && source.close());

  // ------------------------------------------------------------ desk actions
  function markSelected() {
    const id = $("referral-select").value;
    for (const tr of document.querySelectorAll("#queue tr[data-referral]")) tr.classList.toggle("selected", tr.dataset.referral === id);
  }
  $("referral-select").addEventListener("change", markSelected);
  $("queue").addEventListener("click", (e) => {
    const button = e.target.closest("button.pick");
    if (!button) return;
    $("referral-select").value = button.dataset.referral;
    markSelected();
    $("referral-select").focus();
  });
  const result = $("action-result");
  for (const form of document.querySelectorAll("form.desk-action")) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const referral = $("referral-select").value;
      if (!referral) {
        result.className = "error";
        result.textContent = "Choisissez d’abord une demande dans la file.";
        $("referral-select").focus();
        return;
      }
      const data = new URLSearchParams(new FormData(form));
      data.set("referral_id", referral);
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const r = await fetch(form.action, { method: "POST", body: data, credentials: "same-origin",
                                             headers: { Accept: "application/json" } });
        const body = await r.json().catch(() => ({ message: `Erreur ${r.status}` }));
        result.className = r.ok ? "" : "error";
        result.textContent = body.message;
        if (r.status === 401) location.href = `/desk?next=${encodeURIComponent(location.pathname)}`;
        if (r.ok) schedule();
      } catch (err) {
        result.className = "error";
        result.textContent = "La plateforme ne répond pas : action non transmise, réessayez.";
      } finally {
        button.disabled = false;
      }
    });
  }
  markSelected();
})();
