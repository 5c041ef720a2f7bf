// A patient's choice as a FHIR R4 Consent (scope patient-privacy) and back into words. The app writes the
// same resource any third-party app could; consents written elsewhere (by an administrator, by another
// app) are described as well as their provisions allow.

import { formatDate, t } from "/web/common/i18n.js";
import { categoryName, choosablePurposes, current, dataKeyOf, dataName, isGeneral, purposeName } from "./policy.js";

const ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const RECIPIENTS = new Set(["IRCP", "PRCP"]);
// The custodian: a consent that names one is about the data that organisation (or kind) holds.
const SOURCES = new Set(["CST"]);

/**
 * choice: {who: {kind: "category", code} | {kind: "organisation", ura, name}, effect: "permit"|"deny",
 *          data: "all" | [keys], purpose: code|null, end: "YYYY-MM-DD"|""}
 */
export function buildConsent(patientRef, choice) {
  const policy = current();
  const systems = policy.systems;
  const [scopeSystem, scopeCode] = systems.scope.split("|");
  const provision = { type: choice.effect, actor: [actorFor(choice.who, systems)] };
  if (choice.end) provision.period = { end: choice.end };
  if (choice.purpose) provision.purpose = [{ system: systems.purpose, code: choice.purpose }];
  // A refusal "for any purpose" names every purpose a patient can choose: the engine lets a rule for a
  // purpose beat one for none, so a refusal naming none lost to an earlier permission for treatment and
  // changed nothing (a patient's walkthrough). Naming them all, it wins at equal specificity.
  else if (choice.effect === "deny") {
    provision.purpose = choosablePurposes().map((p) => ({ system: systems.purpose, code: p.code }));
  }
  if (choice.data !== "all") {
    provision.class = choice.data.map((key) => {
      const entry = policy.data_categories.find((c) => c.key === key);
      return { system: entry.system, code: entry.code };
    });
  }
  return {
    resourceType: "Consent",
    status: "active",
    scope: { coding: [{ system: scopeSystem, code: scopeCode }] },
    category: [{ coding: [{ system: "http://loinc.org", code: "59284-0" }] }],
    patient: { reference: patientRef },
    dateTime: new Date().toISOString(),
    policyRule: { coding: [{ system: ACT_CODE, code: choice.effect === "permit" ? "OPTIN" : "OPTOUT" }] },
    provision,
  };
}

function actorFor(who, systems) {
  const role = { coding: [{ system: systems.participation, code: "IRCP" }] };
  if (who.kind === "organisation") {
    return {
      role,
      reference: { type: "Organization", identifier: { system: systems.organisation, value: who.ura }, display: who.name },
    };
  }
  return { role, reference: { type: "Group", identifier: { system: systems.organisation_category, value: who.code } } };
}

/** The actors of a provision with one of these roles, in words. */
function actorsWithRole(provision, roles) {
  return (provision.actor || [])
    .filter((a) => ((a.role && a.role.coding) || []).some((c) => roles.has(c.code)))
    .map((a) => actorWords(a.reference || {}));
}

/** Who a provision is about, in words: its recipients, or "everyone" when it names none. */
function recipientWords(provision) {
  const names = actorsWithRole(provision, RECIPIENTS);
  return names.length ? names.join(", ") : t("consent.someone");
}

function actorWords(reference) {
  const identifier = reference.identifier || {};
  const systems = current().systems;
  if (identifier.system === systems.organisation) {
    return reference.display ? t("consent.org", { name: reference.display }) : t("consent.orgUra", { ura: identifier.value });
  }
  if (identifier.system === systems.organisation_category) return categoryName(identifier.value);
  return reference.display || identifier.value || t("log.unknown");
}

/** The data a provision covers, in words; "all your data" when it names no category (or the general one). */
function dataWords(provision) {
  return namedData(provision) || t("consent.allData");
}

/** The data categories and labels a provision names, in words; null when it covers all data. */
function namedData(provision) {
  const names = [];
  for (const coding of provision.class || []) {
    const key = dataKeyOf(coding);
    if (key && isGeneral(key)) return null;
    names.push(key ? dataName(key) : coding.code);
  }
  for (const label of provision.securityLabel || []) names.push(label.display || label.code);
  return names.length ? names.join(", ") : null;
}

/** The headline: who may (not) see which data, and whose data when the consent names where it comes from. */
function headlineOf(provision) {
  const deny = provision.type === "deny";
  const sources = actorsWithRole(provision, SOURCES);
  if (!sources.length) return t(deny ? "consent.deny" : "consent.permit", { who: recipientWords(provision), data: dataWords(provision) });
  const data = namedData(provision);
  const from = data ? t("consent.sourceData", { from: sources.join(", "), data }) : sources.join(", ");
  const recipients = actorsWithRole(provision, RECIPIENTS);
  if (!recipients.length) return t(deny ? "consent.sourceDenyAll" : "consent.sourcePermitAll", { from });
  return t(deny ? "consent.sourceDeny" : "consent.sourcePermit", { from, who: recipients.join(", ") });
}

/** A consent as a headline and detail lines, for the overview and the history. */
export function describe(consent) {
  const provision = consent.provision || {};
  const headline = headlineOf(provision);
  const details = [];
  const named = new Set((provision.purpose || []).map((p) => p.code));
  const every = named.size && choosablePurposes().every((p) => named.has(p.code));
  const purposes = every ? [] : [...named].map(purposeName);
  details.push(t("consent.for", { purposes: purposes.length ? purposes.join(", ") : t("consent.anyPurpose") }));
  const period = provision.period || {};
  if (period.start) details.push(t("consent.from", { date: formatDate(period.start) }));
  details.push(period.end ? t("consent.until", { date: formatDate(period.end) }) : t("consent.noEnd"));
  const exceptions = (provision.provision || []).map((p) =>
    t(p.type === "deny" ? "consent.exceptDeny" : "consent.exceptPermit", { data: dataWords(p) }),
  );
  if (exceptions.length) details.push(t("consent.except", { rules: exceptions.join("; ") }));
  return { headline, details };
}

/** Today's date where the patient is, as a FHIR date (the end dates a patient chooses are days). */
/** The latest end date the region accepts (rzcp.consent.validation: years 1900 to 2200). */
export const LATEST_END = "2200-12-31";

/** The problem with an end date ("YYYY-MM-DD" or empty), as a strings.json key, or null. A date field
 * that gets "31122026" typed holds 22026-03-11: checked here, before the gateway, which refused it with a
 * banner that named no field (a patient's walkthrough). */
export function endProblem(end) {
  if (!end) return null;
  if (!/^\d{4}-\d\d-\d\d$/.test(end) || end > LATEST_END) return "grant.endTooLate";
  return end < today() ? "grant.endPast" : null;
}

export function today() {
  const now = new Date();
  return new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 10);
}

export function statusWords(status) {
  if (status === "active") return t("consent.status.active");
  if (status === "inactive") return t("consent.status.inactive");
  return t("consent.status.other");
}
