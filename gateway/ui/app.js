// The dashboard: REST for the first picture, then Socket.IO pushes keep it live (no polling).
import { io } from "./vendor/socket.io-client/socket.io.esm.min.js";
import { ApiError, api, history, token } from "./api.js";
import { actionButtons } from "./actions.js";
import { SPARK_POINTS, sparkline } from "./charts.js";
import { el, mib, pct } from "./format.js";
import { addressLine } from "./guest.js";
import { auditItem, eventItem, fillLog, jobItem } from "./logs.js";
import { VmPage } from "./vmpage.js";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["succeeded", "failed", "rejected", "timed_out"]);
const JOBS_KEPT = 200;

const state = {
  role: null,
  name: null,
  hosts: new Map(), // host id → status
  vms: new Map(), // "host/uuid" → VM state
  spark: new Map(), // "host/uuid" → {cpu: [], mem: []}
  latest: new Map(), // "host/uuid" → latest vm_metrics
  guests: new Map(), // "host/uuid" → what its guest agent says (GET /guests, vm_guest)
  jobs: new Map(), // id → job, newest first when listed
  socket: null,
  page: null,
  replay: null, // pushes received while loadAll runs
};

const keyOf = (vm) => `${vm.host}/${vm.uuid}`;

export const ctx = {
  get role() {
    return state.role;
  },
  busy: (vm) => [...state.jobs.values()].some((j) => j.vm === vm.uuid && j.host === vm.host && !j.finished),
  onJob: (job) => applyJob(job),
  toast,
};

// -- sign-in ------------------------------------------------------------------------------------

function showLogin(message = "") {
  if (state.socket) state.socket.close();
  state.socket = null;
  $("login").hidden = false;
  $("overview").hidden = true;
  $("vm-page").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = message;
  setConn("signed-out", "signed out");
  $("token").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  token.set(value);
  $("token").value = "";
  start();
});

$("logout").addEventListener("click", () => {
  token.clear();
  showLogin();
});

async function start() {
  // Without a token, the open index (`GET /`) tells whether this gateway needs one at all
  // (KVMSUP_AUTH=none does not).
  if (!token.get() && !(await authIsOff())) return showLogin();
  try {
    const me = await api("/whoami");
    state.role = me.role;
    state.name = me.name;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const had = token.get();
      token.clear();
      return showLogin(had ? "That token was not accepted." : "");
    }
    return showLogin(`The gateway did not answer: ${err.message}`);
  }
  $("login").hidden = true;
  $("who").textContent = `${state.name} · ${state.role}`;
  $("logout").hidden = !token.get();
  document.body.dataset.role = state.role;
  connect();
  route();
}

async function authIsOff() {
  try {
    const index = await (await fetch("/", { cache: "no-store" })).json();
    return index.auth === "none";
  } catch {
    return false;
  }
}

// -- live connection ---------------------------------------------------------------------------

function setConn(s, text) {
  $("conn").dataset.state = s;
  $("conn").textContent = text;
}

function connect() {
  if (state.socket) state.socket.close();
  // websocket only: one connection, no long-polling requests.
  const socket = io({ transports: ["websocket"], auth: { token: token.get() } });
  state.socket = socket;
  socket.on("connect", async () => {
    setConn("live", "live");
    socket.emit("subscribe_metrics", { name: "*" });
    // Whatever happened while disconnected: one fresh picture, then pushes again.
    await loadAll();
  });
  socket.on("disconnect", () => setConn("offline", "reconnecting…"));
  socket.on("connect_error", (err) => {
    const code = err && err.data && err.data.code;
    if (code === "unauthorized") {
      token.clear();
      showLogin("That token is no longer accepted.");
    } else {
      setConn("offline", code === "too_many_requests" ? "refused (too many failures)" : "reconnecting…");
    }
  });
  socket.on("vm_state", (vm) => pushed(applyVmState, vm));
  socket.on("vm_removed", (vm) => pushed(removeVm, vm));
  socket.on("host_status", (status) => pushed(applyHost, status));
  socket.on("job_update", (job) => applyJob(job));
  socket.on("vm_metrics", (m) => onMetrics(m));
  socket.on("vm_snapshots", (data) => state.page && state.page.snapshots.onPush(data));
  socket.on("vm_guest", (g) => pushed(applyGuest, g));
}

