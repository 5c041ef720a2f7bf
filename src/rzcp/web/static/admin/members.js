// Members: the region's organisations. List them with their health, register one, change one (a new FHIR
// address or credentials after a vendor move, its capacity), suspend one that left or must be stopped (its
// systems' tokens are refused from that moment on), reinstate a suspended one.

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

/** How the gateway reaches the member: its authentication (the kind only, never the secret), and its own
 * timeout and capacity where they differ from the gateway's defaults. */
function connection(member) {
  const parts = [t(`members.auth.${member.auth || "none"}`)];
  if (member.timeout != null) parts.push(t("members.timeoutShown", { seconds: member.timeout }));
  if (member.max_pulls != null) parts.push(t("members.maxPullsShown", { count: member.max_pulls }));
  return parts.join(" · ");
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
        el("td", {}, connection(m)),
        el("td", {}, statusTag(m.status)),
        el("td", {}, healthTag(m.health)),
        el(
          "td",
          {},
          el(
            "span",
            { class: "actions" },
            el("button", { type: "button", class: "secondary small", onclick: () => showEditForm(m) }, t("members.change")),
            " ",
            m.status === "active"
              ? confirmButton(t("members.suspend"), t("members.suspendQuestion", { name: m.name }), () => change(m, "suspend", "members.suspended"))
              : confirmButton(t("members.reinstate"), t("members.reinstateQuestion", { name: m.name }), () => change(m, "reinstate", "members.reinstated")),
          ),
        ),
      ),
    );
    list.append(
      table(t("members.caption", { count: members.length }), [t("members.ura"), t("members.name"), t("members.category"), t("members.endpoint"), t("members.connection"), t("members.status"), t("members.health"), t("members.actions")], rows, { id: "members-table" }),
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

  const editBox = el("div");
  function showEditForm(member) {
    clear(editBox).append(editForm(member, messages, refresh, ctx, () => clear(editBox)));
    editBox.querySelector("input").focus();
  }

  box.append(editBox, registerForm(categories, messages, refresh, ctx));
  await refresh();
}

/** The member changed in place: only what the administrator changed is sent (PATCH, a JSON merge patch:
 * an emptied AGB, timeout or capacity is null, back to none or to the gateway's default). A token or key is
 * never shown: "keep" leaves the one the gateway holds. */
