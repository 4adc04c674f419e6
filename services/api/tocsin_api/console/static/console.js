// Tocsin console: progressive enhancement only. Every page works without this file;
// with it, the incident list and the incident page update live (Server-Sent Events),
// "select all" works, and a drag over a schedule's Final row fills the override form.
// No framework, no build step.

const announce = (text) => {
  const live = document.getElementById("live");
  if (live) live.textContent = text;
};

const STATUSES = ["triggered", "acknowledged", "resolved"];

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function fmt(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.dataset.field = "status";
  span.textContent = status;
  return span;
}

// A row like the server renders (built with the DOM: incident text is never markup).
function row(incident) {
  const tr = document.createElement("tr");
  tr.dataset.id = incident.id;
  const pick = document.createElement("td");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.name = "id";
  box.value = incident.id;
  box.setAttribute("aria-label", `Select ${incident.title}`);
  const etag = document.createElement("input");
  etag.type = "hidden";
  etag.name = `etag-${incident.id}`;
  etag.value = incident.etag || "";
  pick.append(box, etag);
  const title = document.createElement("td");
  const link = document.createElement("a");
  link.href = `/console/incidents/${encodeURIComponent(incident.id)}`;
  link.textContent = incident.title;
  title.append(link);
  const status = document.createElement("td");
  status.append(badge(incident.status));
  const created = document.createElement("td");
  const time = document.createElement("time");
  time.dateTime = incident.created_at || "";
  time.textContent = fmt(incident.created_at);
  created.append(time);
  tr.append(pick, title, status, cell(incident.urgency || ""), cell(incident.service_id || ""), created);
  tr.classList.add("fresh");
  return tr;
}

function wanted(table, incident) {
  const statuses = (table.dataset.statuses || "").split(" ").filter(Boolean);
  if (statuses.length && !statuses.includes(incident.status)) return false;
  if (table.dataset.service && table.dataset.service !== incident.service_id) return false;
  if (table.dataset.urgency && table.dataset.urgency !== incident.urgency) return false;
  if (table.dataset.team) return false; // the event names no team: such lists reload to see it
  const q = (table.dataset.q || "").toLowerCase();
  if (q) {
    const labels = Object.entries(incident.labels || {}).map(([k, v]) => `${k}=${v}`);
    const hay = [incident.title, incident.id, incident.service_id, ...labels].join("\n").toLowerCase();
    if (!hay.includes(q)) return false;
  }
  return true;
}

function recount(before, after) {
  for (const [status, delta] of [[before, -1], [after, 1]]) {
    if (!STATUSES.includes(status)) continue;
    const el = document.querySelector(`[data-count="${status}"]`);
    if (!el) continue;
    const n = parseInt(el.textContent, 10);
    if (!Number.isNaN(n)) el.textContent = String(Math.max(0, n + delta)) + (el.textContent.endsWith("+") ? "+" : "");
  }
}

// The stream's state on <body data-live>: "open" while events can arrive.
function watch() {
  const source = new EventSource("/console/stream");
  source.addEventListener("open", () => { document.body.dataset.live = "open"; });
  source.addEventListener("error", () => {
    document.body.dataset.live = source.readyState === EventSource.CLOSED ? "closed" : "retrying";
    if (source.readyState === EventSource.CLOSED) announce("Live updates stopped; reload the page.");
  });
  return source;
}

function liveList(table) {
  const body = table.tBodies[0];
  const source = watch();
  source.addEventListener("incident", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    const incident = event.incident;
    if (!incident || !incident.id) return;
    const existing = body.querySelector(`tr[data-id="${CSS.escape(incident.id)}"]`);
    const before = existing ? existing.querySelector("[data-field=status]").textContent : null;
    if (before !== incident.status) recount(before, incident.status);
    if (existing) {
      if (!wanted(table, incident)) {
        existing.remove();
      } else {
        existing.querySelector("[data-field=status]").replaceWith(badge(incident.status));
        const etag = existing.querySelector(`input[type=hidden]`);
        if (etag) etag.value = incident.etag || "";
      }
    } else if (wanted(table, incident)) {
      body.prepend(row(incident));
    }
    const empty = document.querySelector(".empty");
    if (empty) empty.hidden = body.rows.length > 0;
    announce(`${incident.title}: ${incident.status}`);
  });
}

