// "Who may see what": the consents in force as sentences, each with its history and a way to revoke it.

import { formatMoment, t } from "/web/common/i18n.js";
import { describe, statusWords } from "./consent.js";
import { lastChanged, listConsents, revokeConsent } from "./consents.js";
import { byId, clear, el } from "/web/common/dom.js";
import { forgetDecisions } from "./preview.js";

export async function renderOverview(ctx) {
  const active = clear(byId("overview-active"));
  const revoked = clear(byId("overview-revoked"));
  active.append(el("p", { class: "muted" }, t("loading")));
  const consents = await listConsents(ctx.patient);
  if (!ctx.stillCurrent()) return;
  clear(active);
  const inForce = consents.filter((c) => c.status === "active");
  const notInForce = consents.filter((c) => c.status !== "active");
  if (!inForce.length) active.append(el("p", { class: "empty" }, t("overview.none")));
  for (const consent of inForce) active.append(card(consent, ctx));
  if (!notInForce.length) revoked.append(el("p", { class: "muted" }, t("overview.revokedNone")));
  for (const consent of notInForce) revoked.append(card(consent, ctx));
}

function card(consent, ctx) {
  const { headline, details } = describe(consent);
  const inForce = consent.status === "active";
  const deny = (consent.provision || {}).type === "deny";
  const actions = el("div", { class: "actions" });
  const node = el(
    "article",
    { class: `card consent ${deny ? "deny" : "permit"}`, "data-consent": consent.id },
    el("p", { class: "headline" }, headline, " ", el("span", { class: `tag ${inForce ? "ok" : "bad"}` }, statusWords(consent.status))),
    el("ul", { class: "details" }, details.map((d) => el("li", {}, d))),
    el("p", { class: "muted" }, t("consent.recorded", { date: formatMoment(lastChanged(consent)) })),
    actions,
  );
  actions.append(el("a", { href: `#history/${encodeURIComponent(consent.id)}` }, t("consent.historyLink")));
  if (inForce) actions.append(revokeButton(consent, actions, ctx));
  return node;
}

function revokeButton(consent, actions, ctx) {
  const button = el("button", { type: "button", class: "danger" }, t("consent.revoke"));
  button.addEventListener("click", () => {
    const confirm = el(
      "div",
      { class: "confirm", role: "group", "aria-label": t("consent.revokeConfirm") },
      el("p", {}, t("consent.revokeConfirm")),
      el("button", { type: "button", class: "danger", onclick: () => revoke(consent, ctx) }, t("consent.revokeYes")),
      el("button", { type: "button", class: "secondary", onclick: () => { confirm.remove(); button.hidden = false; button.focus(); } }, t("consent.revokeNo")),
    );
    button.hidden = true;
    actions.append(confirm);
    confirm.querySelector("button").focus();
  });
  return button;
}

async function revoke(consent, ctx) {
  try {
    await revokeConsent(consent);
  } catch (error) {
    ctx.fail(error);
    if (error.status === 409 || error.status === 412) await renderOverview(ctx);
    return;
  }
  forgetDecisions();
  ctx.go("#overview", t("consent.revoked"));
}
