// Searching the audit trail: who looked at whose data, when and why; open one event; export what matches.
// The filters stay in memory only (never in the address bar: a BSN does not belong in the browser history).

import { t, formatInstant } from "/web/common/i18n.js";
import { el, clear, notice, field } from "/web/common/dom.js";
import { call, download, filled } from "./consoleapi.js";

const PURPOSES = ["TREAT", "ETREAT", "COC", "PATRQT", "HOPERAT", "HSYSADMIN", "PUBHLTH", "HRESCH"];
const OUTCOMES = ["success", "denied", "failed"];
let lastFilters = null;

/** The Dutch 11-check (elfproef), so a typo is said at once instead of after a round trip. */
export function validBsn(text) {
  if (!/^\d{9}$/.test(text)) return false;
  const digits = [...text].map(Number);
  const sum = digits.slice(0, 8).reduce((acc, d, i) => acc + d * (9 - i), 0) - digits[8];
  return sum % 11 === 0;
}

const NAMING = { "uzi-nr-pers": "UZI", "agb-z": "AGB" };

/** `http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900012345` -> `UZI 900012345` (the full text as a tooltip). */
export function practitionerText(value) {
  if (!value || !value.includes("|")) return value || "";
  const [system, number] = value.split("|");
  const name = NAMING[system.split("/").pop()];
  return name ? el("span", { title: value }, `${name} ${number}`) : value;
}

/** A code in words when strings.json knows it (`kind.pull`, `purpose.TREAT`), else the code itself. */
export function codeWords(prefix, code) {
  if (!code) return "";
  const key = `${prefix}.${code}`;
  return t(key) === key ? code : t(key);
}

export function outcomeTag(outcome, summary) {
  // A pull every consent decision refused answers 200 with nothing in it: "success" read as a disclosure.
  if (summary && outcome === "success" && summary.denied) return el("span", { class: "tag bad" }, t("outcome.consentDenied"));
  const kind = { success: "ok", denied: "bad", failed: "warn" }[outcome] || "";
  const tag = el("span", { class: `tag ${kind}` }, t(`outcome.${outcome}`));
  if (summary && outcome === "success" && ["pull", "search", "read"].includes(summary.kind) && !summary.returned) {
    return [tag, " ", el("span", { class: "muted" }, t("outcome.nothingShared"))];
  }
  return tag;
}

function select(options, labelOf) {
  return el("select", {}, el("option", { value: "" }, t("form.any")), options.map((o) => el("option", { value: o }, labelOf(o))));
}