function liveIncident(article) {
  const id = article.dataset.id;
  const source = watch();
  source.addEventListener("incident", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch { return; }
    if (!event.incident || event.incident.id !== id) return;
    const status = document.getElementById("status");
    if (status && status.textContent !== event.incident.status) {
      status.replaceWith(Object.assign(badge(event.incident.status), { id: "status" }));
      announce(`Now ${event.incident.status}`);
    }
    document.getElementById("stale").hidden = false;
  });
}

// "Select all" needs this script, so the page shows it only when the script runs.
function selectAll() {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.hidden = false;
  all.addEventListener("click", () => {
    const boxes = [...document.querySelectorAll("#incidents tbody input[type=checkbox]")];
    const check = boxes.some((box) => !box.checked);
    for (const box of boxes) box.checked = check;
    all.textContent = check ? "Select none" : "Select all";
  });
}

// On a phone the list matters first: the filters fold away (one tap opens them).
const filters = document.getElementById("filters");
if (filters && window.matchMedia("(max-width: 40rem)").matches) filters.open = false;

const table = document.getElementById("incidents");
if (table && table.dataset.live && "EventSource" in window) liveList(table);
const article = document.getElementById("incident");
if (article && "EventSource" in window) liveIncident(article);
selectAll();
for (const input of document.querySelectorAll("input.copy")) input.addEventListener("focus", () => input.select());

// Schedule calendar: a drag over a day's Final row (96 quarter hours, UTC) fills the
// override form's times; the form is still what adds the override (and works without this).
const SLOTS = 96;

function slotAt(track, x) {
  const box = track.getBoundingClientRect();
  return Math.max(0, Math.min(SLOTS, Math.round(((x - box.left) / box.width) * SLOTS)));
}

function localInput(day, slot) {
  const at = new Date(`${day}T00:00:00Z`);
  at.setUTCMinutes(slot * 15);
  return at.toISOString().slice(0, 16);
}

function calendarDrag(cal) {
  const form = document.getElementById("override-form");
  if (!form) return;
  let from = null; // {track, slot}
  let mark = null;
  const show = (track, a, b) => {
    if (!mark) {
      mark = document.createElement("li");
      mark.setAttribute("aria-hidden", "true");
    }
    mark.className = `sel s${Math.min(a, b, SLOTS - 1)} e${Math.max(Math.max(a, b), Math.min(a, b) + 1)}`;
    if (mark.parentNode !== track) track.append(mark);
  };
  const trackAt = (x, y) => document.elementFromPoint(x, y)?.closest(".final .track[data-day]");
  cal.addEventListener("pointerdown", (event) => {
    const track = event.target.closest(".final .track[data-day]");
    if (!track || event.button !== 0 || getComputedStyle(track).display !== "grid") return;
    event.preventDefault();
    from = { track, slot: Math.min(slotAt(track, event.clientX), SLOTS - 1) };
    cal.classList.add("dragging");
    show(track, from.slot, from.slot + 1);
  });
  cal.addEventListener("pointermove", (event) => {
    if (!from) return;
    const track = trackAt(event.clientX, event.clientY);
    if (track === from.track) show(track, from.slot, slotAt(track, event.clientX));
  });
  window.addEventListener("pointerup", (event) => {
    if (!from) return;
    const start = from;
    from = null;
    cal.classList.remove("dragging");
    mark?.remove();
    const track = trackAt(event.clientX, event.clientY) || start.track;
    let a = { day: start.track.dataset.day, slot: start.slot };
    let b = { day: track.dataset.day, slot: slotAt(track, event.clientX) };
    const key = (p) => `${p.day}:${String(p.slot).padStart(2, "0")}`;
    if (key(b) < key(a)) [a, b] = [b, a];
    if (key(b) <= key(a)) b = { day: a.day, slot: a.slot + 4 }; // a click: one hour
    form.elements.start.value = localInput(a.day, a.slot);
    form.elements.end.value = localInput(b.day, b.slot);
    form.scrollIntoView({ block: "center" });
    form.elements.user_id.focus();
    announce(`Override form filled: from ${form.elements.start.value.replace("T", " ")} to ${form.elements.end.value.replace("T", " ")} UTC. Choose who, then Add override.`);
  });
}

const cal = document.getElementById("calendar");
if (cal) calendarDrag(cal);
