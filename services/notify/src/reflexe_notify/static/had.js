// Réflexe HAD page: live updates from the HAD's SSE stream, running hold clocks, answers and reports.
(() => {
  "use strict";
  const main = document.getElementById("had");
  const config = JSON.parse(main.dataset.config);
  const base = `/had/${encodeURIComponent(config.finess)}`;
  const login = () => { location.href = `/had?next=${encodeURIComponent(location.pathname)}`; };
  let head = config.head;
  let known = new Set(config.offers);
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
    for (const el of document.querySelectorAll("[data-until]")) {
      const t = Date.parse(el.dataset.until);
      if (isNaN(t)) continue;
      el.textContent = t > now ? `expire dans ${duration((t - now) / 1000)}` : "expirée";
    }
  }
  setInterval(tick, 1000);
  tick();

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
      if (r.status === 401) { login(); return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const f = await r.json();
      mergeOffers(f.offers, f.offer_ids);
      swap("patients", f.patients);
      $("capacity").innerHTML = f.capacity;
      $("history").innerHTML = f.history;
      tick();
    } catch (e) {
      setTimeout(schedule, 2000);
    } finally {
      inFlight = false;
      if (again) { again = false; schedule(); }
    }
  }
  // Offers already shown stay as they are (a refusal being typed keeps its text and focus);
  // new ones are added and announced, gone ones removed.
  function mergeOffers(html, ids) {
    const box = $("offers");
    const fresh = document.createElement("div");
    fresh.innerHTML = html;
    const incoming = [...fresh.querySelectorAll("article.offer")];
    const focusWasInside = box.contains(document.activeElement);
    for (const old of [...box.querySelectorAll("article.offer")]) {
      if (!ids.includes(old.dataset.referral)) old.remove();
    }
    if (!incoming.length) {
      box.innerHTML = html;  // the "no offer" sentence, or the service being unavailable
    } else {
      for (const node of [...box.children]) if (!node.matches("article.offer")) node.remove();
      let previous = null;
      for (const article of incoming) {
        const current = box.querySelector(`article.offer[data-referral="${CSS.escape(article.dataset.referral)}"]`);
        const node = current || article;
        if (!current) node.classList.add("new");
        if (previous) previous.after(node); else box.prepend(node);
        previous = node;
      }
    }
    const added = ids.filter((id) => !known.has(id));
    if (added.length) {
      $("offer-announce").textContent = added.length === 1
        ? `Nouvelle offre reçue : demande ${added[0].slice(0, 8)}.`
        : `${added.length} nouvelles offres reçues.`;
    }
    known = new Set(ids);
    if (focusWasInside && !box.contains(document.activeElement)) $("offers-h").focus();
  }
  function swap(id, html) {
    const el = $(id);
    const focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.dataset.referral : null;
    el.innerHTML = html;
    if (focused) {
      const back = el.querySelector(`button[data-referral="${CSS.escape(focused)}"]`);
      (back || $(`${id}-h`)).focus();
    }
  }

  // ------------------------------------------------------------ the live stream
  let source = null, down = false;
  function setLive(ok) {
    $("stream-banner").hidden = ok;
    $("live-indicator").classList.toggle("down", !ok);
    $("live-text").textContent = ok ? "En direct" : "Hors ligne — reconnexion…";
  }
  function connect() {
    source = new EventSource(`${base}/stream?after=${head}`);
    source.onopen = () => {
      setLive(true);
      if (down) { down = false; schedule(); }
    };
    source.addEventListener("had", (e) => {
      head = Math.max(head, Number(e.lastEventId) || head);
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

  // ------------------------------------------------------------ answers, reports, declarations
  async function send(form, result) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const r = await fetch(form.action, { method: "POST", body: new URLSearchParams(new FormData(form)),
                                           credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await r.json().catch(() => ({ message: `Erreur ${r.status}` }));
      if (r.status === 401) { login(); return; }
      const fields = (body.errors || []).map((e) => e.message).join(" ; ");
      result.className = r.ok ? "" : "error";
      result.textContent = body.message || `${body.detail || "Refusé"}${fields ? ` (${fields})` : ""}`;
      if (r.ok) schedule();
    } catch (err) {
      result.className = "error";
      result.textContent = "La plateforme ne répond pas : rien n’a été transmis, réessayez.";
    } finally {
      button.disabled = false;
    }
  }
  main.addEventListener("submit", (e) => {
    const form = e.target;
    if (!form.classList.contains("had-action")) return;
    e.preventDefault();
    if (form.classList.contains("decline") && !form.reason.value) {
      $("action-result").className = "error";
      $("action-result").textContent = "Choisissez un motif de refus.";
      form.reason.focus();
      return;
    }
    send(form, $("action-result"));
  });
  $("capacity-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send(e.target, $("capacity-result"));
  });
})();