// A push that arrives while the REST picture loads may be newer than that picture: it is
// applied now and again once the picture is in.
function pushed(apply, data) {
  if (state.replay) state.replay.push([apply, data]);
  apply(data);
}

function applyVmState(vm) {
  const prev = state.vms.get(keyOf(vm));
  if (prev && prev.seq !== undefined && vm.seq !== undefined && vm.seq < prev.seq) return;
  state.vms.set(keyOf(vm), { ...prev, ...vm });
  renderVm(keyOf(vm));
  refreshLogsSoon();
}

function applyGuest(guest) {
  const key = keyOf(guest);
  state.guests.set(key, guest);
  if (state.vms.has(key)) renderVm(key);
  if (state.page && state.page.key === key) state.page.setGuest(guest);
}

function removeVm(vm) {
  state.vms.delete(keyOf(vm));
  renderVms();
  renderHosts();
}

function applyHost(status) {
  state.hosts.set(status.host, { ...state.hosts.get(status.host), ...status });
  for (const vm of state.vms.values()) if (vm.host === status.host) vm.host_online = status.online;
  renderHosts();
  renderVms();
}

// -- data --------------------------------------------------------------------------------------

async function loadAll() {
  state.replay = [];
  try {
    const [hosts, vms, jobs, guests] = await Promise.all([api("/hosts"), api("/vms"), api("/jobs?limit=50"), api("/guests")]);
    state.guests = new Map(guests.guests.map((g) => [keyOf(g), g]));
    state.hosts = new Map(hosts.hosts.map((h) => [h.host, h]));
    const fresh = new Map();
    for (const vm of vms.vms) fresh.set(keyOf(vm), { ...state.vms.get(keyOf(vm)), ...vm });
    state.vms = fresh;
    const pushedJobs = [...state.jobs.values()];
    state.jobs = new Map(jobs.jobs.map((j) => [j.id, j]));
    for (const job of pushedJobs) applyJob(job, true);
    for (const [apply, data] of state.replay) apply(data);
    state.replay = null;
    renderHosts();
    renderVms();
    renderJobs();
    refreshLogs();
    loadSparks();
    if (state.page) state.page.reload();
  } catch (err) {
    state.replay = null;
    if (err instanceof ApiError && err.status === 401) return showLogin("That token is no longer accepted.");
    toast(`Could not load the fleet: ${err.message}`, "failed");
  }
}

// A sparkline is the last SPARK_POINTS ticks: first from the history (at most SPARK_POINTS
// points: a window holding more is averaged to what the line draws), then one more point with
// each pushed tick.
async function loadSparks() {
  await Promise.all(
    [...state.vms.values()].map(async (vm) => {
      const tick = (state.hosts.get(vm.host) || {}).interval_s || 2;
      try {
        const h = await history(vm, Math.max(1, Math.ceil((SPARK_POINTS * tick) / 60)), SPARK_POINTS);
        const pts = h.points.slice(-SPARK_POINTS);
        state.spark.set(keyOf(vm), {
          cpu: pts.map((p) => p.cpu_percent ?? p.cpu_percent_avg ?? null),
          mem: pts.map((p) => p.memory_percent ?? p.memory_percent_avg ?? null),
        });
        renderVm(keyOf(vm));
      } catch {
        // A VM removed meanwhile, or no history yet: its sparkline fills from the pushes.
      }
    }),
  );
}

