// "Who may see what": the consents in force as sentences, each with its history, a way to change until when
// it holds, and a way to revoke it.

import { formatMoment, t } from "/web/common/i18n.js";
import { LATEST_END, describe, endProblem, statusWords, today } from "./consent.js";
import { changeEnd, lastChanged, listConsents, revokeConsent } from "./consents.js";
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
  // The history link and the revoke button are described by their consent's sentence (screen readers list
  // links and buttons out of context, where "Intrekken" alone does not say which).
  const headlineId = `consent-${consent.id}-headline`;
  const actions = el("div", { class: "actions" });
  const node = el(
    "article",
    { class: `card consent ${deny ? "deny" : "permit"}`, "data-consent": consent.id },
    // a heading (under the list's own): screen readers jump from one consent to the next (a walkthrough)
    el(inForce ? "h3" : "h4", { class: "headline" }, el("span", { id: headlineId }, headline), " ", el("span", { class: `tag ${inForce ? "ok" : "bad"}` }, statusWords(consent.status))),
    el("ul", { class: "details" }, details.map((d) => el("li", {}, d))),
    el("p", { class: "muted" }, t(inForce ? "consent.recorded" : "consent.revokedOn", { date: formatMoment(lastChanged(consent)) })),
    actions,
  );
  actions.append(
    el("a", { href: `#history/${encodeURIComponent(consent.id)}`, "aria-describedby": headlineId }, t("consent.historyLink")),
  );
  if (inForce) actions.append(endButton(consent, actions, ctx, headlineId), revokeButton(consent, actions, ctx, headlineId));
  return node;
}

function endButton(consent, actions, ctx, headlineId) {
  const button = el("button", { type: "button", class: "secondary", "aria-describedby": headlineId }, t("consent.changeEnd"));
  button.addEventListener("click", () => {
    const inputId = `consent-${consent.id}-end`;
    const problemId = `consent-${consent.id}-end-problem`;
    const input = el("input", { type: "date", id: inputId, min: today(), max: LATEST_END, value: ((consent.provision || {}).period || {}).end || "", "aria-describedby": problemId });
    const problem = el("p", { class: "problem", id: problemId, role: "alert", hidden: true });
    const close = () => { form.remove(); button.hidden = false; button.focus(); };
    const form = el(
      "form",
      { class: "confirm", novalidate: true, "aria-label": t("consent.changeEnd"), onsubmit: (event) => { event.preventDefault(); once(event.submitter || form, () => saveEnd(consent, input, problem, ctx)); } },
      el("label", { for: inputId }, t("consent.changeEndLabel")),
      input,
      problem,
      el("button", { type: "submit" }, t("consent.changeEndSave")),
      el("button", { type: "button", class: "secondary", onclick: close }, t("consent.changeEndCancel")),
    );
    button.hidden = true;
    actions.append(form);
    input.focus();
  });
  return button;
}

async function saveEnd(consent, input, problem, ctx) {
  const wrong = endProblem(input.value);
  if (wrong) {
    problem.textContent = t(wrong);
    problem.hidden = false;
    input.focus();
    return;
  }
  try {
    await changeEnd(consent, input.value);
  } catch (error) {
    ctx.fail(error);
    if (error.status === 409 || error.status === 412) await renderOverview(ctx);
    return;
  }
  forgetDecisions();
  ctx.go("#overview", t(input.value ? "consent.endChanged" : "consent.endRemoved"));
}

function revokeButton(consent, actions, ctx, headlineId) {
  const button = el("button", { type: "button", class: "danger", "aria-describedby": headlineId }, t("consent.revoke"));
  // revoking a refusal lets data through again: said so, not in a permission's words (a patient's walkthrough)
  const shield = (consent.provision || {}).type === "deny";
  const question = t(shield ? "consent.revokeShieldConfirm" : "consent.revokeConfirm");
  button.addEventListener("click", () => {
    const no = el("button", { type: "button", class: "secondary", onclick: () => { confirm.remove(); button.hidden = false; button.focus(); } }, t("consent.revokeNo"));
    const confirm = el(
      "div",
      { class: "confirm", role: "group", "aria-label": question },
      el("p", {}, question),
      el("button", { type: "button", class: "danger", onclick: (event) => once(event.currentTarget, () => revoke(consent, ctx)) }, t("consent.revokeYes")),
      no,
    );
    button.hidden = true;
    actions.append(confirm);
    no.focus(); // the safe choice first: pressing Enter twice must not revoke
  });
  return button;
}

/** `action` once at a time for this control: a double click sent a second PUT, answered 412, which once left
 * the page saying the consent had changed elsewhere (a patient's walkthrough). */
async function once(control, action) {
  if (control.dataset.busy) return;
  control.dataset.busy = "1";
  control.setAttribute("aria-disabled", "true");
  try {
    await action();
  } finally {
    delete control.dataset.busy;
    control.removeAttribute("aria-disabled");
  }
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
  ctx.go("#overview", t((consent.provision || {}).type === "deny" ? "consent.revokedShield" : "consent.revoked"));
}
