// Réflexe pages' shared script: the words the server rendered into the page, running clocks,
// regions refreshed from the page's fragments when its live stream says something changed,
// and forms posted without leaving the page. desk.js and had.js use it (window.ReflexePage).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const labels = JSON.parse($("page-labels").textContent);
  const fill = (text, value) => text.replace("{}", value);

  // ------------------------------------------------------------ clocks
  function duration(s) {
    const u = labels.units;
    s = Math.max(0, Math.floor(s));
    if (s < 60) return `${s} ${u.second}`;
    if (s < 3600) return `${Math.floor(s / 60)} ${u.minute}`;
    if (s < 86400) return `${Math.floor(s / 3600)} ${u.hour} ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} ${u.minute}`;
    return `${Math.floor(s / 86400)} ${u.day} ${Math.floor((s % 86400) / 3600)} ${u.hour}`;
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
      el.textContent = t > now ? fill(labels.expiresIn, duration((t - now) / 1000)) : labels.expired;
    }
    for (const el of document.querySelectorAll("[data-due]")) {
      const t = Date.parse(el.dataset.due);
      if (isNaN(t)) continue;
      el.textContent = t > now ? fill(labels.dueIn, duration((t - now) / 1000)) : labels.overdue;
    }
  }
  setInterval(tick, 1000);
  tick();

  // ------------------------------------------------------------ a live page
  // base: "/desk/34" or "/had/340000001"; event: the stream's event name; apply(fragments):
  // swaps the regions in; onEvent(data): what the page does with an entry beyond refreshing.
  function live({ base, head, event, apply, onEvent }) {
    const loginPath = `/${base.split("/")[1]}`;
    const login = () => { location.href = `${loginPath}?next=${encodeURIComponent(location.pathname)}`; };

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
        if (r.status === 401) { login(); return; }
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        apply(await r.json());
        tick();
      } catch (e) {
        setTimeout(schedule, 2000);
      } finally {
        inFlight = false;
        if (again) { again = false; schedule(); }
      }
    }

    let source = null, down = false;
    function setLive(ok) {
      $("stream-banner").hidden = ok;
      $("live-indicator").classList.toggle("down", !ok);
      $("live-text").textContent = ok ? labels.live : labels.offline;
    }
    function connect() {
      // After a drop the browser sends Last-Event-ID itself; `after` covers a new EventSource.
      source = new EventSource(`${base}/stream?after=${head}`);
      source.onopen = () => {
        setLive(true);
        if (down) { down = false; schedule(); }
      };
      source.addEventListener(event, (e) => {
        head = Math.max(head, Number(e.lastEventId) || head);
        if (onEvent) onEvent(JSON.parse(e.data));
        schedule();
      });
      source.onerror = () => {
        down = true;
        setLive(false);
        if (source.readyState === EventSource.CLOSED) {  // refused (e.g. session over): start anew
          source.close();
          setTimeout(async () => {
            const r = await fetch(`${base}/fragments`, { credentials: "same-origin" }).catch(() => null);
            if (r && r.status === 401) { login(); return; }
            connect();
          }, 2000);
        }
      };
    }
    connect();
    window.addEventListener("beforeunload", () => source && source.close());

    // A form posted by the script; its outcome told in `result`.
    async function send(form, data, result) {
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const r = await fetch(form.action, { method: "POST", body: data, credentials: "same-origin",
                                             headers: { Accept: "application/json" } });
        const body = await r.json().catch(() => ({ message: fill(labels.error, r.status) }));
        if (r.status === 401) { login(); return; }
        const fields = (body.errors || []).map((e) => e.message).join(" ; ");
        say(result, r.ok, body.message || `${body.detail || labels.refused}${fields ? ` (${fields})` : ""}`);
        if (r.ok) schedule();
      } catch (err) {
        say(result, false, labels.unreachable);
      } finally {
        button.disabled = false;
      }
    }
    return { schedule, send };
  }

  function say(result, ok, text) {
    result.className = ok ? "" : "error";
    result.textContent = text;
  }

  // Replaces a region, keeping the keyboard on the same referral's control (or the region's heading).
  // A refresh keeps what the person was choosing or typing (a withdrawal's reason, its precision):
  // fields are found again by their id, which names the referral.
  function swap(el, html, fallback) {
    const active = document.activeElement;
    const inside = active && el.contains(active);
    const focused = !inside ? null : active.id ? `#${CSS.escape(active.id)}`
      : active.dataset.referral ? `${active.localName}[data-referral="${CSS.escape(active.dataset.referral)}"]` : null;
    const typed = [...el.querySelectorAll("select[id], textarea[id], input[id][type=text]")]
      .filter((field) => field.value).map((field) => [field.id, field.value]);
    el.innerHTML = html;
    for (const [id, value] of typed) {
      const field = el.querySelector(`#${CSS.escape(id)}`);
      if (field && !field.value) field.value = value;
    }
    if (focused) (el.querySelector(focused) || fallback).focus();
  }

  window.ReflexePage = { $, labels, fill, tick, live, say, swap };
})();
