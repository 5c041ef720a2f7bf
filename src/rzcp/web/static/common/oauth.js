// Login with the authorization code flow and PKCE (S256) through the gateway's own authorize endpoint,
// exactly as a third-party app would: the page holds no secret, only the short-lived token, and only in
// sessionStorage (gone when the tab closes). Every API call goes through `api`, which turns the failures a
// person can meet into errors they can be told about: an expired session, an unreachable server, a refusal.

const KEY = "rzcp.session";
const PENDING = "rzcp.pending";

export class SessionExpired extends Error {}
/** The login did not finish and nothing the address bar said can be trusted (no pending login, wrong state,
 *  or a token exchange that failed): say only that it did not work. */
export class LoginFailed extends Error {}
/** The identity provider refused a login this tab started (the state matched). `description` is the
 *  provider's English text: for choosing a translated sentence, never for showing as is. */
export class LoginRefused extends Error {
  constructor(code, description) {
    super(code);
    this.code = code;
    this.description = description;
  }
}
export class Unreachable extends Error {}
export class ApiError extends Error {
  constructor(status, outcome) {
    super(outcomeText(outcome) || `HTTP ${status}`);
    this.status = status;
    this.outcome = outcome;
  }
}

function outcomeText(outcome) {
  const issues = (outcome && outcome.issue) || [];
  return issues.map((i) => i.diagnostics || (i.details && i.details.text) || "").filter(Boolean).join("; ");
}

function base64url(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(bytes = 48) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

async function discover() {
  let response;
  try {
    response = await fetch("/fhir/.well-known/smart-configuration", { headers: { Accept: "application/json" } });
  } catch (e) {
    throw new Unreachable(String(e));
  }
  if (!response.ok) throw new Unreachable(`discovery answered ${response.status}`);
  return response.json();
}

function redirectUri() {
  return location.origin + location.pathname.replace(/[^/]*$/, "");
}

/** Sends the browser to the authorize endpoint; `handleCallback` finishes on the way back. */
export async function login(clientId, scope) {
  const config = await discover();
  const verifier = randomString(48);
  const state = randomString(24);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, clientId, token: config.token_endpoint }));
  const params = new URLSearchParams({
    response_type: "code",
    client_id: clientId,
    redirect_uri: redirectUri(),
    scope,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
    aud: location.origin + "/fhir",
  });
  location.assign(`${config.authorization_endpoint}?${params}`);
}

/** On the redirect back: trades the code for a token. Returns the session, or null when not a callback. */
export async function handleCallback() {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return null;
  history.replaceState(null, "", location.pathname); // the code never stays in the address bar or history
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  // The state first: anyone can send a link with an `error_description` of their choosing to this page.
  if (!pending || query.get("state") !== pending.state) throw new LoginFailed("no login pending with this state");
  if (query.has("error")) throw new LoginRefused(query.get("error"), query.get("error_description") || "");
  let response;
  try {
    response = await fetch(pending.token, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code: query.get("code"),
        redirect_uri: redirectUri(),
        client_id: pending.clientId,
        code_verifier: pending.verifier,
      }),
    });
  } catch (e) {
    throw new Unreachable(String(e));
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new LoginFailed(`token endpoint answered ${response.status}`);
  const session = {
    token: body.access_token,
    scope: body.scope,
    patient: body.patient || null,
    expiresAt: Date.now() + body.expires_in * 1000,
    claims: claimsOf(body.access_token),
  };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

/** The current session, or null when there is none or it has expired. */
export function session() {
  const stored = JSON.parse(sessionStorage.getItem(KEY) || "null");
  if (!stored || stored.expiresAt <= Date.now()) return null;
  return stored;
}

/** Forgets the session in this tab (an expired one, or after `endSession`). */
export function logout() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(PENDING);
}

/** The logout button: ends the session at the gateway too (RFC 7009 revocation), so a copy of the token
 *  stops working at once, not only when it expires. */
export async function endSession() {
  const current = JSON.parse(sessionStorage.getItem(KEY) || "null");
  logout();
  if (!current) return;
  try {
    const config = await discover();
    await fetch(config.revocation_endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: current.token, client_id: current.claims.client_id || "" }),
      keepalive: true,
    });
  } catch {
    // unreachable: the token still ends when it expires, and this tab has forgotten it already
  }
}

/** A call to the gateway with the session's token; throws SessionExpired, Unreachable or ApiError. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const current = session();
  if (!current) throw new SessionExpired();
  const init = { method, headers: { Accept: "application/fhir+json", Authorization: `Bearer ${current.token}`, ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    if (!init.headers["Content-Type"]) init.headers["Content-Type"] = "application/fhir+json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Unreachable(String(e));
  }
  if (response.status === 401) {
    logout();
    throw new SessionExpired();
  }
  const type = response.headers.get("Content-Type") || "";
  const parsed = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) throw new ApiError(response.status, parsed);
  return { body: parsed, headers: response.headers, status: response.status };
}
