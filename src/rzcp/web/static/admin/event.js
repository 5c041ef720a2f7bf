// One event of the audit trail in full: what happened, the decision, and the consent (the version) that
// decided it; the FHIR record itself is available for whoever needs every field.

import { t, formatInstant } from "/web/common/i18n.js";
import { el, facts } from "/web/common/dom.js";
import { call } from "./consoleapi.js";
import { outcomeTag } from "./audit.js";

function codingText(value) {
  const codings = Array.isArray(value) ? value : value && value.coding ? value.coding : value ? [value] : [];
  return codings.map((c) => c.display || c.code).filter(Boolean).join(", ");
}

/** A code of the AuditEvent (agent type, entity type) in words when the console knows it. */
function named(prefix, code, fallback) {
  const text = t(`${prefix}.${code}`);
  return text === `${prefix}.${code}` ? fallback || code : text;
}

function who(agent) {
  const w = agent.who || {};
  const id = w.identifier ? `${w.identifier.value}` : "";
  return [w.display, w.reference, id].filter(Boolean).join(" · ");
}

function technical(label, resource) {
  return el("details", { class: "technical" }, el("summary", {}, label), el("pre", { class: "mono" }, JSON.stringify(resource, null, 2)));
}

/** One decision in words: outcome, kind of data, member, and what decided it (the consent, or the region's
 * rule: no consent at all is a refusal too, by the region's default). */
function decisionText(item, withDecision = true) {
  const what = [withDecision ? t(`decision.${item.decision}`) : "", item.data_class, item.source ? t("event.fromMember", { member: item.source_name ? `${item.source_name} (${item.source})` : item.source }) : ""].filter(Boolean).join(" ");
  const ruleKey = `basis.${item.rule}`;
  const rule = item.rule && t(ruleKey) !== ruleKey ? t(ruleKey) : item.rule; // a rule the page knows no words for: its code
  const basis = item.consents.length ? item.consents.join(", ") : rule || "";
  return basis ? `${what}: ${basis}` : what;
}

function consentPart(consent, decision) {
  const part = el("section", { "aria-labelledby": "consent-title", id: "event-consent" }, el("h3", { id: "consent-title" }, t("event.consentTitle")));
  if (decision) {
    const items = decision.items || [];
    // Permitted for one member and denied for another is neither: the tag says "partly", and only then
    // does each reason repeat its own decision (it read "permitted permitted Condition ...").
    const mixed = new Set(items.map((i) => i.decision)).size > 1;
    const tag = mixed
      ? el("span", { class: "tag warn" }, t("decision.mixed"))
      : el("span", { class: `tag ${decision.decision === "permit" ? "ok" : "bad"}` }, t(`decision.${decision.decision}`));
    const reasons = items.map((i) => decisionText(i));
    const inline = items.map((i) => decisionText(i, mixed));
    // A pull is decided per member and data type: many reasons read better as a list, folded away.
    part.append(
      reasons.length > 3
        ? el("details", { id: "event-decision" }, el("summary", {}, tag, " ", t("event.decisions", { count: reasons.length })), el("ul", {}, reasons.map((r) => el("li", {}, r))))
        : el("p", { id: "event-decision" }, tag, inline.length ? ": " : "", inline.join("; ")),
    );
    if (consent) {
      const decided = (decision.by_shown_consent || []).map((i) => reasons[i]);
      part.append(el("div", { id: "event-consent-decided" }, el("p", {}, t("event.consentDecided", { count: decided.length, total: reasons.length })), el("ul", {}, decided.map((r) => el("li", {}, r)))));
    }
  }
  if (!consent) {
    part.append(el("p", {}, t("event.noConsent")));
    return part;
  }
  const provision = consent.provision || {};
  const actors = (provision.actor || []).map((a) => {
    const r = a.reference || {};
    return r.display || (r.identifier && r.identifier.value) || r.reference || "";
  });
  const period = provision.period || {};
  part.append(
    facts([
      [t("event.consentId"), `Consent/${consent.id}${consent.meta && consent.meta.versionId ? ` (${t("event.version", { version: consent.meta.versionId })})` : ""}`],
      [t("event.consentStatus"), consent.status],
      [t("event.consentStored"), consent.meta && consent.meta.lastUpdated ? formatInstant(consent.meta.lastUpdated) : ""],
      [t("event.consentDate"), formatInstant(consent.dateTime)],
      [t("event.consentRule"), provision.type ? t(`provision.${provision.type}`) : ""],
      [t("event.consentActors"), actors.filter(Boolean).join(", ")],
      [t("event.consentPeriod"), period.start || period.end ? `${formatInstant(period.start)} – ${formatInstant(period.end)}` : ""],
      [t("event.consentPurpose"), codingText(provision.purpose)],
      [t("event.consentData"), (provision.provision || []).length ? t("event.consentNested", { count: provision.provision.length }) : ""],
    ]),
    technical(t("event.consentJson"), consent),
  );
  return part;
}

