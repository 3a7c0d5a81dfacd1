// The lists of jobs, agent events and audit entries: one line each, text only.
import { el, when } from "./format.js";

export function jobItem(j) {
  return el(
    "li",
    { class: `job ${j.status}`, dataset: { id: j.id, status: j.status } },
    el("time", { text: when(j.created_at) }),
    el("span", { text: `${j.by} · ${j.action} ${j.name} @${j.host}` }),
    el("span", { class: `status ${j.status}`, text: j.status }),
    j.error ? el("span", { class: "error", text: j.error.message }) : null,
  );
}

export function eventItem(e) {
  const what = e.kind === "command" ? `${e.action} by ${e.by || "?"}: ${e.status}` : `${e.event}${e.detail ? ` (${e.detail})` : ""}`;
  return el(
    "li",
    { class: `event ${e.kind}` },
    el("time", { text: when(e.ts) }),
    el("span", { text: `${e.name || e.uuid || e.host} @${e.host}` }),
    el("span", { class: "muted", text: what }),
  );
}

export function auditItem(a) {
  return el(
    "li",
    { class: `audit ${a.result}` },
    el("time", { text: when(a.ts) }),
    el("span", { text: `${a.by} · ${a.action} ${a.name || a.vm} @${a.host || "?"}` }),
    el("span", { class: `status ${a.result}`, text: a.result }),
  );
}

export function fillLog(list, items) {
  list.replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "nothing yet" })]));
}
