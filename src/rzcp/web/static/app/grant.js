// Giving or refusing consent: who (a kind of care provider or one organisation), may or may not see, which
// data, what for, until when. The preview below the choices says what it means before anything is saved.

import { formatDate, t } from "/web/common/i18n.js";
import { api } from "/web/common/oauth.js";
import { LATEST_END, buildConsent, endProblem, today } from "./consent.js";
import { createConsent } from "./consents.js";
import { byId, clear, el } from "/web/common/dom.js";
import { categoryName, choosableData, choosablePurposes, dataName, organisationCategories, purposeName } from "./policy.js";
import { currentDecisions, draftDecisions, forgetDecisions, outcome } from "./preview.js";

let ready = false;
let ctx = null;
let previewRun = 0;

export async function renderGrant(context) {
  ctx = context;
  if (!ready) setup();
  relabel();
  byId("grant-problem").hidden = true;
  await updatePreview();
}

function setup() {
  ready = true;
  const category = byId("category");
  for (const entry of organisationCategories()) category.append(el("option", { value: entry.code }));
  const options = byId("data-options");
  for (const entry of choosableData()) {
    const id = `data-${entry.key}`;
    options.append(
      el("div", { class: "choice" }, el("input", { type: "checkbox", id, name: "data", value: entry.key }), el("label", { for: id })),
    );
  }
  const purpose = byId("purpose");
  for (const entry of choosablePurposes()) purpose.append(el("option", { value: entry.code }));
  const form = byId("grant-form");
  form.addEventListener("change", onChange);
  form.addEventListener("submit", onSubmit);
  byId("org-search").addEventListener("click", searchOrganisations);
  byId("org-query").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      searchOrganisations();
    }
  });
  byId("end").min = today();
  byId("end").max = LATEST_END;
}

function relabel() {
  for (const option of byId("category").options) option.textContent = categoryName(option.value);
  for (const option of byId("purpose").options) option.textContent = purposeName(option.value);
  for (const input of document.querySelectorAll("#data-options input")) {
    input.nextElementSibling.textContent = dataName(input.value);
  }
}

function onChange(event) {
  const target = event.target;
  if (target.id === "data-all") {
    for (const box of document.querySelectorAll("#data-options input")) {
      box.checked = target.checked;
      box.disabled = target.checked;
    }
  }
  byId("who-category-fields").hidden = whoKind() !== "category";
  byId("who-org-fields").hidden = whoKind() !== "organisation";
  byId("purpose-field").hidden = effect() === "deny";
  byId("grant-problem").hidden = true;
  updatePreview();
}

function whoKind() {
  return document.querySelector("input[name=who]:checked").value;
}

function effect() {
  return document.querySelector("input[name=effect]:checked").value;
}

/** The choice on the form, or null for the parts not yet made. */
function choice() {
  let who = null;
  if (whoKind() === "category") {
    who = { kind: "category", code: byId("category").value, name: categoryName(byId("category").value) };
  } else {
    const picked = document.querySelector("input[name=org]:checked");
    if (picked) who = { kind: "organisation", ura: picked.value, name: picked.dataset.name };
  }
  const data = byId("data-all").checked
    ? "all"
    : [...document.querySelectorAll("#data-options input:checked")].map((box) => box.value);
  return {
    who,
    effect: effect(),
    data: data === "all" || data.length ? data : null,
    purpose: effect() === "deny" ? null : byId("purpose").value,
    end: byId("end").value,
  };
}