function onMetrics(m) {
  const key = keyOf(m);
  state.latest.set(key, m);
  const s = state.spark.get(key) || { cpu: [], mem: [] };
  s.cpu.push(m.cpu_percent);
  s.mem.push(m.memory_percent);
  if (s.cpu.length > SPARK_POINTS) s.cpu.splice(0, s.cpu.length - SPARK_POINTS);
  if (s.mem.length > SPARK_POINTS) s.mem.splice(0, s.mem.length - SPARK_POINTS);
  state.spark.set(key, s);
  updateSpark(key);
  if (state.page && state.page.key === key) state.page.onMetrics(m);
}

function applyJob(job, quiet = false) {
  const prev = state.jobs.get(job.id);
  // A command's answer and its `job_update` pushes race: never let an older view of the job
  // (the POST's `accepted`) replace a newer one (a pushed `succeeded`).
  if (prev && (prev.finished && !job.finished || (job.updated_at || "") < (prev.updated_at || ""))) return;
  state.jobs.set(job.id, { ...prev, ...job });
  // A page left open for weeks keeps the newest jobs only (the API has the rest).
  if (state.jobs.size > JOBS_KEPT) {
    const oldest = [...state.jobs.values()]
      .filter((j) => j.finished)
      .sort((a, b) => (a.created_at || "").localeCompare(b.created_at || ""))
      .slice(0, state.jobs.size - JOBS_KEPT);
    for (const j of oldest) state.jobs.delete(j.id);
  }
  renderJobs();
  const vm = state.vms.get(`${job.host}/${job.vm}`);
  if (vm) renderVm(keyOf(vm));
  if (job.finished && !(prev && prev.finished) && !quiet) {
    const what = `${job.action} ${job.name}`;
    const err = job.error ? `: ${job.error.message}` : "";
    toast(`${what} ${job.status}${err}`, job.status);
    refreshLogsSoon();
  }
}

let logsTimer = null;
function refreshLogsSoon() {
  clearTimeout(logsTimer);
  logsTimer = setTimeout(refreshLogs, 800);
}

async function refreshLogs() {
  try {
    const [events, audit] = await Promise.all([api("/events?limit=30"), api("/audit?limit=30")]);
    fillLog($("events"), events.events.map(eventItem));
    fillLog($("audit"), audit.audit.map(auditItem));
    if (state.page) state.page.loadEvents();
  } catch {
    // Shown again on the next change.
  }
}

// -- rendering ---------------------------------------------------------------------------------

function renderHosts() {
  const vms = [...state.vms.values()];
  $("hosts").replaceChildren(
    ...[...state.hosts.values()].map((h) => {
      const mine = vms.filter((v) => v.host === h.host);
      const running = mine.filter((v) => v.state === "running").length;
      const libvirt = !h.online ? "unknown" : h.libvirt_connected ? "connected" : "disconnected";
      const health = !h.online ? "bad" : h.libvirt_connected ? "ok" : "warn";
      return el(
        "article",
        { class: "card host", dataset: { host: h.host, online: String(!!h.online), libvirt } },
        el("h3", {}, el("span", { class: `dot ${health}` }), h.host),
        el("p", { class: "host-status", text: h.online ? "online" : "offline" }),
        el("p", { class: "muted", text: `libvirt ${libvirt}${h.hypervisor ? ` · ${h.hypervisor.type} ${h.hypervisor.version}` : ""}` }),
        h.node ? el("p", { class: "muted", text: `${h.node.cpus} CPUs · ${mib(h.node.memory_mb)}` }) : null,
        el("p", { class: "muted", text: `${running} of ${mine.length} VMs running` }),
      );
    }),
  );
}

function sortedVms() {
  return [...state.vms.values()].sort((a, b) => a.name.localeCompare(b.name) || a.host.localeCompare(b.host));
}

function renderVms() {
  const vms = sortedVms();
  $("vm-count").textContent = `(${vms.length})`;
  const head = el(
    "div",
    { class: "vm-row head", role: "row" },
    ["Name", "Host", "State", "vCPUs", "Memory", "CPU", "Memory use", ""].map((t) => el("span", { role: "columnheader", text: t })),
  );
  $("vms").replaceChildren(head, ...vms.map(vmRow));
}

