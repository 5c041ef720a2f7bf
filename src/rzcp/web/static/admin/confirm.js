// A two-step button for what changes who may call, at once (suspend, reinstate, revoke, replace keys): the
// first press asks, the second acts.
// Inline rather than window.confirm, so it is keyboard- and screen-reader-friendly and testable.

import { el } from "/web/common/dom.js";
import { t } from "/web/common/i18n.js";

export function confirmButton(label, question, action) {
  const holder = el("span", { class: "confirm" });
  const start = el("button", { type: "button", class: "danger small" }, label);
  const ask = () => {
    const yes = el("button", { type: "button", class: "danger small" }, t("confirm.yes", { action: label }));
    const no = el("button", { type: "button", class: "secondary small" }, t("confirm.no"));
    no.addEventListener("click", () => {
      holder.replaceChildren(start);
      start.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = no.disabled = true;
      await action();
    });
    holder.replaceChildren(el("span", { class: "question" }, question), " ", yes, " ", no);
    no.focus(); // the safe choice first: pressing Enter twice must not act
  };
  start.addEventListener("click", ask);
  holder.append(start);
  return holder;
}
