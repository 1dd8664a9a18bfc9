// Réflexe desk page: the queue and the board refreshed live, alerts from the stream, desk actions.
(() => {
  "use strict";
  const { $, labels, live, say, swap, tick } = window.ReflexePage;
  const main = $("desk");
  const config = JSON.parse(main.dataset.config);

  function syncSelect(select, html) {
    const value = select.value;
    select.innerHTML = html;
    if ([...select.options].some((o) => o.value === value)) select.value = value;
  }
  function markSelected() {
    const id = $("referral-select").value;
    for (const tr of document.querySelectorAll("#queue tr[data-referral]")) tr.classList.toggle("selected", tr.dataset.referral === id);
  }
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

  const page = live({
    base: `/desk/${encodeURIComponent(config.department)}`, head: config.head, event: "desk",
    apply(f) {
      swap($("queue"), f.queue, $("queue-h"));
      $("board").innerHTML = f.board;
      syncSelect($("referral-select"), f.referral_options);
      syncSelect($("had-select"), f.had_options);
      markSelected();
    },
    onEvent(ev) { if (ev.alert) addAlert(ev); },
  });

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
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const referral = $("referral-select").value;
      if (!referral) {
        say(result, false, labels.chooseReferral);
        $("referral-select").focus();
        return;
      }
      const data = new URLSearchParams(new FormData(form));
      data.set("referral_id", referral);
      page.send(form, data, result);
    });
  }
  markSelected();
  tick();
})();
