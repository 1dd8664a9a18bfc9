// Réflexe HAD page: offers, patients, capacity and history refreshed live; answers, reports, declarations.
(() => {
  "use strict";
  const { $, fill, labels, live, say, swap } = window.ReflexePage;
  const main = $("had");
  const config = JSON.parse(main.dataset.config);
  let known = new Set(config.offers);

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
      $("offer-announce").textContent = added.length === 1 ? fill(labels.newOffer, added[0].slice(0, 8))
                                                           : fill(labels.newOffers, added.length);
    }
    known = new Set(ids);
    if (focusWasInside && !box.contains(document.activeElement)) $("offers-h").focus();
  }

  const page = live({
    base: `/had/${encodeURIComponent(config.finess)}`, head: config.head, event: "had",
    apply(f) {
      mergeOffers(f.offers, f.offer_ids);
      swap($("patients"), f.patients, $("patients-h"));
      $("capacity").innerHTML = f.capacity;
      $("history").innerHTML = f.history;
    },
  });

  const formData = (form) => new URLSearchParams(new FormData(form));
  main.addEventListener("submit", (e) => {
    const form = e.target;
    if (!form.classList.contains("had-action")) return;
    e.preventDefault();
    if (form.reason && form.reason.required && !form.reason.value) {  // a refusal or a withdrawal
      say($("action-result"), false, labels.chooseReason);
      form.reason.focus();
      return;
    }
    page.send(form, formData(form), $("action-result"));
  });
  $("capacity-form").addEventListener("submit", (e) => {
    e.preventDefault();
    page.send(e.target, formData(e.target), $("capacity-result"));
  });
})();
