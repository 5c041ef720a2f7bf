// Clients: the member systems that call the gateway, each with its public keys (a JWKS, pasted, uploaded or
// fetched from a jwks_uri). Register one, replace its keys (rotation), change its scopes (a narrowing
// refuses its tokens at once), revoke one (its tokens are refused from that moment on).

import { t } from "/web/common/i18n.js";
import { el, clear, notice, table, field } from "/web/common/dom.js";
import { call } from "./consoleapi.js";
import { confirmButton } from "./confirm.js";

const ROLES = ["member", "auditor", "admin"];

function statusTag(status) {
  return el("span", { class: `tag ${status === "active" ? "ok" : "bad"}` }, t(`status.${status}`));
}

export async function render(box, ctx) {
  const messages = el("div", { class: "messages" });
  const list = el("div", { "aria-busy": "true" });
  box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("clients.title")), messages, list);
  let memberNames = {};

  async function refresh() {
    const [{ clients }, { members }] = await Promise.all([call("clients"), call("members")]);
    memberNames = Object.fromEntries(members.map((m) => [m.ura, m.name]));
    clear(list).removeAttribute("aria-busy");
    if (!clients.length) {
      list.append(el("p", {}, t("clients.none")));
      return members;
    }
    const rows = clients.map((c) =>
      el(
        "tr",
        { dataset: { client: c.client_id } },
        el("td", {}, el("code", {}, c.client_id)),
        el("td", {}, memberNames[c.member_ura] ? `${memberNames[c.member_ura]} (${c.member_ura})` : c.member_ura),
        el("td", {}, el("code", {}, c.scope)),
        el("td", {}, t(`role.${c.role}`)),
        el("td", { class: "url" }, c.jwks_url ? c.jwks_url : t("clients.kids", { kids: (c.kids || []).join(", ") || "-" })),
        el("td", {}, statusTag(c.status)),
        el(
          "td",
          {},
          c.status === "revoked"
            ? ""
            : el(
                "span",
                { class: "actions" },
                el("button", { type: "button", class: "secondary small", onclick: () => showKeysForm(c) }, t("clients.replaceKeys")),
                " ",
                el("button", { type: "button", class: "secondary small", onclick: () => showScopeForm(c) }, t("clients.changeScope")),
                " ",
                c.status === "active" ? confirmButton(t("clients.revoke"), t("clients.revokeQuestion", { client: c.client_id }), () => revoke(c)) : "",
              ),
        ),
      ),
    );
    list.append(
      table(t("clients.caption", { count: clients.length }), [t("clients.id"), t("clients.member"), t("clients.scope"), t("clients.role"), t("clients.keys"), t("clients.status"), t("members.actions")], rows, { id: "clients-table" }),
    );
    return members;
  }

  async function revoke(client) {
    clear(messages);
    try {
      await call(`clients/${encodeURIComponent(client.client_id)}/revoke`, { method: "POST" });
      messages.append(notice("ok", t("clients.revoked", { client: client.client_id })));
    } catch (error) {
      ctx.fail(messages, error);
    }
    await refresh().catch((error) => ctx.fail(messages, error));
  }

  const keysBox = el("div");
  function showKeysForm(client) {
    clear(keysBox).append(keysForm(client, messages, refresh, ctx, () => clear(keysBox)));
    keysBox.querySelector("textarea").focus();
  }

  function showScopeForm(client) {
    clear(keysBox).append(scopeForm(client, messages, refresh, ctx, () => clear(keysBox)));
    keysBox.querySelector("input").focus();
  }

  const members = await refresh();
  box.append(keysBox, registerForm(members || [], messages, refresh, ctx));
}

/** A form that changes one client (its keys, its scopes): the card, Save and Cancel, and the round of a
 * submit: `check()` names the field in error or returns null, `body()` is what is PUT to `clients/<id>/<what>`. */
