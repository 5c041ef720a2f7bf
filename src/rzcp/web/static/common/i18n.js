// Every text of an app, in Dutch and English, comes from its one strings.json ({"nl": {...}, "en": {...}}).
// Elements carry `data-i18n="key"` (text) or `data-i18n-attr="attr:key;attr:key"` (attributes); code calls t().

const CHOICE = "rzcp.lang";
let strings = { nl: {}, en: {} };
let lang = "nl";

export async function loadStrings(url) {
  strings = await (await fetch(url, { headers: { Accept: "application/json" } })).json();
  const asked = new URLSearchParams(location.search).get("lang");
  const stored = localStorage.getItem(CHOICE);
  lang = asked in strings ? asked : stored in strings ? stored : "nl";
  document.documentElement.lang = lang;
  return lang;
}

export function currentLang() {
  return lang;
}

export function setLang(next) {
  if (!(next in strings)) return;
  lang = next;
  localStorage.setItem(CHOICE, next);
  document.documentElement.lang = next;
  translate(document);
}

/** The text for `key` with `{name}` placeholders filled in; the key itself when missing (visible in tests).
 * A count of one takes the `key#one` text where there is one ("1 member", not "1 members"). */
export function t(key, vars = {}) {
  const one = vars.count === 1 && (strings[lang][`${key}#one`] ?? strings.nl[`${key}#one`]);
  const text = one || (strings[lang][key] ?? strings.nl[key] ?? key);
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

export function translate(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr.trim(), t(key.trim()));
    }
  }
}

/** A date and time as people read them in the chosen language. */
export function formatMoment(iso) {
  if (!iso) return "";
  const locale = lang === "nl" ? "nl-NL" : "en-GB";
  return new Date(iso).toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
}

/** A moment of the audit trail: in the region's time, which the console's date filters use, to the second and
 * with its zone (CET or CEST). In the browser's own zone, without one, a record of 23:21 UTC on 7 December
 * did not match a search "until 7 December", which is the region's 7 December (an administrator's walkthrough). */
export function formatInstant(iso) {
  if (!iso) return "";
  const locale = lang === "nl" ? "nl-NL" : "en-GB";
  return new Date(iso).toLocaleString(locale, {
    timeZone: "Europe/Amsterdam",
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZoneName: "short",
  });
}

export function formatDate(iso) {
  if (!iso) return "";
  const locale = lang === "nl" ? "nl-NL" : "en-GB";
  return new Date(iso).toLocaleDateString(locale, { dateStyle: "medium" });
}
