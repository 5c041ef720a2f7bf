// The access log: the gateway tells in words who looked at the patient's data, from which organisation,
// when, at what, why and whether it was an emergency (GET /fhir/AuditEvent/$access-log).

import { currentLang, formatMoment, t } from "/web/common/i18n.js";
import { api } from "/web/common/oauth.js";
import { byId, clear, el } from "/web/common/dom.js";

const PAGE = 50;

export async function renderLog(ctx) {
  const list = clear(byId("log-list"));
  byId("log-more")?.remove();
  const total = byId("log-total");
  total.textContent = t("loading");
  await more(ctx, list, total, 0);
}

/** The next page of accesses after the `shown` newest; a button for the page after it while there is one. */
async function more(ctx, list, total, shown) {
  const query = new URLSearchParams({ lang: currentLang(), _count: String(PAGE), _offset: String(shown) });
  const { body } = await api(`/fhir/AuditEvent/$access-log?${query}`);
  if (!ctx.stillCurrent()) return;
  const parameters = body.parameter || [];
  const count = (parameters.find((p) => p.name === "total") || {}).valueInteger || 0;
  const accesses = parameters.filter((p) => p.name === "access").map(entryOf);
  if (!shown) total.textContent = accesses.length ? t("log.total", { total: count }) : t("log.none");
  const first = list.children.length;
  for (const access of accesses) list.append(item(access));
  const after = shown + accesses.length;
  if (accesses.length && after < count) {
    const button = el("button", { type: "button", class: "secondary", id: "log-more" }, t("log.more", { left: count - after }));
    button.addEventListener("click", async () => {
      button.remove();
      await more(ctx, list, total, after);
      const next = list.children[first + accesses.length];
      if (next) next.focus(); // the keyboard goes on where the new entries begin
    });
    list.after(button);
  }
}

function entryOf(parameter) {
  const entry = {};
  for (const part of parameter.part || []) {
    entry[part.name] = part.valueString ?? part.valueInstant ?? part.valueBoolean;
  }
  return entry;
}

function item(access) {
  const unknown = t("log.unknown");
  const who = access.who ? (access.role ? `${access.who} (${access.role})` : access.who) : t("log.unknownWho");
  const emergency = access.emergency
    ? el("span", { class: "tag warn" }, t("log.emergencyYes") + (access["emergency-reason"] ? `: ${access["emergency-reason"]}` : ""))
    : t("log.emergencyNo");
  const rows = [
    ["log.when", formatMoment(access.when)],
    ["log.who", who],
    ["log.organisation", access.organisation || unknown],
    ["log.what", access.what || unknown],
    ["log.why", access.why || unknown],
    ["log.emergency", emergency],
  ];
  return el(
    "li",
    { class: `card access${access.emergency ? " emergency" : ""}`, tabindex: "-1" },
    el("dl", {}, rows.map(([key, value]) => el("div", { class: "row" }, el("dt", {}, t(key)), el("dd", {}, value)))),
  );
}
