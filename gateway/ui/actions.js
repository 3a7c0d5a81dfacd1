// VM actions for operator tokens: which ones a state allows, the confirmation of the
// destructive ones, and the command itself (its job is then followed through `job_update`).
import { api, vmPath } from "./api.js";
import { el } from "./format.js";

export const ACTIONS = {
  start: { label: "Start", route: "start" },
  shutdown: { label: "Shut down", route: "stop", confirm: "The guest is asked to shut down." },
  reboot: { label: "Reboot", route: "restart", confirm: "The guest is asked to reboot." },
  suspend: { label: "Suspend", route: "suspend", confirm: "The VM is paused: its guest stops running until resumed." },
  resume: { label: "Resume", route: "resume" },
  force_off: {
    label: "Force off", route: "stop", body: { force: true }, danger: true,
    confirm: "The VM is switched off at once, like pulling its plug: unsaved data in the guest is lost.",
  },
  reset: {
    label: "Reset", route: "restart", body: { force: true }, danger: true,
    confirm: "The VM is reset at once, like pressing its reset button: unsaved data in the guest is lost.",
  },
};

const BY_STATE = {
  running: ["shutdown", "reboot", "suspend", "force_off", "reset"],
  paused: ["resume", "force_off"],
  shutting_down: ["force_off"],
  stopped: ["start"],
  crashed: ["start", "force_off"],
  suspended: ["force_off"],
  unknown: [],
};

export const actionsFor = (state) => BY_STATE[state] || [];

export function confirmAction(title, text, danger) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").className = danger ? "danger" : "primary";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// The buttons of one VM; none at all unless the token may act (a viewer sees no buttons).
export function actionButtons(vm, ctx) {
  if (ctx.role !== "operator") return null;
  const names = actionsFor(vm.state);
  if (!names.length) return null;
  const offline = vm.host_online === false;
  return el(
    "div",
    { class: "actions" },
    names.map((name) =>
      el("button", {
        type: "button",
        class: ACTIONS[name].danger ? "act danger" : "act",
        dataset: { action: name },
        // While a job runs on the VM only a forced one may be sent: the gateway lets it
        // preempt a graceful shutdown or reboot, and refuses anything else with a 409.
        disabled: offline || (ctx.busy(vm) && !ACTIONS[name].danger),
        title: offline ? "The host is offline" : undefined,
        "aria-label": `${ACTIONS[name].label} ${vm.name}`,
        text: ACTIONS[name].label,
        on: { click: () => run(vm, name, ctx) },
      }),
    ),
  );
}

async function run(vm, name, ctx) {
  const spec = ACTIONS[name];
  if (spec.confirm) {
    const ok = await confirmAction(`${spec.label} ${vm.name}?`, `${spec.confirm} (host ${vm.host})`, spec.danger);
    if (!ok) return;
  }
  try {
    // wait=0: the answer comes once the agent accepted; the end arrives as `job_update`.
    const job = await api(vmPath(vm, `/${spec.route}?host=${encodeURIComponent(vm.host)}&wait=0`), {
      method: "POST",
      body: spec.body,
    });
    ctx.onJob(job);
  } catch (err) {
    if (err.body && err.body.error && err.body.error.job) ctx.onJob(err.body.error.job);
    ctx.toast(`${spec.label} ${vm.name}: ${err.message}`, "failed");
  }
}
