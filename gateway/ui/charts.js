// Sparklines (a few SVG lines, cheap enough for every VM of the list) and the VM page's graphs
// (uPlot, vendored).
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { bytesRate } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
export const SPARK_POINTS = 60;

// `values`: numbers or null (a gap); `max`: the top of the scale (100 for percentages).
export function sparkline(values, max = 100) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "spark");
  svg.setAttribute("aria-hidden", "true");
  // The points there are, across the whole width: a sparkline shows the recent trend.
  const n = Math.max(values.length, 2);
  let segment = [];
  const flush = () => {
    if (segment.length > 1) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", segment.join(" "));
      svg.appendChild(line);
    }
    segment = [];
  };
  values.forEach((v, i) => {
    if (v === null || v === undefined || Number.isNaN(v)) return flush();
    const x = (i / (n - 1)) * 100;
    const y = 23 - (Math.min(Math.max(v, 0), max) / max) * 22;
    segment.push(`${x.toFixed(2)},${y.toFixed(2)}`);
  });
  flush();
  return svg;
}

// One value of a history point, whatever the gateway's history version: a plain field, or
// downsampled averages and maxima (`<key>_avg`/`<key>_max`, or nested `avg`/`max` objects).
export function pick(point, key, kind = "avg") {
  if (kind === "max") {
    if (point[`${key}_max`] !== undefined) return point[`${key}_max`];
    if (point.max && point.max[key] !== undefined) return point.max[key];
    return undefined;
  }
  if (point[key] !== undefined) return point[key];
  if (point[`${key}_avg`] !== undefined) return point[`${key}_avg`];
  if (point.avg && point.avg[key] !== undefined) return point.avg[key];
  return null;
}

const COLORS = ["#2f6fdf", "#e0742f", "#8a5cd0", "#2a9d5c"];

// A graph of `series` ([{key, label}]) of history points; maxima are drawn as a dashed line
// when the points carry them.
export class Graph {
  constructor(el, series, { percent = false } = {}) {
    this.el = el;
    this.series = series;
    this.percent = percent;
    this.plot = null;
    this.data = null;
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(el);
  }

  setPoints(points) {
    const xs = points.map((p) => Date.parse(p.ts) / 1000);
    const cols = [xs];
    const defs = [{}];
    const withMax = points.some((p) => this.series.some((s) => pick(p, s.key, "max") !== undefined));
    this.series.forEach((s, i) => {
      cols.push(points.map((p) => num(pick(p, s.key))));
      defs.push({ label: s.label, stroke: COLORS[i], width: 1.5, value: this.fmt() });
      if (withMax) {
        cols.push(points.map((p) => num(pick(p, s.key, "max"))));
        defs.push({ label: `${s.label} max`, stroke: COLORS[i], width: 1, dash: [4, 4], value: this.fmt() });
      }
    });
    this.data = cols;
    this.defs = defs;
    this.render();
  }

  // One live point (from a `vm_metrics` push), appended without a request.
  append(point, windowS) {
    if (!this.data || !this.plot) return;
    const x = Date.parse(point.ts) / 1000;
    const last = this.data[0][this.data[0].length - 1];
    if (last !== undefined && x <= last) return;
    this.data[0].push(x);
    let col = 1;
    const withMax = this.defs.length > this.series.length + 1;
    for (const s of this.series) {
      this.data[col++].push(num(pick(point, s.key)));
      if (withMax) this.data[col++].push(num(pick(point, s.key)));
    }
    // Keep to the window shown: drop what has slid out on the left.
    let drop = 0;
    while (drop < this.data[0].length && this.data[0][drop] < x - windowS) drop += 1;
    if (drop) for (const c of this.data) c.splice(0, drop);
    this.plot.setData(this.data);
  }

  fmt() {
    return this.percent
      ? (u, v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} %`)
      : (u, v) => (v === null || v === undefined ? "–" : bytesRate(v));
  }

  render() {
    if (this.plot) this.plot.destroy();
    const axisValues = this.percent ? (u, ticks) => ticks.map((t) => `${t}%`) : (u, ticks) => ticks.map((t) => bytesRate(t, true));
    const opts = {
      width: Math.max(this.el.clientWidth, 200),
      height: 170,
      series: this.defs,
      scales: this.percent ? { y: { range: [0, 100] } } : { y: { range: (u, min, max) => [0, Math.max(max, 1024)] } },
      axes: [{ stroke: "#888", grid: { stroke: "#8883" } }, { stroke: "#888", size: 60, grid: { stroke: "#8883" }, values: axisValues }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    this.plot = new uPlot(opts, this.data, this.el);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(this.el.clientWidth, 200), height: 170 });
  }

  destroy() {
    this.observer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

const num = (v) => (v === null || v === undefined || Number.isNaN(v) ? null : Number(v));