export async function render(box, ctx) {
  const inputs = {
    bsn: el("input", { inputmode: "numeric", autocomplete: "off", maxlength: "9" }),
    practitioner: el("input", { autocomplete: "off" }),
    member: el("input", { inputmode: "numeric", autocomplete: "off" }),
    patient: el("input", { autocomplete: "off", placeholder: "Patient/…" }),
    since: el("input", { type: "date" }),
    until: el("input", { type: "date" }),
    purpose: select(PURPOSES, (p) => `${t(`purpose.${p}`)} (${p})`),
    outcome: select(OUTCOMES, (o) => t(`outcome.${o}`)),
    emergency: select(["true", "false"], (v) => t(`emergency.${v}`)),
  };
  const messages = el("div", { class: "messages" });
  const results = el("div", { id: "audit-results", "aria-live": "polite" });
  const form = el(
    "form",
    { id: "audit-form", role: "search", novalidate: true },
    el(
      "div",
      { class: "grid" },
      field("f-bsn", t("audit.bsn"), inputs.bsn, t("audit.bsnHint")),
      field("f-practitioner", t("audit.practitioner"), inputs.practitioner, t("audit.practitionerHint")),
      field("f-member", t("audit.member"), inputs.member, t("audit.memberHint")),
      field("f-patient", t("audit.patient"), inputs.patient, t("audit.patientHint")),
      field("f-since", t("audit.since"), inputs.since),
      field("f-until", t("audit.until"), inputs.until),
      field("f-purpose", t("audit.purpose"), inputs.purpose),
      field("f-outcome", t("audit.outcome"), inputs.outcome),
      field("f-emergency", t("audit.emergency"), inputs.emergency),
    ),
    el("p", { class: "actions" }, el("button", { type: "submit" }, t("audit.search")), " ", el("button", { type: "reset", class: "secondary" }, t("audit.clear"))),
  );
  const exports = el(
    "p",
    { class: "actions" },
    el("button", { type: "button", class: "secondary", id: "export-ndjson", on: { click: () => exportAs("ndjson") } }, t("audit.exportNdjson")),
    " ",
    el("button", { type: "button", class: "secondary", id: "export-csv", on: { click: () => exportAs("csv") } }, t("audit.exportCsv")),
  );
  box.append(
    el("h2", { id: "view-title", tabindex: "-1" }, t("audit.title")),
    el("p", {}, t("audit.intro")),
    el("section", { class: "card", "aria-label": t("audit.filters") }, form),
    messages,
    results,
    el("section", { "aria-labelledby": "export-title" }, el("h3", { id: "export-title" }, t("audit.exportTitle")), el("p", { class: "muted" }, t("audit.exportIntro")), exports),
  );

  function filters() {
    const values = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()]));
    return values;
  }

  function problems(values) {
    const found = [];
    if (values.bsn && !validBsn(values.bsn)) found.push(t("audit.badBsn"));
    if (values.member && !/^\d{8}$/.test(values.member)) found.push(t("audit.badUra"));
    if (values.since && values.until && values.since > values.until) found.push(t("audit.badPeriod"));
    return found;
  }

  async function search(values, page) {
    clear(messages);
    const found = problems(values);
    if (found.length) {
      messages.append(notice("error", found.join(" ")));
      return;
    }
    lastFilters = values;
    // POST: the filters (a BSN among them) stay out of URLs and so out of every proxy's access log
    const answer = await call("audit/events/_search", { method: "POST", body: filled({ ...values, count: 50, page }) });
    if (!page) clear(results);
    drawResults(answer, values);
  }

  function drawResults(answer, values) {
    let body = results.querySelector("tbody");
    if (!body) {
      const check = answer.integrity;
      if (check && !check.ok) {
        results.append(notice("error", t("audit.integrityBroken", { first: check.first_bad ?? "?", when: formatInstant(check.ran_at) })));
      }
      results.append(el("p", { id: "audit-total" }, t(answer.more_than_total ? "audit.total-more" : "audit.total", { total: answer.total })));
      if (!answer.events.length) return;
      const head = ["audit.when", "audit.kind", "audit.outcome", "audit.member", "audit.practitioner", "audit.patient", "audit.purpose", "audit.what", "audit.open"];
      body = el("tbody");
      results.append(el("div", { class: "table-wrap" }, el("table", { id: "audit-table" }, el("caption", { class: "visually-hidden" }, t("audit.caption")), el("thead", {}, el("tr", {}, head.map((k) => el("th", { scope: "col" }, t(k))))), body)));
    }
    for (const e of answer.events) {
      body.append(
        el(
          "tr",
          { dataset: { id: e.id } },
          el("td", { class: "nowrap" }, formatInstant(e.recorded)),
          el("td", {}, codeWords("kind", e.kind)),
          el("td", {}, outcomeTag(e.outcome, e)),
          el("td", {}, e.member_name ? `${e.member_name} (${e.member_ura})` : e.member_ura || e.client_id || ""),
          el("td", {}, practitionerText(e.practitioner)),
          el("td", {}, e.patient || ""),
          el("td", {}, e.purpose ? el("span", { title: e.purpose }, codeWords("purpose", e.purpose)) : "", e.emergency ? [" ", el("span", { class: "tag bad" }, t("audit.emergencyTag"))] : null),
          el("td", {}, e.what || ""),
          el("td", {}, el("a", { href: `#event/${encodeURIComponent(e.id)}` }, t("audit.details"), el("span", { class: "visually-hidden" }, ` ${formatInstant(e.recorded)}`))),
        ),
      );
    }
    results.querySelector(".more")?.remove();
    if (answer.next) {
      const more = el("button", { type: "button", class: "secondary more" }, t("audit.more"));
      more.addEventListener("click", () => search(values, answer.next).catch((error) => ctx.fail(messages, error)));
      results.append(el("p", {}, more));
    }
  }

  async function exportAs(format) {
    clear(messages);
    const values = filters();
    const found = problems(values);
    if (found.length) return messages.append(notice("error", found.join(" ")));
    try {
      const name = await download("audit/export", `rzcp-audit.${format}`, filled({ format, ...values }));
      messages.append(notice("ok", t("audit.exported", { name })));
    } catch (error) {
      ctx.fail(messages, error);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search(filters()).catch((error) => ctx.fail(messages, error));
  });
  form.addEventListener("reset", () => {
    lastFilters = null;
    clear(results);
    clear(messages);
  });

  if (lastFilters) {
    for (const [name, value] of Object.entries(lastFilters)) inputs[name].value = value;
    await search(lastFilters);
  }
}
