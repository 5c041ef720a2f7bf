// Bar charts as inline SVG, built with DOM calls: one band per day, bars stacked per series (member).
// No library: a stacked bar chart is a few rectangles, and the CSP would block most libraries' inline styles.
// Every chart carries its text alternative: a caption that says what it shows in words, and the same data
// as a table behind a toggle. Colours come from classes (series-0...), never from inline styles.

import { el, svg } from "/web/common/dom.js";
import { t, formatDate } from "/web/common/i18n.js";

const WIDTH = 760;
const HEIGHT = 260;
const MARGIN = { top: 12, right: 12, bottom: 44, left: 44 };
const PALETTE_SIZE = 8;

/** A round upper bound for the y axis (1, 2, 5 × 10^n) so the ticks are numbers people read at once. */
function niceMax(value) {
  if (value <= 4) return Math.max(1, value);
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((f) => f * power).find((n) => n >= value);
}

function shortDay(day) {
  const [, month, date] = day.split("-");
  return `${Number(date)}-${Number(month)}`;
}

/**
 * `series`: [{key, label, values: [per day]}]; `perMember` keeps the legend for a single member. Returns a <figure> with the SVG, a legend, the caption and
 * a data table (hidden until asked for).
 */
export function barChart({ id, title, description, days, series, perMember = false }) {
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const grand = totals.reduce((a, b) => a + b, 0);
  const top = niceMax(Math.max(0, ...totals));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const band = plotW / Math.max(1, days.length);
  const barW = Math.max(2, band * 0.7);
  const y = (value) => MARGIN.top + plotH - (value / top) * plotH;

  const titleId = `${id}-title`;
  const descId = `${id}-desc`;
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-labelledby": titleId, "aria-describedby": descId, id: `${id}-svg` });
  chart.append(svg("title", { id: titleId }, title), svg("desc", { id: descId }, description));

  const axis = svg("g", { class: "axis", "aria-hidden": "true" });
  for (const tick of [0, top / 2, top]) {
    if (tick !== Math.round(tick)) continue;
    axis.append(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(tick), y2: y(tick), class: "gridline" }),
      svg("text", { x: MARGIN.left - 6, y: y(tick) + 4, "text-anchor": "end" }, String(tick)),
    );
  }
  const every = Math.ceil(days.length / 12);
  days.forEach((day, i) => {
    if (i % every) return;
    axis.append(svg("text", { x: MARGIN.left + band * i + band / 2, y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, shortDay(day)));
  });
  axis.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0), class: "baseline" }));
  chart.append(axis);

  const bars = svg("g", { class: "bars" });
  days.forEach((day, i) => {
    let stacked = 0;
    series.forEach((s, n) => {
      const value = s.values[i] || 0;
      if (!value) return;
      const rect = svg(
        "rect",
        {
          class: `bar series-${n % PALETTE_SIZE}`,
          x: (MARGIN.left + band * i + (band - barW) / 2).toFixed(1),
          y: y(stacked + value).toFixed(1),
          width: barW.toFixed(1),
          height: Math.max(1, y(stacked) - y(stacked + value)).toFixed(1),
          dataset: { series: s.key, day, value: String(value) },
        },
        svg("title", {}, `${s.label}, ${formatDate(day)}: ${value}`),
      );
      stacked += value;
      bars.append(rect);
    });
  });
  chart.append(bars);

  const legend = series.length > 1 || (perMember && series.length) ? el("ul", { class: "legend" }, series.map((s, n) => el("li", {}, el("span", { class: `swatch series-${n % PALETTE_SIZE}`, "aria-hidden": "true" }), s.label))) : null;
  const data = dataTable(title, days, series, totals);
  data.hidden = true;
  const toggle = el("button", { type: "button", class: "secondary small", "aria-expanded": "false", "aria-controls": `${id}-table` }, t("charts.showTable"));
  data.id = `${id}-table`;
  toggle.addEventListener("click", () => {
    data.hidden = !data.hidden;
    toggle.setAttribute("aria-expanded", String(!data.hidden));
    toggle.textContent = data.hidden ? t("charts.showTable") : t("charts.hideTable");
  });
  const busiest = grand ? days[totals.indexOf(Math.max(...totals))] : null;
  const summary = grand ? t("charts.summary", { total: grand, days: days.length, busiest: formatDate(busiest), most: Math.max(...totals) }) : t("charts.empty", { days: days.length });
  return el(
    "figure",
    { class: "chart-figure", id, dataset: { total: String(grand) } },
    el("figcaption", {}, el("strong", {}, title), " ", el("span", { class: "chart-summary" }, summary)),
    chart,
    legend,
    el("p", {}, toggle),
    data,
  );
}

function dataTable(title, days, series, totals) {
  const head = el("tr", {}, el("th", { scope: "col" }, t("charts.day")), series.map((s) => el("th", { scope: "col" }, s.label)), series.length > 1 ? el("th", { scope: "col" }, t("charts.total")) : null);
  const rows = days.map((day, i) =>
    el("tr", {}, el("th", { scope: "row" }, formatDate(day)), series.map((s) => el("td", {}, String(s.values[i] || 0))), series.length > 1 ? el("td", {}, String(totals[i])) : null),
  );
  return el("div", { class: "table-wrap" }, el("table", { class: "chart-data" }, el("caption", {}, t("charts.tableOf", { title })), el("thead", {}, head), el("tbody", {}, rows)));
}
