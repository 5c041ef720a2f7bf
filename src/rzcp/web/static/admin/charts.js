// The region's exchange over time, from the audit trail's daily aggregates: pulls and pushes per member,
// denials, emergencies (break-the-glass) and failures of members' servers.

import { t } from "/web/common/i18n.js";
import { el, clear, notice, field } from "/web/common/dom.js";
import { call, query } from "./consoleapi.js";
import { barChart } from "./svgchart.js";

function perMember(byUra, names) {
  return Object.entries(byUra || {})
    .map(([ura, values]) => ({ key: ura, label: names[ura] ? `${names[ura]} (${ura})` : ura, values }))
    .sort((a, b) => a.label.localeCompare(b.label));
}

export async function render(box, ctx) {
  const since = el("input", { type: "date" });
  const until = el("input", { type: "date" });
  const messages = el("div", { class: "messages" });
  const charts = el("div", { id: "charts" });
  const form = el(
    "form",
    { id: "charts-form", novalidate: true },
    el("div", { class: "grid" }, field("f-chart-since", t("audit.since"), since), field("f-chart-until", t("audit.until"), until)),
    el("p", {}, el("button", { type: "submit" }, t("charts.show"))),
  );
  box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("charts.title")), el("p", {}, t("charts.intro")), form, messages, charts);

  async function draw() {
    clear(messages);
    if (since.value && until.value && since.value > until.value) return messages.append(notice("error", t("audit.badPeriod")));
    const stats = await call(`audit/stats${query({ since: since.value, until: until.value })}`);
    clear(charts);
    const names = stats.members || {};
    const days = stats.days || [];
    if (days.length && !since.value) {
      since.value = days[0];
      until.value = days[days.length - 1];
    }
    const one = (key, label, values) => [{ key, label, values: values || [] }];
    charts.append(
      barChart({ id: "chart-pulls", title: t("charts.pulls"), description: t("charts.pullsText"), days, series: perMember(stats.pulls, names), perMember: true }),
      barChart({ id: "chart-pushes", title: t("charts.pushes"), description: t("charts.pushesText"), days, series: perMember(stats.pushes, names), perMember: true }),
      barChart({ id: "chart-denials", title: t("charts.denials"), description: t("charts.denialsText"), days, series: one("denials", t("charts.denials"), stats.denials) }),
      barChart({ id: "chart-emergencies", title: t("charts.emergencies"), description: t("charts.emergenciesText"), days, series: one("emergencies", t("charts.emergencies"), stats.emergencies) }),
      barChart({ id: "chart-failures", title: t("charts.failures"), description: t("charts.failuresText"), days, series: perMember(stats.upstream_failures, names), perMember: true }),
    );
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    draw().catch((error) => ctx.fail(messages, error));
  });
  await draw();
}
