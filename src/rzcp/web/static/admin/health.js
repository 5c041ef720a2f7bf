// The exchange at a glance for an administrator: members, failing members, the outbox, the audit trail.

import { t, formatInstant } from "/web/common/i18n.js";
import { el, notice, table, facts } from "/web/common/dom.js";
import { call } from "./consoleapi.js";
import { verifySummary } from "./verify.js";

export async function render(box) {
  box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("health.title")));
  const health = await call("health");
  box.append(
    health.status === "ok"
      ? notice("ok", el("strong", { id: "health-status" }, t("health.ok")))
      : notice("error", el("strong", { id: "health-status" }, t("health.degraded"))),
  );
  const tiles = [
    [t("health.active"), health.members.active, ""],
    [t("health.suspended"), health.members.suspended, ""],
    [t("health.failing"), health.members.failing, health.members.failing ? "bad" : ""],
    [t("health.outboxPending"), health.outbox.pending, ""],
    [t("health.outboxFailed"), health.outbox.failed, health.outbox.failed ? "bad" : ""],
  ];
  box.append(el("ul", { class: "tiles" }, tiles.map(([label, value, kind]) => el("li", { class: `tile ${kind}`.trim() }, el("span", { class: "tile-value" }, String(value)), el("span", { class: "tile-label" }, label)))));
  box.append(el("h3", {}, t("health.failingTitle")));
  if (!health.failing_members.length) box.append(el("p", {}, t("health.noneFailing")));
  else
    box.append(
      table(
        null,
        [t("members.ura"), t("members.name"), t("health.failures24h"), t("health.lastFailure")],
        health.failing_members.map((m) => [m.ura, m.name, String(m.failures_24h), formatInstant(m.last_failure)]),
      ),
    );
  if (health.plain_http_members.length)
    box.append(
      el("h3", {}, t("health.plainHttpTitle")),
      notice("error", el("p", {}, t("health.plainHttpHint")), el("ul", { id: "plain-http-members" }, health.plain_http_members.map((m) => el("li", {}, `${m.name} (${m.ura}): ${m.endpoint}`)))),
    );
  box.append(el("h3", {}, t("health.auditTitle")), verifySummary(health.audit_verify));
  box.append(el("p", { class: "muted" }, facts([[t("health.checked"), formatInstant(new Date().toISOString())]])));
}
