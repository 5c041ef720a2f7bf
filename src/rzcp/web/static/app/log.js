// The access log: the gateway tells in words who looked at the patient's data, from which organisation,
// when, at what, why and whether it was an emergency (GET /fhir/AuditEvent/$access-log).

import { currentLang, formatMoment, t } from "/web/common/i18n.js";
import { api } from "/web/common/oauth.js";
import { byId, clear, el } from "/web/common/dom.js";

export async function renderLog(ctx) {
  const list = clear(byId("log-list"));
  const total = byId("log-total");
  total.textContent = t("loading");
  const query = new URLSearchParams({ lang: currentLang(), _count: "50" });
  const { body } = await api(`/fhir/AuditEvent/$access-log?${query}`);
  if (!ctx.stillCurrent()) return;
  const parameters = body.parameter || [];
  const count = (parameters.find((p) => p.name === "total") || {}).valueInteger || 0;
  const accesses = parameters.filter((p) => p.name === "access").map(entryOf);
  total.textContent = accesses.length ? t("log.total", { total: count }) : t("log.none");
  for (const access of accesses) list.append(item(access));
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
    { class: `card access${access.emergency ? " emergency" : ""}` },
    el("dl", {}, rows.map(([key, value]) => el("div", { class: "row" }, el("dt", {}, t(key)), el("dd", {}, value)))),
  );
}