function changeForm({ id, what, title, hint, fields, button, done, check, body }, client, messages, refresh, ctx, close) {
  const form = el(
    "form",
    { id, novalidate: true },
    el("h3", { id: `${id}-title` }, title),
    el("p", { class: "muted" }, hint),
    ...fields,
    el(
      "p",
      {},
      el("button", { type: "submit" }, button),
      " ",
      el("button", { type: "button", class: "secondary", onclick: close }, t("confirm.no")),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    const invalid = check();
    if (invalid) {
      messages.append(notice("error", t("form.invalid", { fields: invalid })));
      messages.scrollIntoView({ block: "nearest" });
      return;
    }
    try {
      await call(`clients/${encodeURIComponent(client.client_id)}/${what}`, { method: "PUT", body: body() });
      messages.append(notice("ok", done));
      close();
    } catch (error) {
      ctx.fail(messages, error);
    }
    await refresh().catch((error) => ctx.fail(messages, error));
    messages.scrollIntoView({ block: "nearest" });
  });
  return el("section", { class: "card", "aria-labelledby": `${id}-title` }, form);
}

/** Key rotation: the client's keys replaced by a new JWKS (pasted or uploaded) or a jwks_uri. */
function keysForm(client, ...rest) {
  const jwks = el("textarea", { rows: "6", spellcheck: "false", class: "mono" });
  const file = el("input", { type: "file", accept: ".json,.jwks,application/json" });
  const jwksUrl = el("input", { type: "url", placeholder: "https://…/.well-known/jwks.json" });
  file.addEventListener("change", async () => {
    if (file.files.length) jwks.value = await file.files[0].text();
  });
  const url = () => jwksUrl.value.trim();
  const spec = {
    id: "keys-form",
    what: "keys",
    title: t("clients.replaceKeysTitle", { client: client.client_id }),
    hint: t("clients.replaceKeysHint"),
    fields: [
      field("f-new-jwks", t("clients.newJwks"), jwks, t("clients.jwksHint")),
      field("f-new-jwks-file", t("clients.newJwksFile"), file),
      field("f-new-jwks-url", t("clients.orJwksUrl"), jwksUrl, t("clients.jwksUrlHint")),
    ],
    button: t("clients.replaceKeysButton"),
    done: t("clients.keysReplaced", { client: client.client_id }),
    check: () => {
      if (url()) return url().startsWith("https://") ? null : t("clients.orJwksUrl");
      return parseJwks(jwks.value) ? null : t("clients.newJwks");
    },
    body: () => (url() ? { jwks_url: url() } : { jwks: parseJwks(jwks.value) }),
  };
  return changeForm(spec, client, ...rest);
}

/** The client's scopes replaced: a token they no longer cover is refused at once, a wider scope comes with
 * the next token. */
function scopeForm(client, ...rest) {
  const scope = el("input", { required: true, value: client.scope, autocomplete: "off", spellcheck: "false", class: "mono" });
  const spec = {
    id: "scope-form",
    what: "scope",
    title: t("clients.changeScopeTitle", { client: client.client_id }),
    hint: t("clients.changeScopeHint"),
    fields: [field("f-new-scope", t("clients.newScope"), scope, t("clients.scopeHint"))],
    button: t("clients.changeScopeButton"),
    done: t("clients.scopeChanged", { client: client.client_id }),
    check: () => (scope.value.trim() ? null : t("clients.newScope")),
    body: () => ({ scope: scope.value.trim() }),
  };
  return changeForm(spec, client, ...rest);
}

