// REST calls to this gateway with the token kept in the browser (localStorage).

const KEY = "kvmsup.token";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_" + status;
    this.body = body;
  }
}

export const token = {
  get: () => localStorage.getItem(KEY) || "",
  set: (value) => localStorage.setItem(KEY, value),
  clear: () => localStorage.removeItem(KEY),
};

export async function api(path, { method = "GET", body } = {}) {
  const headers = token.get() ? { Authorization: `Bearer ${token.get()}` } : {};
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export const vmPath = (vm, tail = "") =>
  `/vm/${encodeURIComponent(vm.uuid)}${tail}`;

// What this gateway's history route accepts, from its own OpenAPI document (open, no token):
// the longest `minutes` it keeps, and whether it downsamples with `points`.
let historyCaps = null;
export async function historyLimits() {
  if (historyCaps) return historyCaps;
  const caps = { maxMinutes: 60, points: false };
  try {
    const doc = await (await fetch("/openapi.json", { cache: "no-store" })).json();
    const op = doc.paths["/vm/{name}/history"].get;
    for (const p of op.parameters) {
      if (p.name === "minutes" && p.schema && p.schema.maximum) caps.maxMinutes = p.schema.maximum;
      if (p.name === "points") caps.points = true;
    }
  } catch {
    // An older gateway: the defaults above.
  }
  historyCaps = caps;
  return caps;
}

export async function history(vm, minutes, points) {
  const caps = await historyLimits();
  const span = Math.min(minutes, caps.maxMinutes);
  const q = new URLSearchParams({ minutes: String(span), host: vm.host });
  if (caps.points && points) q.set("points", String(points));
  const data = await api(vmPath(vm, `/history?${q}`));
  return { span, ...data };
}
