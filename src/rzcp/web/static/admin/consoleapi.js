// The console's JSON API (/admin/api/...) through the shared session, and every failure in plain words.

import { api, session, ApiError, SessionExpired, Unreachable } from "/web/common/oauth.js";
import { t } from "/web/common/i18n.js";
import { el, notice } from "/web/common/dom.js";

const JSON_HEADERS = { Accept: "application/json", "Content-Type": "application/json" };

/** GET (or POST with `body`) on /admin/api/<path>; returns the parsed JSON answer. */
export async function call(path, { method = "GET", body } = {}) {
  const answer = await api(`/admin/api/${path}`, { method, body, headers: JSON_HEADERS });
  return answer.body;
}

/** A query string of a form's filled-in fields (for filters that are never personal data: the charts'). */
export function query(params) {
  const pairs = Object.entries(filled(params));
  return pairs.length ? `?${new URLSearchParams(pairs)}` : "";
}

/** A form's filled-in fields (empty ones are left out), as strings. */
export function filled(params) {
  const pairs = Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== "");
  return Object.fromEntries(pairs.map(([name, value]) => [name, String(value)]));
}

/** A download (the export) needs the token too, so it cannot be a plain link: fetch it and hand the
 * browser a file. Returns the file name the gateway gave. */
export async function download(path, fallbackName, filters) {
  const current = session();
  if (!current) throw new SessionExpired();
  let response;
  try {
    response = await fetch(`/admin/api/${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${current.token}`, "Content-Type": "application/json" },
      body: JSON.stringify(filters),
    });
  } catch (e) {
    throw new Unreachable(String(e));
  }
  if (response.status === 401) throw new SessionExpired();
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="?([^";]+)"?/) || [])[1] || fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

/** What went wrong, as a person can read it, in the page's language: never the raw answer. */
function plainError(error) {
  if (error instanceof SessionExpired) return t("error.session");
  if (error instanceof Unreachable) return t("error.unreachable");
  if (error instanceof ApiError) {
    const key = `error.status.${error.status}`;
    return t(key) === key ? t("error.status.other", { status: error.status }) : t(key);
  }
  return t("error.unexpected");
}

/** Refusals whose reason is what the administrator must change (a private key pasted as a JWKS, an ftp://
 * endpoint, which URA already exists): the gateway's own words are shown, not folded away, since "the details
 * are not right" alone left them guessing (an administrator's walkthrough). */
const REASON_SHOWN = new Set([400, 409, 422]);

/** An error notice: the sentence, and the gateway's own (English) text, shown for a refusal the administrator
 * can mend and folded away otherwise. */
export function errorNotice(error) {
  const detail = error instanceof ApiError && error.outcome && error.outcome.issue ? error.message : "";
  const shown = detail && REASON_SHOWN.has(error.status);
  return notice(
    "error",
    el("p", {}, plainError(error)),
    shown ? el("p", {}, t("error.reason"), " ", el("span", { class: "mono", lang: "en" }, detail)) : null,
    detail && !shown ? el("details", { class: "technical" }, el("summary", {}, t("error.technical")), el("p", { class: "mono" }, detail)) : null,
  );
}
