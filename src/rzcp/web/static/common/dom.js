// Both apps build their pages with DOM APIs only: text always goes in as text (never as HTML), so a member's
// name or a diagnostic from the server can never become markup, and nothing needs an inline style the CSP
// would block.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: `el("button", {type: "button", on: {click}}, "Text")` (or `onclick: handler`). */
export function el(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, with its attributes (presentation attributes are not styles, so the CSP allows them). */
export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function byId(id) {
  return document.getElementById(id);
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

/** A message block: kind "error", "ok" or "" (neutral). Errors are announced at once (role=alert). */
export function notice(kind, ...children) {
  return el("div", { class: `notice ${kind}`.trim(), role: kind === "error" ? "alert" : "status" }, ...children);
}

/** A table from a header row and rows of cells (each cell a node or a text). */
export function table(caption, headers, rows, attrs = {}) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      attrs,
      caption ? el("caption", {}, caption) : null,
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.map((cells) => (cells instanceof Node ? cells : el("tr", {}, cells.map((c) => el("td", {}, c)))))),
    ),
  );
}

/** A labelled form field; `input` is the control element (its id is set from `id`). */
export function field(id, label, input, hint) {
  input.id = id;
  if (!input.name) input.name = id.replace(/^f-/, "");
  const hintId = hint ? `${id}-hint` : undefined;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return el("div", { class: "field" }, el("label", { for: id }, label), hint ? el("p", { id: hintId, class: "hint muted" }, hint) : null, input);
}

/** A definition list from [term, description] pairs, skipping empty descriptions. */
export function facts(pairs) {
  return el(
    "dl",
    { class: "facts" },
    pairs.filter(([, value]) => value !== undefined && value !== null && value !== "").flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]),
  );
}
