// Members: the region's organisations. List them with their health, register one, suspend one that left or
// must be stopped (its systems' tokens are refused from that moment on), reinstate a suspended one.

import { t, formatMoment } from "/web/common/i18n.js";
import { el, clear, notice, table, field } from "/web/common/dom.js";
import { call } from "./consoleapi.js";
import { confirmButton } from "./confirm.js";

export function statusTag(status) {
  const kind = status === "active" ? "ok" : "bad";
  return el("span", { class: `tag ${kind}` }, t(`status.${status}`));
}

function healthTag(health) {
  if (!health) return "";
  const kind = { ok: "ok", failing: "bad" }[health.state] || "warn";
  const tag = el("span", { class: `tag ${kind}` }, t(`health.state.${health.state}`));
  if (!health.failures_24h) return tag;
  return el("span", {}, tag, " ", el("span", { class: "muted" }, t("members.failures", { count: health.failures_24h, when: formatMoment(health.last_failure) })));
}

/** The region's member categories ({code, name}); none when the API could not say (codes are shown then). */
async function loadCategories(messages, ctx) {
  try {
    return (await call("categories")).categories;
  } catch (error) {
    ctx.fail(messages, error);
    return [];
  }
}

export async function render(box, ctx) {
  const messages = el("div", { class: "messages" });
  const list = el("div", { "aria-busy": "true" });
  box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("members.title")), messages, list);
  const categories = await loadCategories(messages, ctx);
  const categoryName = (code) => (categories.find((c) => c.code === code) || { name: code }).name;

  async function refresh() {
    const { members } = await call("members");
    clear(list).removeAttribute("aria-busy");
    if (!members.length) return list.append(el("p", {}, t("members.none")));
    const rows = members.map((m) =>
      el(
        "tr",
        { dataset: { ura: m.ura } },
        el("td", {}, m.ura),
        el("td", {}, m.name),
        el("td", {}, el("span", { title: m.category }, categoryName(m.category))),
        el("td", { class: "url" }, m.endpoint),
        el("td", {}, statusTag(m.status)),
        el("td", {}, healthTag(m.health)),
        el(
          "td",
          {},
          m.status === "active"
            ? confirmButton(t("members.suspend"), t("members.suspendQuestion", { name: m.name }), () => change(m, "suspend", "members.suspended"))
            : confirmButton(t("members.reinstate"), t("members.reinstateQuestion", { name: m.name }), () => change(m, "reinstate", "members.reinstated")),
        ),
      ),
    );
    list.append(
      table(t("members.caption", { count: members.length }), [t("members.ura"), t("members.name"), t("members.category"), t("members.endpoint"), t("members.status"), t("members.health"), t("members.actions")], rows, { id: "members-table" }),
    );
  }

  async function change(member, action, done) {
    clear(messages);
    try {
      await call(`members/${encodeURIComponent(member.ura)}/${action}`, { method: "POST" });
      messages.append(notice("ok", t(done, { name: member.name })));
      await refresh();
    } catch (error) {
      ctx.fail(messages, error);
      await refresh().catch(() => {});
    }
  }

  box.append(registerForm(categories, messages, refresh, ctx));
  await refresh();
}

function registerForm(categories, messages, refresh, ctx) {
  const category = el("select", { required: true }, el("option", { value: "" }, t("form.choose")));
  for (const c of categories) category.append(el("option", { value: c.code }, `${c.name} (${c.code})`));
  const ura = el("input", { required: true, inputmode: "numeric", pattern: "[0-9]{8}", autocomplete: "off" });
  const name = el("input", { required: true, autocomplete: "off" });
  const endpoint = el("input", { type: "url", required: true, placeholder: "https://…/fhir" });
  const adapter = el("select", {}, el("option", { value: "fhir-rest" }, "fhir-rest"));
  const form = el(
    "form",
    { id: "member-form", novalidate: true },
    el("h3", { id: "member-form-title" }, t("members.register")),
    field("f-ura", t("members.ura"), ura, t("members.uraHint")),
    field("f-name", t("members.name"), name),
    field("f-category", t("members.category"), category),
    field("f-endpoint", t("members.endpoint"), endpoint, t("members.endpointHint")),
    field("f-adapter", t("members.adapter"), adapter),
    el("p", {}, el("button", { type: "submit" }, t("members.registerButton"))),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    const missing = [ura, name, category, endpoint].filter((input) => !input.checkValidity());
    if (missing.length) {
      messages.append(notice("error", t("form.invalid", { fields: missing.map((i) => form.querySelector(`label[for="${i.id}"]`).textContent).join(", ") })));
      missing[0].focus();
      return;
    }
    try {
      const created = await call("members", {
        method: "POST",
        body: { ura: ura.value.trim(), name: name.value.trim(), category: category.value, endpoint: endpoint.value.trim(), adapter: adapter.value },
      });
      messages.append(notice("ok", t("members.registered", { name: created.name, ura: created.ura })));
      form.reset();
      await refresh();
    } catch (error) {
      ctx.fail(messages, error);
    }
    messages.scrollIntoView({ block: "nearest" });
  });
  return el("section", { class: "card", "aria-labelledby": "member-form-title" }, form);
}
