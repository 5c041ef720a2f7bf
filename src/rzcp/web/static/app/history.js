// The consents' history: every version the gateway kept, so a patient sees when they gave, changed or
// revoked something. `#history/<id>` shows one consent; an id that is not theirs shows a refusal, no data.

import { formatMoment, t } from "/web/common/i18n.js";
import { describe, statusWords } from "./consent.js";
import { consentHistory, listConsents } from "./consents.js";
import { byId, clear, el } from "/web/common/dom.js";

export async function renderHistory(ctx) {
  const list = clear(byId("history-list"));
  byId("history-all").hidden = !ctx.arg;
  list.append(el("p", { class: "muted" }, t("loading")));
  let ids;
  if (ctx.arg) {
    ids = [ctx.arg];
  } else {
    ids = (await listConsents(ctx.patient)).map((c) => c.id);
  }
  let histories;
  try {
    histories = await Promise.all(ids.map(async (id) => ({ id, versions: await consentHistory(id) })));
  } catch (error) {
    if (!ctx.stillCurrent()) return;
    clear(list);
    // A malformed id (400) is no consent of theirs either; it was never about saving anything.
    ctx.fail(error, { notFound: "error.notFound", invalid: "error.notFound" });
    return;
  }
  if (!ctx.stillCurrent()) return;
  clear(list);
  if (!histories.length) list.append(el("p", {}, t("history.none")));
  for (const { id, versions } of histories) list.append(historyCard(id, versions, ctx.arg !== null));
}

function historyCard(id, versions, alone) {
  const latest = versions.find((v) => v.resource);
  const title = latest ? describe(latest.resource).headline : id;
  const items = versions.map((v, index) => {
    const what = v.deleted
      ? t("history.deleted")
      : index === versions.length - 1
        ? t("history.created")
        : `${t("history.changed")}: ${statusWords(v.resource.status)}`;
    const summary = v.resource ? describe(v.resource) : null;
    return el(
      "li",
      { class: "version" },
      el("p", { class: "headline" }, t("history.version", { version: v.version, date: formatMoment(v.when) }), " — ", what),
      summary ? el("p", {}, summary.headline) : null,
      summary ? el("p", { class: "muted" }, summary.details.join(" · ")) : null,
    );
  });
  return el(
    "article",
    { class: "card history", "data-consent": id },
    el("h3", {}, alone ? t("history.one") : title),
    el("ol", { class: "plain versions" }, items),
  );
}
