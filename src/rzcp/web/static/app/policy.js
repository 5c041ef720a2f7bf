// The region's policy (GET /consent/policy) and the words for its codes: the patient reads the display
// texts of strings.json in their language; a code the region added later falls back to the policy's name.

import { t } from "/web/common/i18n.js";

let policy = null;

export async function loadPolicy() {
  const response = await fetch("/consent/policy", { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`policy answered ${response.status}`);
  policy = await response.json();
  return policy;
}

export function current() {
  return policy;
}

function worded(key, fallback) {
  const text = t(key);
  return text === key ? fallback : text;
}

export function organisationCategories() {
  return policy.organisation_categories.entries;
}

/** The data categories a patient chooses from one by one (the general "all data" one is a checkbox apart). */
export function choosableData() {
  return policy.data_categories.filter((c) => !c.general);
}

/** Purposes a patient may consent to; the emergency purpose is the region's rule, not the patient's choice. */
export function choosablePurposes() {
  return policy.purposes.filter((p) => p.code !== "ETREAT");
}

export function categoryName(code) {
  const entry = policy.organisation_categories.entries.find((e) => e.code === code);
  return worded(`org.${code}`, entry ? entry.name : code);
}

export function dataName(key) {
  const entry = policy.data_categories.find((c) => c.key === key);
  return worded(`data.${key}`, entry ? entry.name : key);
}

export function purposeName(code) {
  const entry = policy.purposes.find((p) => p.code === code);
  return worded(`purpose.${code}`, entry ? entry.name : code);
}

/** The data category key of a Consent.provision.class coding, or null when it names something else. */
export function dataKeyOf(coding) {
  const entry = policy.data_categories.find((c) => c.system === coding.system && c.code === coding.code);
  return entry ? entry.key : null;
}

export function isGeneral(key) {
  const entry = policy.data_categories.find((c) => c.key === key);
  return Boolean(entry && entry.general);
}