function registerForm(members, messages, refresh, ctx) {
  const clientId = el("input", { required: true, autocomplete: "off", pattern: "[A-Za-z0-9._:\\-]{3,64}" });
  const member = el("select", { required: true }, el("option", { value: "" }, t("form.choose")));
  for (const m of members.filter((m) => m.status === "active")) member.append(el("option", { value: m.ura }, `${m.name} (${m.ura})`));
  // a member system's least scopes: pull and read the directory, announce patients, push messages
  const scope = el("input", { required: true, value: "system/*.rs system/Patient.c system/Bundle.c", autocomplete: "off" });
  const role = el("select", {}, ROLES.map((r) => el("option", { value: r }, t(`role.${r}`))));
  const jwks = el("textarea", { rows: "6", spellcheck: "false", class: "mono" });
  const file = el("input", { type: "file", accept: ".json,.jwks,application/json" });
  const jwksUrl = el("input", { type: "url", placeholder: "https://…/.well-known/jwks.json" });
  const byKeys = el("input", { type: "radio", name: "keysource", value: "jwks", id: "ks-jwks", checked: true });
  const byUrl = el("input", { type: "radio", name: "keysource", value: "url", id: "ks-url" });
  const keysPart = el("div", {}, field("f-jwks", t("clients.jwks"), jwks, t("clients.jwksHint")), field("f-jwks-file", t("clients.jwksFile"), file));
  const urlPart = el("div", { hidden: true }, field("f-jwks-url", t("clients.jwksUrl"), jwksUrl, t("clients.jwksUrlHint")));
  const switchSource = () => {
    keysPart.hidden = !byKeys.checked;
    urlPart.hidden = !byUrl.checked;
  };
  byKeys.addEventListener("change", switchSource);
  byUrl.addEventListener("change", switchSource);
  file.addEventListener("change", async () => {
    if (file.files.length) jwks.value = await file.files[0].text();
  });

  const form = el(
    "form",
    { id: "client-form", novalidate: true },
    el("h3", { id: "client-form-title" }, t("clients.register")),
    field("f-client-id", t("clients.id"), clientId, t("clients.idHint")),
    field("f-member", t("clients.member"), member),
    field("f-scope", t("clients.scope"), scope, t("clients.scopeHint")),
    field("f-role", t("clients.role"), role),
    el(
      "fieldset",
      {},
      el("legend", {}, t("clients.keySource")),
      el("div", { class: "choice" }, byKeys, el("label", { for: "ks-jwks" }, t("clients.byJwks"))),
      el("div", { class: "choice" }, byUrl, el("label", { for: "ks-url" }, t("clients.byUrl"))),
      keysPart,
      urlPart,
    ),
    el("p", {}, el("button", { type: "submit" }, t("clients.registerButton"))),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    const problems = [clientId, member, scope].filter((input) => !input.checkValidity()).map((i) => form.querySelector(`label[for="${i.id}"]`).textContent);
    const body = { client_id: clientId.value.trim(), member_ura: member.value, scope: scope.value.trim(), role: role.value };
    if (byUrl.checked) {
      if (!jwksUrl.value.trim().startsWith("https://")) problems.push(t("clients.jwksUrl"));
      body.jwks_url = jwksUrl.value.trim();
    } else {
      const parsed = parseJwks(jwks.value);
      if (!parsed) problems.push(t("clients.jwks"));
      body.jwks = parsed;
    }
    if (problems.length) {
      messages.append(notice("error", t("form.invalid", { fields: problems.join(", ") })));
      messages.scrollIntoView({ block: "nearest" });
      return;
    }
    try {
      const created = await call("clients", { method: "POST", body });
      messages.append(notice("ok", t("clients.registered", { client: created.client_id })));
      form.reset();
      switchSource();
      await refresh();
    } catch (error) {
      ctx.fail(messages, error);
    }
    messages.scrollIntoView({ block: "nearest" });
  });
  return el("section", { class: "card", "aria-labelledby": "client-form-title" }, form);
}

/** A JWKS object with at least one key, or null when the text is not one (said in plain words by the caller). */
function parseJwks(text) {
  try {
    const value = JSON.parse(text);
    return value && Array.isArray(value.keys) && value.keys.length ? value : null;
  } catch {
    return null;
  }
}
