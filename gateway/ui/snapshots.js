// The snapshots panel of a VM's page: its snapshots as the agent last published them (then
// `vm_snapshots` pushes), and for operators taking one, going back to one and deleting one.
// Going back and deleting destroy state: each asks first, and the request names the VM in
// `confirm`, which the gateway requires.
import { confirmAction } from "./actions.js";
import { api, vmPath } from "./api.js";
import { el, when } from "./format.js";

const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// The same for the input's `pattern`, which browsers read with the `v` flag (a bare `-` in a
// class is an error there).
const NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}";

// A default name for the next snapshot: the local time, as the gateway's names allow.
function suggestedName() {
  const d = new Date();
  const two = (n) => String(n).padStart(2, "0");
  return `snap-${d.getFullYear()}${two(d.getMonth() + 1)}${two(d.getDate())}-${two(d.getHours())}${two(d.getMinutes())}`;
}

export class SnapshotsPanel {
  constructor(getVm, ctx) {
    this.getVm = getVm;
    this.ctx = ctx;
    this.items = [];
    this.render();
    this.load();
  }

  async load() {
    const vm = this.getVm();
    if (!vm) return;
    try {
      const body = await api(vmPath(vm, `/snapshots?host=${encodeURIComponent(vm.host)}`));
      if (this.destroyed) return;
      this.items = body.snapshots;
    } catch (err) {
      this.note = `snapshots unavailable: ${err.message}`;
    }
    this.render();
  }

  // A `vm_snapshots` push: only this VM's.
  onPush(data) {
    const vm = this.getVm();
    if (!vm || data.host !== vm.host || data.uuid !== vm.uuid) return;
    this.items = data.snapshots;
    this.note = "";
    this.render();
  }

  render() {
    const vm = this.getVm();
    const operator = this.ctx.role === "operator" && vm;
    const rows = this.items
      .slice()
      .reverse()
      .map((s) =>
        el(
          "li",
          { dataset: { snapshot: s.name } },
          el("strong", { text: s.name }),
          s.current ? el("span", { class: "badge", text: "current" }) : null,
          el("time", { text: when(s.created) }),
          el("span", { class: "muted", text: `${s.state}${s.has_memory ? ", with memory" : ", disks only"}` }),
          s.description ? el("span", { text: s.description }) : null,
          operator ? this.rowButtons(vm, s) : null,
        ),
      );
    $("vm-snapshots").replaceChildren(
      operator ? this.form(vm) : null,
      this.note ? el("p", { class: "muted", text: this.note }) : null,
      el("ol", { class: "log" }, rows.length ? rows : [el("li", { class: "muted", text: "no snapshots" })]),
    );
  }

  form(vm) {
    const name = el("input", { id: "snapshot-name", "aria-label": "Snapshot name", value: suggestedName(), maxlength: "64", required: true, pattern: NAME_PATTERN });
    const description = el("input", { id: "snapshot-description", "aria-label": "Description", placeholder: "description (optional)", maxlength: "1024" });
    const memory = el("input", { id: "snapshot-memory", type: "checkbox", checked: true });
    const submit = (ev) => {
      ev.preventDefault();
      if (!NAME.test(name.value)) {
        this.ctx.toast("A snapshot name is letters, digits, '.', '_' or '-' (64 at most)", "failed");
        return;
      }
      this.send(vm, "Take snapshot", "POST", "", { name: name.value, description: description.value, memory: memory.checked });
    };
    return el(
      "form",
      { class: "actions snapshot-form", on: { submit } },
      name,
      description,
      el("label", {}, memory, " with memory"),
      el("button", { type: "submit", class: "act", text: "Take snapshot", disabled: vm.host_online === false }),
    );
  }

  rowButtons(vm, snap) {
    const revert = async () => {
      const ok = await confirmAction(
        `Go back to ${snap.name}?`,
        `${vm.name} returns to how it was when ${snap.name} was taken: everything since is lost. (host ${vm.host})`,
        true,
      );
      if (ok) this.send(vm, `Revert to ${snap.name}`, "POST", `/${encodeURIComponent(snap.name)}/revert`, { confirm: vm.name });
    };
    const remove = async () => {
      const ok = await confirmAction(`Delete ${snap.name}?`, `There is no going back to ${snap.name} once it is deleted. (host ${vm.host})`, true);
      if (ok) this.send(vm, `Delete ${snap.name}`, "DELETE", `/${encodeURIComponent(snap.name)}`, { confirm: vm.name });
    };
    const offline = vm.host_online === false;
    return el(
      "span",
      { class: "actions" },
      el("button", { type: "button", class: "act danger", dataset: { snapshotAction: "revert" }, disabled: offline, text: "Revert", "aria-label": `Revert ${vm.name} to ${snap.name}`, on: { click: revert } }),
      el("button", { type: "button", class: "act danger", dataset: { snapshotAction: "delete" }, disabled: offline, text: "Delete", "aria-label": `Delete snapshot ${snap.name}`, on: { click: remove } }),
    );
  }

  async send(vm, label, method, tail, body) {
    try {
      // wait=0: the answer comes once the agent accepted; the end arrives as `job_update`, the
      // new list as `vm_snapshots`.
      const job = await api(vmPath(vm, `/snapshots${tail}?host=${encodeURIComponent(vm.host)}&wait=0`), { method, body });
      this.ctx.onJob(job);
    } catch (err) {
      if (err.body && err.body.error && err.body.error.job) this.ctx.onJob(err.body.error.job);
      this.ctx.toast(`${label}: ${err.message}`, "failed");
    }
  }

  destroy() {
    this.destroyed = true;
  }
}
