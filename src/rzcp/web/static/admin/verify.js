// The audit trail's integrity: the last run of `rzcp audit verify` (from the CLI or this console) and a
// button to run it now.

import { t, formatInstant } from "/web/common/i18n.js";
import { el, clear, notice, facts } from "/web/common/dom.js";
import { call } from "./consoleapi.js";

/** The last verification in words; shared with the health overview. */
export function verifySummary(last) {
  if (!last) return el("p", { class: "verify-result" }, t("verify.never"));
  const verdict = last.ok
    ? notice("ok", el("strong", {}, t("verify.ok")), " ", t("verify.okText", { records: last.records }))
    : notice("error", el("strong", {}, t("verify.broken")), " ", t("verify.brokenText", { first: last.first_bad ?? "?" }));
  verdict.classList.add("verify-result");
  verdict.dataset.ok = String(last.ok);
  return el(
    "div",
    {},
    verdict,
    facts([
      [t("verify.ranAt"), formatInstant(last.ran_at)],
      [t("verify.by"), last.by === "cli" ? t("verify.byCli") : last.by],
      [t("verify.records"), String(last.records)],
      [t("verify.seconds"), t("verify.secondsValue", { seconds: Number(last.seconds).toFixed(2) })],
      [t("verify.message"), last.message],
    ]),
  );
}

export async function render(box, ctx) {
  const result = el("div", { id: "verify-last" });
  const messages = el("div", { class: "messages" });
  const button = el("button", { type: "button", id: "verify-now" }, t("verify.now"));
  box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("verify.title")), el("p", {}, t("verify.intro")), messages, result, el("p", {}, button));
  button.addEventListener("click", async () => {
    clear(messages);
    button.disabled = true;
    messages.append(notice("", t("verify.running")));
    try {
      const { last } = await call("audit/verify", { method: "POST" });
      clear(messages);
      clear(result).append(verifySummary(last));
    } catch (error) {
      clear(messages);
      ctx.fail(messages, error);
    }
    button.disabled = false;
  });
  const { last } = await call("audit/verify");
  result.append(verifySummary(last));
}