async function searchOrganisations() {
  const query = byId("org-query").value.trim();
  const options = clear(byId("org-options"));
  byId("org-results").hidden = true;
  byId("org-none").hidden = true;
  if (!query) return;
  // :contains matches any part of the name ("Rijnstad" finds "Ziekenhuis Rijnstad"); plain name= only its start
  const params = new URLSearchParams({ "name:contains": query, active: "true", _count: "20" });
  let body;
  try {
    ({ body } = await api(`/fhir/Organization?${params}`));
  } catch (error) {
    return ctx.fail(error);
  }
  const found = (body.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === "Organization");
  const ura = (org) => ((org.identifier || []).find((i) => i.system === "http://fhir.nl/fhir/NamingSystem/ura") || {}).value;
  for (const org of found.filter(ura)) {
    const id = `org-${ura(org)}`;
    const kind = ((org.type || [])[0] || {}).coding || [];
    const label = `${org.name || ura(org)} (URA ${ura(org)}${kind[0] ? `, ${categoryName(kind[0].code)}` : ""})`;
    options.append(
      el(
        "div",
        { class: "choice" },
        el("input", { type: "radio", name: "org", id, value: ura(org), "data-name": org.name || "" }),
        el("label", { for: id }, label),
      ),
    );
  }
  byId("org-results").hidden = !options.children.length;
  byId("org-none").hidden = Boolean(options.children.length);
  updatePreview();
}

async function updatePreview() {
  const body = clear(byId("preview-body"));
  const current = choice();
  const run = ++previewRun;
  if (!current.who || !current.data) {
    body.append(el("p", { id: "preview-empty" }, t("preview.empty")));
    return;
  }
  const endWrong = endProblem(current.end);
  if (endWrong) {  // said at the preview, by the field's own words, not as the gateway's refusal
    body.append(el("p", { id: "preview-end", class: "warning" }, t(endWrong)));
    return;
  }
  body.append(el("p", { class: "muted" }, t("preview.busy")));
  let now;
  let after;
  try {
    const draft = buildConsent(ctx.patient, current);
    [now, after] = await Promise.all([
      currentDecisions(current.who, current.purpose),
      draftDecisions(current.who, current.purpose, draft),
    ]);
  } catch (error) {
    if (run === previewRun) {
      clear(body);
      ctx.fail(error);
    }
    return;
  }
  if (run !== previewRun) return;
  const result = outcome(now, after, current);
  const names = (keys) => (keys.length ? keys.map(dataName).join(", ") : t("preview.nothing"));
  const hidden = choosableData()
    .map((c) => c.key)
    .filter((key) => !result.after.includes(key));
  const lines = [
    el("p", { class: "headline" }, t("preview.who", { who: current.who.name })),
    el("p", { id: "preview-now" }, t("preview.now", { see: names(result.now) })),
    el("p", { id: "preview-after" }, t("preview.after", { see: names(result.after) })),
    el("p", { id: "preview-not" }, t("preview.notSee", { data: names(hidden) })),
    result.blocked.length
      ? el("p", { id: "preview-blocked", class: "warning" }, t("preview.refusedBefore", { who: current.who.name, data: names(result.blocked) }))
      : null,
    current.end ? el("p", {}, t("preview.until", { date: formatDate(current.end) })) : null,
  ];
  clear(body).append(...lines.filter(Boolean));
}

function problem(key, field) {
  const box = byId("grant-problem");
  box.textContent = t(key);
  box.hidden = false;
  if (field) field.focus();
}

async function onSubmit(event) {
  event.preventDefault();
  const current = choice();
  if (!current.who) return problem("grant.orgPick", byId("org-query"));
  if (!current.data) return problem("grant.dataPick", byId("data-all"));
  const endWrong = endProblem(current.end);
  if (endWrong) return problem(endWrong, byId("end"));
  const save = byId("save");
  save.disabled = true;
  try {
    await createConsent(buildConsent(ctx.patient, current));
  } catch (error) {
    return ctx.fail(error);
  } finally {
    save.disabled = false;
  }
  forgetDecisions();
  byId("grant-form").reset();
  for (const box of document.querySelectorAll("#data-options input")) box.disabled = false;
  clear(byId("org-options"));
  byId("org-results").hidden = true;
  byId("who-category-fields").hidden = false;
  byId("who-org-fields").hidden = true;
  byId("purpose-field").hidden = false;
  ctx.go("#overview", t("grant.saved"));
}