function renderVm(key) {
  const vm = state.vms.get(key);
  const row = document.querySelector(`.vm-row[data-key="${CSS.escape(key)}"]`);
  if (!vm || !row) return renderVms();
  row.replaceWith(vmRow(vm));
  if (state.page && state.page.key === key) state.page.setVm(vm);
  renderHosts(); // its counts of running VMs
}

function vmRow(vm) {
  const key = keyOf(vm);
  const m = state.latest.get(key);
  const offline = vm.host_online === false;
  return el(
    "div",
    { class: "vm-row", role: "row", dataset: { key, name: vm.name, host: vm.host, state: vm.state } },
    el(
      "span",
      { class: "vm-name-cell", role: "cell" },
      el("a", { class: "vm-name", href: `#/vm/${encodeURIComponent(vm.host)}/${vm.uuid}`, text: vm.name }),
      addressLine(state.guests.get(key), vm),
    ),
    el("span", { class: "vm-host", role: "cell", text: vm.host }),
    el("span", { class: "vm-state", role: "cell" }, el("span", { class: `state ${vm.state}`, text: vm.state }), offline ? el("span", { class: "badge", text: "host offline" }) : null),
    el("span", { class: "num vm-vcpus", role: "cell", "data-label": "vCPUs", text: String(vm.vcpus) }),
    el("span", { class: "num vm-mem", role: "cell", "data-label": "Memory", text: mib(vm.memory_mb) }),
    sparkCell("cpu", key, m ? m.cpu_percent : null),
    sparkCell("mem", key, m ? m.memory_percent : null),
    el("span", { role: "cell", class: "cell-actions" }, actionButtons(vm, ctx)),
  );
}

function sparkCell(kind, key, value) {
  const s = state.spark.get(key);
  return el(
    "span",
    { class: `spark-cell ${kind}`, role: "cell", "data-label": kind === "cpu" ? "CPU" : "Mem" },
    sparkline(s ? s[kind] : []),
    el("span", { class: "spark-value", text: pct(value) }),
  );
}

function updateSpark(key) {
  const row = document.querySelector(`.vm-row[data-key="${CSS.escape(key)}"]`);
  if (!row) return;
  const m = state.latest.get(key);
  row.querySelector(".spark-cell.cpu").replaceWith(sparkCell("cpu", key, m.cpu_percent));
  row.querySelector(".spark-cell.mem").replaceWith(sparkCell("mem", key, m.memory_percent));
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  fillLog($("jobs"), jobs.slice(0, 30).map(jobItem));
  if (state.page) state.page.setJobs(jobs.filter((j) => `${j.host}/${j.vm}` === state.page.key).map(jobItem));
}

function toast(text, kind = "") {
  const t = el("div", { class: `toast ${kind}`, role: "status", text });
  $("toasts").append(t);
  setTimeout(() => t.remove(), FINAL.has(kind) && kind !== "succeeded" ? 12000 : 6000);
}

// -- routing: #/ (overview) and #/vm/<host>/<uuid> -------------------------------------------

function route() {
  if (!state.role) return;
  const m = location.hash.match(/^#\/vm\/([^/]+)\/([^/]+)$/);
  if (state.page) state.page.destroy();
  state.page = null;
  if (m) {
    const key = `${decodeURIComponent(m[1])}/${m[2]}`;
    $("overview").hidden = true;
    $("vm-page").hidden = false;
    state.page = new VmPage(key, () => state.vms.get(key), ctx);
    if (state.latest.has(key)) state.page.showNow(state.latest.get(key));
    window.scrollTo(0, 0);
    renderJobs();
    refreshLogs();
  } else {
    $("vm-page").hidden = true;
    $("overview").hidden = false;
  }
}

window.addEventListener("hashchange", route);
start();
