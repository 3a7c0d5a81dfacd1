// What a VM's guest agent says: its addresses under its name in the list, and OS, hostname,
// addresses and one usage bar per filesystem on its page. Text only (el), never HTML.
import { api, vmPath } from "./api.js";
import { bytesRate, el } from "./format.js";

const bytes = (v) => bytesRate(v, true);

// The addresses to show in a row: IPv4 first (what an operator types), at most two. A running
// VM without any says why; a stopped one has nothing to say.
export function addressLine(guest, vm) {
  const all = (guest && guest.addresses) || [];
  const silent = guest && guest.status === "unavailable" && vm.is_active;
  if (!all.length) return el("span", { class: "vm-addr muted", text: silent ? "no guest agent" : "" });
  const v4 = all.filter((a) => a.family === "ipv4");
  const ordered = [...v4, ...all.filter((a) => a.family !== "ipv4")];
  const shown = ordered.slice(0, 2).map((a) => a.address);
  const more = ordered.length > 2 ? ` +${ordered.length - 2}` : "";
  const title = all.map((a) => `${a.interface}: ${a.address}/${a.prefix}`).join("\n");
  return el("span", { class: "vm-addr", title, text: shown.join(", ") + more });
}

export async function loadGuest(vm) {
  return api(vmPath(vm, `/guest?host=${encodeURIComponent(vm.host)}`));
}

function usage(fs) {
  const meter = el("meter", { min: "0", max: "100", low: "80", high: "90", optimum: "0", value: String(fs.used_percent ?? 0) });
  const text = fs.used_percent === null || fs.used_percent === undefined
    ? "size unknown"
    : `${bytes(fs.used_bytes)} of ${bytes(fs.total_bytes)} (${fs.used_percent.toFixed(1)} %)`;
  return el(
    "li",
    { class: "fs", dataset: { mountpoint: fs.mountpoint } },
    el("span", { class: "fs-mount", title: fs.device || "", text: fs.mountpoint }),
    meter,
    el("span", { class: "fs-used muted", text: `${text}${fs.type ? ` · ${fs.type}` : ""}` }),
  );
}

// The VM page's panel: `GET /vm/<id>/guest` (or a `vm_guest` push, the same shape).
export function guestPanel(guest) {
  if (!guest || guest.status === "unknown") {
    return el("div", { id: "guest", class: "card guest", dataset: { status: "unknown" } }, el("h2", { text: "Inside the guest" }), el("p", { class: "muted", text: "nothing reported yet" }));
  }
  const os = guest.os || {};
  const addresses = (guest.addresses || []).map((a) => `${a.address}/${a.prefix} (${a.interface})`);
  const rows = [
    ["Hostname", guest.hostname || "–"],
    ["OS", os.pretty_name || [os.name, os.version].filter(Boolean).join(" ") || "–"],
    ["Kernel", os.kernel_release || "–"],
    ["Addresses", addresses.length ? addresses.join(", ") : "–"],
    ["Address source", guest.address_source || "–"],
    ["Users", guest.users === null || guest.users === undefined ? "–" : String(guest.users)],
  ];
  const filesystems = guest.filesystems || [];
  return el(
    "div",
    { id: "guest", class: "card guest", dataset: { status: guest.status } },
    el("h2", {}, "Inside the guest ", el("span", { class: `state ${guest.status === "ok" ? "running" : "unknown"}`, text: guest.status })),
    guest.reason ? el("p", { class: "muted guest-reason", text: guest.reason }) : null,
    el("dl", { class: "facts" }, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
    filesystems.length ? el("ul", { class: "filesystems" }, filesystems.map(usage)) : null,
  );
}
