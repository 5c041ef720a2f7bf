// "What would they see?": the gateway's own dry-run decision (POST /fhir/Consent/$evaluate) for the chosen
// recipient and each kind of data, twice: as things stand, and with the choice being made as a `draft`
// Consent beside the saved ones. Both answers are the engine's own, so the preview says exactly what saving
// will change, a refusal made earlier included.

import { api } from "/web/common/oauth.js";
import { choosableData } from "./policy.js";

const decisions = new Map();

/** Saved consents changed: decisions asked before may no longer hold. */
export function forgetDecisions() {
  decisions.clear();
}

function parameters(values, draft) {
  const parameter = Object.entries(values)
    .filter(([, value]) => value)
    .map(([name, value]) => ({ name, valueString: value }));
  if (draft) parameter.push({ name: "draft", resource: draft });
  return { resourceType: "Parameters", parameter };
}

/** The gateway takes at most this many questions in one $evaluate. */
const MAX_QUESTIONS = 50;

/** One $evaluate call for every kind of data (a `question` each; more calls only past MAX_QUESTIONS): one
 *  request, and one audit record, per preview rather than one per kind. */
async function decideAll(who, purpose, draft) {
  const categories = choosableData();
  const chunks = [];
  for (let i = 0; i < categories.length; i += MAX_QUESTIONS) chunks.push(categories.slice(i, i + MAX_QUESTIONS));
  const answers = await Promise.all(chunks.map((chunk) => decideChunk(who, purpose, draft, chunk)));
  return new Map(answers.flat());
}

async function decideChunk(who, purpose, draft, categories) {
  const values = {
    requesterCategory: who.kind === "category" ? who.code : null,
    requester: who.kind === "organisation" ? who.ura : null,
    purpose: purpose || "TREAT",
  };
  const body = parameters(values, draft);
  for (const category of categories) {
    const cover = category.covers[0];
    const part = [{ name: "resourceType", valueCode: cover.resource }];
    if (cover.category) part.push({ name: "code", valueString: cover.category[0] });
    body.parameter.push({ name: "question", part });
  }
  const { body: answer } = await api("/fhir/Consent/$evaluate", { method: "POST", body });
  const results = (answer.parameter || []).filter((p) => p.name === "result");
  return categories.map((category, i) => {
    const part = (name) => ((results[i] || {}).part || []).find((p) => p.name === name) || {};
    return [category.key, { decision: part("decision").valueCode, basis: part("basis").valueCode }];
  });
}

/** Per data category key: {decision, basis} as the gateway decides today for this recipient and purpose. */
export function currentDecisions(who, purpose) {
  const key = `${who.kind}:${who.code || who.ura}:${purpose || "TREAT"}`;
  if (!decisions.has(key)) {
    const asked = decideAll(who, purpose, null);
    asked.catch(() => decisions.delete(key));
    decisions.set(key, asked);
  }
  return decisions.get(key);
}

/** Per data category key: {decision, basis} as the gateway would decide with `draft` saved. */
export function draftDecisions(who, purpose, draft) {
  return decideAll(who, purpose, draft);
}

/** {now, after, blocked}: data keys seen now, seen after saving, and asked for but still refused (an
 *  earlier refusal holds). */
export function outcome(now, after, choice) {
  const covered = (key) => choice.data === "all" || choice.data.includes(key);
  const seen = (decisions) => [...decisions].filter(([, d]) => d.decision === "permit").map(([key]) => key);
  const blocked = [...after]
    .filter(([key, d]) => choice.effect === "permit" && covered(key) && d.decision !== "permit" && d.basis === "refused")
    .map(([key]) => key);
  return { now: seen(now), after: seen(after), blocked };
}
