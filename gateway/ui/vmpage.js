// One VM: its details and actions, graphs of CPU, memory, disk and network over the last hour
// or day (history, then live points from `vm_metrics`), its snapshots, jobs and events.
import { actionButtons } from "./actions.js";
import { ApiError, api, history, vmPath } from "./api.js";
import { Graph } from "./charts.js";
import { el, mib, pct } from "./format.js";
import { SnapshotsPanel } from "./snapshots.js";
import { guestPanel, loadGuest } from "./guest.js";

const $ = (id) => document.getElementById(id);
// Points asked for when the gateway downsamples (`?points=`): about one per pixel of a phone.
const POINTS = 360;

export class VmPage {
  constructor(key, getVm, ctx) {
    this.key = key;
    this.getVm = getVm;
    this.ctx = ctx;
    this.minutes = 60;
    this.graphs = {
      cpu: new Graph($("chart-cpu"), [{ key: "cpu_percent", label: "CPU" }], { percent: true }),
      mem: new Graph($("chart-mem"), [{ key: "memory_percent", label: "Memory" }], { percent: true }),
      disk: new Graph($("chart-disk"), [
        { key: "disk_read_bps", label: "Read" },
        { key: "disk_write_bps", label: "Write" },
      ]),
      net: new Graph($("chart-net"), [
        { key: "net_rx_bps", label: "Received" },
        { key: "net_tx_bps", label: "Sent" },
      ]),
    };
    this.onRange = (ev) => {
      const b = ev.target.closest("[data-range]");
      if (b) this.load(Number(b.dataset.range));
    };
    document.querySelector(".ranges").addEventListener("click", this.onRange);
    $("vm-jobs").replaceChildren();
    $("vm-events").replaceChildren();
    this.detail = {};
    this.setVm(getVm());
    this.load(60);
    this.loadDetail();
    this.snapshots = new SnapshotsPanel(getVm, ctx);
    this.loadGuest();
  }

  async loadGuest() {
    const vm = this.getVm();
    if (!vm) return;
    try {
      const guest = await loadGuest(vm);
      if (!this.destroyed) this.setGuest(guest);
    } catch {
      // Shown with the next `vm_guest` push.
    }
  }

  setGuest(guest) {
    $("guest").replaceWith(guestPanel(guest));
  }

  // `/vms` entries lack the reason, autostart and maximum memory that `GET /vm/<id>` has;
  // later `vm_state` pushes carry them all.
  async loadDetail(tries = 5) {
    const vm = this.getVm();
    if (!vm) return;
    try {
      this.detail = await api(vmPath(vm, `?host=${encodeURIComponent(vm.host)}`));
    } catch (err) {
      // A request lost on the way (the network changed, the gateway restarted) is asked again
      // a moment later; an answer of the gateway's (an unknown VM, a token refused) is not.
      if (!(err instanceof ApiError) && tries > 1 && !this.destroyed) {
        setTimeout(() => this.loadDetail(tries - 1), 1000);
      }
      return;
    }
    if (!this.destroyed) this.setVm(this.getVm());
  }

  reload() {
    this.setVm(this.getVm());
    this.load(this.minutes);
    this.loadDetail(); // a page opened from a link before the fleet was loaded has none yet
    this.snapshots.load();
    this.loadGuest();
  }

  setVm(current) {
    const head = $("vm-head");
    const vm = current && { ...this.detail, ...current };
    if (!vm) {
      head.replaceChildren(el("h1", { text: "Unknown VM" }), el("p", { class: "muted", text: this.key }));
      return;
    }
    const rows = [
      ["Host", `${vm.host}${vm.host_online === false ? " (offline)" : ""}`],
      ["vCPUs", String(vm.vcpus)],
      ["Memory", `${mib(vm.memory_mb)}${vm.max_memory_mb ? ` of ${mib(vm.max_memory_mb)} max` : ""}`],
      ["Reason", vm.reason || "–"],
      ["Autostart", vm.autostart === undefined ? "–" : vm.autostart ? "yes" : "no"],
      ["UUID", vm.uuid],
    ];
    head.replaceChildren(
      el("h1", {}, vm.name, " ", el("span", { class: `state ${vm.state}`, text: vm.state })),
      el("dl", { class: "facts" }, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("p", { class: "now" }, el("span", { id: "now-cpu", text: "" }), el("span", { id: "now-mem", text: "" })),
      actionButtons(vm, this.ctx),
    );
    if (this.now) this.showNow(this.now);
  }

  async load(minutes) {
    this.minutes = minutes;
    for (const b of document.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(Number(b.dataset.range) === minutes));
    const vm = this.getVm();
    if (!vm) return;
    try {
      const h = await history(vm, minutes, POINTS);
      if (this.destroyed || this.minutes !== minutes) return;
      $("range-note").textContent =
        h.span < minutes ? `this gateway keeps ${h.span} minutes of history` : `${h.count} points`;
      for (const g of Object.values(this.graphs)) g.setPoints(h.points);
    } catch (err) {
      $("range-note").textContent = `history unavailable: ${err.message}`;
    }
  }

  onMetrics(m) {
    const p = {
      ts: m.ts,
      cpu_percent: m.cpu_percent,
      memory_percent: m.memory_percent,
      disk_read_bps: sum(m.disk_io, "read_bps"),
      disk_write_bps: sum(m.disk_io, "write_bps"),
      net_rx_bps: sum(m.network_io, "rx_bps"),
      net_tx_bps: sum(m.network_io, "tx_bps"),
    };
    this.showNow(m);
    // The last hour is at full resolution, so a tick is one more point of it; the day's
    // points are averages and are left to the next load.
    if (this.minutes <= 60 && m.ts) for (const g of Object.values(this.graphs)) g.append(p, this.minutes * 60);
  }

  showNow(m) {
    this.now = m;
    const cpu = $("now-cpu");
    if (cpu) cpu.textContent = `CPU ${pct(m.cpu_percent)}`;
    const mem = $("now-mem");
    if (mem) mem.textContent = `memory ${pct(m.memory_percent)}`;
  }

  setJobs(items) {
    $("vm-jobs").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "no jobs yet" })]));
  }

  async loadEvents() {
    const [host, uuid] = this.key.split("/");
    let mine = [];
    try {
      const q = new URLSearchParams({ host, vm: uuid, limit: "30" });
      mine = (await api(`/events?${q}`)).events;
    } catch {
      return;
    }
    if (this.destroyed) return;
    $("vm-events").replaceChildren(
      ...(mine.length
        ? mine.map((e) => el("li", {}, el("time", { text: new Date(e.ts).toLocaleTimeString() }), el("span", { text: e.kind === "command" ? `${e.action}: ${e.status}` : e.event })))
        : [el("li", { class: "muted", text: "no recent events" })]),
    );
  }

  destroy() {
    this.destroyed = true;
    this.snapshots.destroy();
    document.querySelector(".ranges").removeEventListener("click", this.onRange);
    for (const g of Object.values(this.graphs)) g.destroy();
  }
}

function sum(list, key) {
  if (!list || !list.length) return null;
  let total = 0;
  let any = false;
  for (const d of list) {
    if (d[key] !== null && d[key] !== undefined) {
      total += d[key];
      any = true;
    }
  }
  return any ? total : null;
}
