// The patient's consents through the FHIR API, as any third-party app would read and write them.

import { api } from "/web/common/oauth.js";

/** All of the patient's consents (in force or not), newest change first. */
export async function listConsents(patient) {
  const query = new URLSearchParams({ patient, _count: "100" });
  const { body } = await api(`/fhir/Consent?${query}`);
  const consents = (body.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === "Consent");
  return consents.sort((a, b) => lastChanged(b).localeCompare(lastChanged(a)));
}

export function lastChanged(consent) {
  return (consent.meta && consent.meta.lastUpdated) || consent.dateTime || "";
}

export async function createConsent(resource) {
  return (await api("/fhir/Consent", { method: "POST", body: resource })).body;
}

/** Revoking keeps the consent and its history: it is set inactive, so it no longer applies from now on. */
export async function revokeConsent(consent) {
  return newVersion(consent, { ...consent, status: "inactive" });
}

/** A new end date (a FHIR date, or "" for none: until revoked), as a new version of the same consent: its
 * history shows the change, and the If-Match refuses it when the consent changed meanwhile elsewhere. */
export async function changeEnd(consent, end) {
  const provision = { ...(consent.provision || {}) };
  const period = { ...(provision.period || {}) };
  if (end) period.end = end;
  else delete period.end;
  if (Object.keys(period).length) provision.period = period;
  else delete provision.period;
  return newVersion(consent, { ...consent, provision });
}

/** `changed` as the next version of `consent`; If-Match refuses it when the consent changed meanwhile. */
async function newVersion(consent, changed) {
  const headers = consent.meta && consent.meta.versionId ? { "If-Match": `W/"${consent.meta.versionId}"` } : {};
  return (await api(`/fhir/Consent/${encodeURIComponent(consent.id)}`, { method: "PUT", body: changed, headers })).body;
}

/** The versions of one consent, newest first: [{version, when, resource|null, deleted}]. */
export async function consentHistory(id) {
  const { body } = await api(`/fhir/Consent/${encodeURIComponent(id)}/_history`);
  return (body.entry || []).map((entry) => {
    const resource = entry.resource || null;
    const method = (entry.request && entry.request.method) || "";
    return {
      version: resource && resource.meta ? resource.meta.versionId : (entry.response && entry.response.etag) || "",
      when: (resource && resource.meta && resource.meta.lastUpdated) || (entry.response && entry.response.lastModified) || "",
      resource,
      method,
      deleted: !resource || method === "DELETE",
    };
  });
}