function editForm(member, messages, refresh, ctx, close) {
  const name = el("input", { required: true, value: member.name, autocomplete: "off" });
  const endpoint = el("input", { type: "url", required: true, value: member.endpoint });
  const agb = el("input", { inputmode: "numeric", pattern: "[0-9]{8}", value: member.agb || "", autocomplete: "off" });
  const timeout = el("input", { type: "number", min: "0.1", max: "120", step: "0.1", value: member.timeout ?? "" });
  const maxPulls = el("input", { type: "number", min: "1", max: "1000", step: "1", value: member.max_pulls ?? "" });
  const kind = el("select", {}, ...["keep", "keep-moved", "none", "bearer", "smart-backend"].map((k) => el("option", { value: k }, t(`members.auth.${k}`))));
  const token = el("input", { type: "password", autocomplete: "off" });
  const tokenUrl = el("input", { type: "url", placeholder: "https://…/token" });
  const clientId = el("input", { autocomplete: "off" });
  const keyId = el("input", { autocomplete: "off" });
  const alg = el("select", {}, el("option", { value: "RS384" }, "RS384"), el("option", { value: "ES384" }, "ES384"));
  const key = el("textarea", { rows: "5", spellcheck: "false", class: "mono" });
  const bearerBox = el("div", { hidden: true }, field("f-auth-token", t("members.auth.token"), token));
  const smartBox = el(
    "div",
    { hidden: true },
    field("f-auth-token-url", t("members.auth.tokenUrl"), tokenUrl),
    field("f-auth-client-id", t("members.auth.clientId"), clientId),
    field("f-auth-key-id", t("members.auth.keyId"), keyId),
    field("f-auth-alg", t("members.auth.alg"), alg),
    field("f-auth-key", t("members.auth.key"), key, t("members.auth.keyHint")),
  );
  kind.addEventListener("change", () => {
    bearerBox.hidden = kind.value !== "bearer";
    smartBox.hidden = kind.value !== "smart-backend";
  });
  const label = (input) => form.querySelector(`label[for="${input.id}"]`).textContent;
  const form = el(
    "form",
    { id: "member-edit-form", novalidate: true },
    el("h3", { id: "member-edit-title" }, t("members.changeTitle", { name: member.name })),
    el("p", { class: "muted" }, t("members.changeHint")),
    field("f-edit-name", t("members.name"), name),
    field("f-edit-endpoint", t("members.endpoint"), endpoint, t("members.endpointHint")),
    field("f-edit-agb", t("members.agb"), agb, t("members.agbHint")),
    field("f-edit-timeout", t("members.timeout"), timeout, t("members.timeoutHint")),
    field("f-edit-max-pulls", t("members.maxPulls"), maxPulls, t("members.maxPullsHint")),
    field("f-edit-auth", t("members.auth.label", { current: t(`members.auth.${member.auth || "none"}`) }), kind),
    bearerBox,
    smartBox,
    el("p", {}, el("button", { type: "submit" }, t("members.changeButton")), " ", el("button", { type: "button", class: "secondary", onclick: close }, t("confirm.no"))),
  );

  function body() {
    const patch = {};
    if (name.value.trim() !== member.name) patch.name = name.value.trim();
    if (endpoint.value.trim() !== member.endpoint) patch.endpoint = endpoint.value.trim();
    if (agb.value.trim() !== (member.agb || "")) patch.agb = agb.value.trim() || null;
    const number = (input, current) => (input.value === "" ? (current == null ? undefined : null) : Number(input.value) === current ? undefined : Number(input.value));
    const newTimeout = number(timeout, member.timeout);
    if (newTimeout !== undefined) patch.timeout = newTimeout;
    const newMaxPulls = number(maxPulls, member.max_pulls);
    if (newMaxPulls !== undefined) patch.max_pulls = newMaxPulls;
    // "keep" sends nothing: a move to another server is then refused, so a token never follows unasked
    if (kind.value === "keep-moved") patch.auth = { kind: "keep" };
    if (kind.value === "none") patch.auth = { kind: "none" };
    if (kind.value === "bearer") patch.auth = { kind: "bearer", token: token.value };
    if (kind.value === "smart-backend") {
      patch.auth = { kind: "smart-backend", token_url: tokenUrl.value.trim(), client_id: clientId.value.trim(), private_key: key.value, algorithm: alg.value };
      if (keyId.value.trim()) patch.auth.key_id = keyId.value.trim();
    }
    return patch;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    const required = kind.value === "bearer" ? [token] : kind.value === "smart-backend" ? [tokenUrl, clientId, key] : [];
    const invalid = [name, endpoint, agb, timeout, maxPulls].filter((input) => !input.checkValidity());
    invalid.push(...required.filter((input) => !input.value.trim()));
    if (invalid.length) {
      messages.append(notice("error", t("form.invalid", { fields: invalid.map(label).join(", ") })));
      invalid[0].focus();
      return;
    }
    const patch = body();
    if (!Object.keys(patch).length) {
      messages.append(notice("", t("members.unchanged")));
      return;
    }
    try {
      const changed = await call(`members/${encodeURIComponent(member.ura)}`, { method: "PATCH", body: patch });
      messages.append(notice("ok", t("members.changed", { name: changed.name })));
      close();
    } catch (error) {
      ctx.fail(messages, error);
    }
    await refresh().catch((error) => ctx.fail(messages, error));
    messages.scrollIntoView({ block: "nearest" });
  });
  return el("section", { class: "card", "aria-labelledby": "member-edit-title" }, form);
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
