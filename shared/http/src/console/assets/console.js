// winmdm console: progressive enhancement only; every page works without this script.
"use strict";

// Refresh a device's command table while a command is still pending or sent.
(function pollCommands() {
  const box = document.getElementById("commands");
  if (!box) return;
  const src = box.getAttribute("data-src");
  let delay = 1500;
  const open = () => {
    const t = box.querySelector("table");
    return t && t.getAttribute("data-open") === "true";
  };
  const tick = async () => {
    if (!open()) return;
    try {
      const r = await fetch(src, { credentials: "same-origin", cache: "no-store" });
      if (r.ok) {
        // The server escaped every value in this fragment; it is our own markup.
        const html = await r.text();
        const doc = new DOMParser().parseFromString(html, "text/html");
        const table = doc.querySelector("table");
        const fresh = table || doc.body.firstElementChild;
        if (fresh) box.replaceChildren(document.importNode(fresh, true));
      }
    } catch (_) {
      delay = Math.min(delay * 2, 15000);
    }
    setTimeout(tick, delay);
  };
  setTimeout(tick, delay);
})();

// Password strength hint and the "twice" check on the add-user form.
(function passwordHint() {
  const pw = document.getElementById("password");
  const again = document.getElementById("password2");
  const hint = document.getElementById("strength");
  if (!pw || !hint) return;
  const rate = (s) => {
    let classes = 0;
    for (const re of [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/]) if (re.test(s)) classes++;
    if (s.length < 12) return "Too short: at least 12 characters.";
    if (s.length >= 20 || (s.length >= 14 && classes >= 3)) return "Strong.";
    return "Acceptable; longer is stronger.";
  };
  pw.addEventListener("input", () => { hint.textContent = rate(pw.value); });
  if (again) {
    const check = () => again.setCustomValidity(again.value && again.value !== pw.value ? "The passwords differ." : "");
    again.addEventListener("input", check);
    pw.addEventListener("input", check);
  }
})();