export async function render(box, ctx, id) {
  const back = el("p", {}, el("a", { href: "#audit" }, t("event.back")));
  if (!id) {
    box.append(el("h2", { id: "view-title", tabindex: "-1" }, t("event.title")), back);
    return;
  }
  const { summary: s, event, consent, decision } = await call(`audit/events/${encodeURIComponent(id)}`);
  box.append(
    el("h2", { id: "view-title", tabindex: "-1" }, t("event.heading", { when: formatInstant(s.recorded) })),
    back,
    facts([
      [t("audit.when"), formatInstant(s.recorded)],
      [t("audit.kind"), t(`kind.${s.kind}`) === `kind.${s.kind}` ? s.kind : t(`kind.${s.kind}`)],
      [t("event.action"), t(`action.${s.action}`)],
      [t("audit.outcome"), outcomeTag(s.outcome, s)],
      [t("event.outcomeDesc"), event.outcomeDesc || ""],
      [t("audit.member"), s.member_name ? `${s.member_name} (${s.member_ura})` : s.member_ura],
      [t("event.client"), s.client_id],
      [t("audit.practitioner"), s.practitioner],
      [t("audit.patient"), s.patient],
      [t("audit.purpose"), s.purpose ? `${t(`purpose.${s.purpose}`)} (${s.purpose})` : ""],
      [t("audit.emergency"), s.emergency ? t("emergency.true") : t("emergency.false")],
      [t("audit.what"), s.what],
    ]),
    consentPart(consent, decision),
  );
  const agents = (event.agent || []).map((a) => {
    const type = a.type && a.type.coding ? a.type.coding[0] : a.type || {};
    return [named("agentType", type.code, type.display || t("event.agent")), who(a)];
  });
  // Each entity with its kind and details (what was returned: the type and how many), not only its role.
  const entities = (event.entity || []).map((e) => [
    (e.role
      ? named("entityRole", e.role.code, e.type && (e.type.display || e.type.code))
      : named("entityType", e.type && e.type.code, e.type && (e.type.display || e.type.code))) || t("event.entity"),
    [
      e.what && (e.what.reference || e.what.display || (e.what.identifier && e.what.identifier.value)),
      e.type && e.type.code,
      e.description,
      ...(e.detail || []).map((d) => `${d.type}: ${d.valueString ?? ""}`),
    ]
      .filter(Boolean)
      .join(" · "),
  ]);
  box.append(
    el(
      "section",
      { "aria-labelledby": "record-title" },
      el("h3", { id: "record-title" }, t("event.recordTitle")),
      facts([
        [t("event.type"), [codingText(event.type), codingText(event.subtype)].filter(Boolean).join(" / ")],
        [t("event.period"), event.period ? `${formatInstant(event.period.start)} – ${formatInstant(event.period.end)}` : ""],
        [t("event.source"), event.source && event.source.observer ? event.source.observer.display || event.source.observer.reference || "" : ""],
        ...agents,
        ...entities,
      ]),
      technical(t("event.recordJson"), event),
    ),
  );
}
