// The console's shell: login, the person's roles, the navigation they allow, and the hash routes.
// Each screen lives in its own module with one `render(container, context, argument)`.

import { endSession, handleCallback, login, logout, session, LoginRefused, SessionExpired, Unreachable } from "/web/common/oauth.js";
import { currentLang, loadStrings, setLang, t, translate } from "/web/common/i18n.js";
import { el, clear, notice } from "/web/common/dom.js";
import { call, errorNotice } from "./consoleapi.js";
import * as members from "./members.js";
import * as clients from "./clients.js";
import * as health from "./health.js";
import * as audit from "./audit.js";
import * as eventDetail from "./event.js";
import * as verify from "./verify.js";
import * as charts from "./charts.js";

const CLIENT_ID = "rzcp-admin-console";
const SCOPE = "user/*.cruds user/AuditEvent.rs openid";

/** The screens, in navigation order; `role` is the one a person needs to see it. */
const SCREENS = [
  { route: "health", role: "admin", view: health, label: "nav.health" },
  { route: "members", role: "admin", view: members, label: "nav.members" },
  { route: "clients", role: "admin", view: clients, label: "nav.clients" },
  { route: "audit", role: "auditor", view: audit, label: "nav.audit" },
  { route: "event", role: "auditor", view: eventDetail, hiddenFromNav: true },
  { route: "verify", role: "auditor", view: verify, label: "nav.verify" },
  { route: "charts", role: "auditor", view: charts, label: "nav.charts" },
];

const state = { me: null, loginError: null };
const view = () => document.getElementById("view");

function allowed() {
  const roles = (state.me && state.me.roles) || [];
  return SCREENS.filter((screen) => roles.includes(screen.role));
}

function parseRoute() {
  const [route, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { route, argument: rest.map(decodeURIComponent).join("/") };
}

function drawNav() {
  const list = clear(document.getElementById("nav-list"));
  const { route } = parseRoute();
  for (const screen of allowed().filter((s) => !s.hiddenFromNav)) {
    const current = screen.route === route || (route === "event" && screen.route === "audit");
    list.append(el("li", {}, el("a", { href: `#${screen.route}`, "aria-current": current ? "page" : null }, t(screen.label))));
  }
  document.getElementById("nav").hidden = !state.me;
}

function drawLogin() {
  document.getElementById("logout").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("nav").hidden = true;
  const box = clear(view());
  box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("login.title")), el("p", {}, t("login.intro")), el("p", {}, t("login.secondFactor")));
  if (state.loginError) {
    const hint = state.loginError === "login.refused.secondFactor" ? el("p", {}, t("login.needSecondFactor")) : null;
    box.append(notice("error", el("p", {}, t(state.loginError)), hint));
  }
  box.append(
    el("button", {
      type: "button",
      id: "login",
      on: { click: () => login(CLIENT_ID, SCOPE).catch((e) => box.append(errorNotice(e))) },
    }, t("login.button")),
  );
}

async function route() {
  const status = clear(document.getElementById("status"));
  if (!session()) return drawLogin();
  drawNav();
  const screens = allowed();
  const box = clear(view());
  if (!screens.length) {
    box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("noRole.title")), notice("error", t("noRole.text")));
    return;
  }
  let { route: name, argument } = parseRoute();
  let screen = screens.find((s) => s.route === name);
  if (!screen) {
    if (name && SCREENS.some((s) => s.route === name)) status.append(notice("error", t("error.notYourRole")));
    screen = screens[0];
    argument = "";
    history.replaceState(null, "", `#${screen.route}`);
    drawNav();
  }
  try {
    await screen.view.render(box, context(), argument);
  } catch (error) {
    if (error instanceof SessionExpired) return ended();
    box.append(errorNotice(error));
  }
  const title = box.querySelector("h2");
  document.title = `${title ? title.textContent : ""} · ${t("app.title")}`;
  if (document.activeElement === document.body || !box.contains(document.activeElement)) title && title.focus({ preventScroll: true });
}

/** What every screen gets: the person, navigation, and one way to report a failure (and an ended session). */
function context() {
  return {
    me: state.me,
    go: (hash) => {
      location.hash = hash;
    },
    fail(target, error) {
      if (error instanceof SessionExpired) return ended();
      target.append(errorNotice(error));
    },
  };
}

function ended() {
  logout();
  state.me = null;
  state.loginError = "error.session";
  drawLogin();
}

async function whoAmI() {
  try {
    state.me = await call("me");
  } catch (error) {
    if (error instanceof SessionExpired) throw error;
    // The console's API could not say: fall back to the token's own claims so the person sees why.
    const claims = session().claims || {};
    state.me = { subject: claims.sub, roles: claims.roles || (claims.role ? [claims.role] : []), second_factor: (claims.amr || []).includes("otp") };
    document.getElementById("status").append(errorNotice(error));
  }
  const who = document.getElementById("who");
  who.textContent = t("app.who", { subject: state.me.subject || "", roles: (state.me.roles || []).map((r) => t(`role.${r}`)).join(", ") });
  who.hidden = false;
  document.getElementById("logout").hidden = false;
}

/** The words (a strings.json key) for a login that did not finish. The provider's own description is English
 *  and, without a matching state, could be anyone's text: it only picks one of our sentences. */
function loginErrorKey(error) {
  if (error instanceof Unreachable) return "error.unreachable";
  if (!(error instanceof LoginRefused)) return "login.failed";
  if (/second factor/i.test(error.description)) return "login.refused.secondFactor";
  if (/no role/i.test(error.description)) return "login.refused.noRole";
  return "login.refused.other";
}

async function start() {
  await loadStrings("strings.json");
  translate(document);
  document.getElementById("lang").addEventListener("click", () => {
    setLang(currentLang() === "nl" ? "en" : "nl");
    if (state.me) whoAmI().then(route); else drawLogin();
  });
  document.getElementById("lang").disabled = false; // disabled in the HTML until a click here can do something
  document.getElementById("logout").addEventListener("click", () => {
    endSession();
    state.me = null;
    state.loginError = null;
    history.replaceState(null, "", location.pathname);
    drawLogin();
  });
  try {
    await handleCallback();
  } catch (error) {
    state.loginError = loginErrorKey(error);
  }
  if (session()) {
    try {
      await whoAmI();
    } catch {
      return ended();
    }
  }
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}

start();
