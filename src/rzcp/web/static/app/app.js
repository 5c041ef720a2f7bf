// The patient app: boots the language and the region's policy, finishes a login, and shows one screen at
// a time from the address (#overview, #grant, #history, #history/<id>, #log). Every failure a patient can
// meet ends in `fail`, which says in plain words what happened and what they can do.

import { currentLang, loadStrings, setLang, t, translate } from "/web/common/i18n.js";
import { ApiError, SessionExpired, Unreachable, endSession, handleCallback, login, logout, session } from "/web/common/oauth.js";
import { byId } from "/web/common/dom.js";
import { renderGrant } from "./grant.js";
import { renderHistory } from "./history.js";
import { renderLog } from "./log.js";
import { renderOverview } from "./overview.js";
import { loadPolicy } from "./policy.js";

const CLIENT_ID = "rzcp-patient-app";
const SCOPE = "patient/Patient.rs patient/Consent.cruds patient/AuditEvent.rs patient/Organization.rs launch/patient openid";
// Set while logged in and removed on logout: a missing session with this still set means it expired.
const ACTIVE = "rzcp.app.active";
const VIEWS = ["login", "loading", "overview", "grant", "history", "log"];
const SCREENS = { overview: renderOverview, grant: renderGrant, history: renderHistory, log: renderLog };

let expiryTimer = null;
let rendering = 0;
// A message for the next screen (e.g. "saved"), shown once it is there.
let pending = null;
const PATIENT_DATA = ["overview-active", "overview-revoked", "history-list", "log-list", "log-total", "org-options", "preview-body"];

function show(view) {
  for (const name of VIEWS) byId(`view-${name}`).hidden = name !== view;
}

export function notify(kind, text, action) {
  const box = byId("notice");
  box.className = `notice ${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  byId("notice-text").textContent = text;
  const button = byId("notice-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = action.run;
  }
  box.hidden = false;
}

function clearNotice() {
  byId("notice").hidden = true;
}

/** Turns any failure into words for the patient; never a status code, JSON or a stack trace. */
export function fail(error, { notFound = "error.notFound", invalid = "error.invalid" } = {}) {
  if (error instanceof SessionExpired) return expired();
  if (error instanceof Unreachable) {
    return notify("error", t("error.unreachable"), { label: t("error.retry"), run: () => route() });
  }
  if (error instanceof ApiError) {
    const key =
      error.status === 404 || error.status === 410
        ? notFound
        : error.status === 403
          ? "error.refused"
          : error.status === 409 || error.status === 412
            ? "error.conflict"
            : error.status >= 500
              ? "error.server"
              : invalid;
    return notify("error", t(key));
  }
  console.error(error);
  return notify("error", t("error.server"));
}

/** Empties what the screens showed of the patient: hidden, it stayed in the page after logging out, for the
 * next person at a shared computer to read (a patient's walkthrough). */
function forgetPatientData() {
  for (const id of PATIENT_DATA) byId(id).replaceChildren();
  byId("log-more")?.remove();
  byId("grant-form").reset();
  byId("org-results").hidden = true;
}

function expired() {
  logout();
  forgetPatientData();
  clearTimeout(expiryTimer);
  byId("nav").hidden = true;
  byId("logout").hidden = true;
  show("login");
  notify("error", t("error.expired"), { label: t("error.loginAgain"), run: startLogin });
  byId("notice-action").focus(); // the keyboard is where the way on is, not on the page's body (a walkthrough)
}

async function startLogin() {
  sessionStorage.removeItem(ACTIVE);
  try {
    await login(CLIENT_ID, SCOPE);
  } catch (error) {
    fail(error);
  }
}

function patientRef() {
  const current = session();
  return current && current.patient ? `Patient/${current.patient}` : null;
}

/** Shows the screen the address names; a screen that loads slowly never overwrites a later one. */
export async function route() {
  const current = session();
  if (!current) {
    if (sessionStorage.getItem(ACTIVE)) return expired();
    byId("nav").hidden = true;
    byId("logout").hidden = true;
    return show("login");
  }
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const screen = SCREENS[name] ? name : "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === screen) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  byId("nav").hidden = false;
  byId("logout").hidden = false;
  const mine = ++rendering;
  const context = {
    patient: patientRef(),
    arg: rest.join("/") ? decodeURIComponent(rest.join("/")) : null,
    stillCurrent: () => mine === rendering,
    notify,
    clearNotice,
    fail,
    go: (hash, message) => {
      pending = message || null;
      if (location.hash === hash) arrive();
      else location.hash = hash;
    },
  };
  show(screen);
  try {
    await SCREENS[screen](context);
    // an address of no screen (a typed or old link, such as #access-log) says so, over the overview
    if (name && !SCREENS[name] && context.stillCurrent()) notify("", t("nav.noSuchPage"));
  } catch (error) {
    if (context.stillCurrent()) fail(error);
  }
}

function watchExpiry() {
  const current = session();
  clearTimeout(expiryTimer);
  if (current) expiryTimer = setTimeout(expired, Math.max(current.expiresAt - Date.now(), 0));
}

async function boot() {
  await loadStrings("strings.json");
  translate(document);
  byId("lang").addEventListener("click", () => {
    setLang(currentLang() === "nl" ? "en" : "nl");
    byId("lang").setAttribute("lang", currentLang() === "nl" ? "en" : "nl");
    route();
  });
  byId("lang").setAttribute("lang", currentLang() === "nl" ? "en" : "nl");
  byId("lang").disabled = false; // disabled in the HTML until a click here can do something
  byId("login").addEventListener("click", startLogin);
  byId("logout").addEventListener("click", () => {
    endSession();
    sessionStorage.removeItem(ACTIVE);
    clearTimeout(expiryTimer);
    forgetPatientData();
    if (location.hash) {
      pending = t("loggedOut"); // shown once the address has changed: the change cleared it before
      location.hash = "";
    } else {
      route();
      notify("ok", t("loggedOut"));
    }
  });
  show("loading");
  try {
    await loadPolicy();
  } catch {
    show("login");
    return notify("error", t("error.unreachable"), { label: t("error.retry"), run: () => location.reload() });
  }
  try {
    if (await handleCallback()) sessionStorage.setItem(ACTIVE, "1");
  } catch (error) {
    show("login");
    return error instanceof Unreachable ? fail(error) : notify("error", t("error.login"));
  }
  watchExpiry();
  window.addEventListener("hashchange", arrive);
  await route();
}

async function arrive() {
  clearNotice();
  const message = pending;
  pending = null;
  await route();
  if (message) notify("ok", message);
  focusHeading();
}

function focusHeading() {
  if (document.activeElement === byId("notice-action")) return; // the way on after an expired session
  const visible = VIEWS.map((v) => byId(`view-${v}`)).find((v) => !v.hidden);
  const heading = visible && visible.querySelector("h2");
  if (heading) heading.focus();
}

boot();
