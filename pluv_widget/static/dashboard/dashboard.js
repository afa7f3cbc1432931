// The teacher dashboard: every room live, one room's storage as a tree. Plain ESM, no build step.
//
// Signing in asks the server's /token route for a server-scoped teacher token (a teacher code,
// no room); the token is kept for this tab only (sessionStorage). The page then opens one
// websocket, `dashboard/live?token=...`, on which the server pushes the whole summary whenever
// something changes (no polling), and reads one room's storage from the REST API.

const base = location.pathname.replace(/\/dashboard\/?(index\.html)?$/, "");
const $ = (id) => document.getElementById(id);
let socket = null;
let rooms = [];
let retry = 0;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function ago(seconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function setStatus(text) {
  $("status").textContent = text;
}

async function signIn(code, name) {
  const url = `${base}/token?join_code=${encodeURIComponent(code)}&name=${encodeURIComponent(name)}`;
  const response = await fetch(url);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  if (body.scope !== "server") throw new Error("this code does not give a teacher's token for the whole server");
  sessionStorage.setItem("pluv-dashboard-token", body.token);
  return body.token;
}

function signOut() {
  sessionStorage.removeItem("pluv-dashboard-token");
  if (socket) socket.close();
  socket = null;
  show();
}

function connect(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}${base}/dashboard/live?token=${encodeURIComponent(token)}`);
  setStatus("connecting…");
  socket.onopen = () => { retry = 0; setStatus("live"); };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "rooms") {
      rooms = message.rooms;
      render();
    } else if (message.type === "error") {
      $("sign-in-error").textContent = message.error;
    }
  };
  socket.onclose = (event) => {
    if (socket === null) return;
    if (event.code >= 4001 && event.code <= 4004) {  // the token was refused or expired: sign in again
      sessionStorage.removeItem("pluv-dashboard-token");
      $("sign-in-error").textContent = `signed out: ${event.reason || "the server refused the token"}`;
      socket = null;
      show();
      return;
    }
    setStatus("reconnecting…");
    setTimeout(() => connect(token), Math.min(30000, 500 * 2 ** retry++));
  };
}

function roomCard(room) {
  const link = el("a", { href: `#room=${encodeURIComponent(room.name)}`, text: room.name });
  const card = el("article", { class: "room", "data-testid": `room-${room.name}` },
    el("h2", {}, link, el("span", { class: "meta", text: `${room.occupant_count} here` })),
    el("div", { class: "meta", text: `${room.storage_bytes} bytes · active ${ago(room.last_activity)}` }));
  if (room.occupants) {
    card.append(el("div", { class: "label", text: "who is here" }));
    const list = el("ul", { "data-testid": "occupants" });
    for (const person of room.occupants) {
      list.append(el("li", { class: `role-${person.role}`, text: `${person.name} (${person.role})` }));
    }
    if (!room.occupants.length) list.append(el("li", { class: "empty", text: "nobody" }));
    card.append(list);
  } else {
    card.append(el("div", { class: "meta", text: "served by another server process" }));
  }
  if (room.hands && room.hands.length) {
    card.append(el("div", { class: "label", text: "hands raised" }));
    const list = el("ol", { "data-testid": "hands" });
    for (const hand of room.hands) list.append(el("li", { text: `${hand.name} · ${ago(hand.since)}` }));
    card.append(list);
  }
  if (room.polls && room.polls.length) {
    card.append(el("div", { class: "label", text: "open polls" }));
    const list = el("ul", { "data-testid": "polls" });
    for (const poll of room.polls) list.append(el("li", { text: `${poll.question} — ${poll.voters} voted` }));
    card.append(list);
  }
  if (room.messages && room.messages.length) {
    card.append(el("div", { class: "label", text: "recent messages" }));
    const list = el("ul", { "data-testid": "messages" });
    for (const message of room.messages) list.append(el("li", { text: `${message.author}: ${message.text}` }));
    card.append(list);
  }
  return card;
}

function tree(value, key) {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
    const node = el("details", { open: "" },
      el("summary", { text: `${key ?? "storage"} ${Array.isArray(value) ? `[${value.length}]` : `{${entries.length}}`}` }));
    for (const [childKey, child] of entries) node.append(tree(child, childKey));
    return node;
  }
  return el("div", { class: "leaf", text: `${key}: ${JSON.stringify(value)}` });
}

async function renderRoom(name) {
  $("room-name").textContent = name;
  const response = await fetch(`${base}/api/rooms/${encodeURIComponent(name)}/storage`, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem("pluv-dashboard-token")}` },
  });
  const body = await response.json();
  const target = $("room-tree");
  target.replaceChildren(response.ok
    ? el("div", {}, tree(body.storage, "storage"), tree(body.protected, "protected"))
    : el("p", { class: "error", text: body.error }));
}

function currentRoom() {
  const match = /^#room=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function render() {
  const room = currentRoom();
  $("rooms").hidden = room !== null;
  $("room").hidden = room === null;
  if (room !== null) {
    renderRoom(room);
    return;
  }
  const target = $("rooms");
  target.replaceChildren(...rooms.map(roomCard));
  if (!rooms.length) target.append(el("p", { class: "empty", text: "No room has storage or anyone in it yet." }));
}

function show() {
  const token = sessionStorage.getItem("pluv-dashboard-token");
  $("sign-in").hidden = token !== null;
  $("sign-out").hidden = token === null;
  if (token === null) {
    $("rooms").hidden = true;
    $("room").hidden = true;
    setStatus("signed out");
    return;
  }
  if (socket === null) connect(token);
  render();
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $("sign-in-error").textContent = "";
  try {
    await signIn(String(form.get("code")), String(form.get("name")));
    show();
  } catch (error) {
    $("sign-in-error").textContent = error.message;
  }
});
$("sign-out").addEventListener("click", signOut);
$("back").addEventListener("click", (event) => { event.preventDefault(); location.hash = ""; });
window.addEventListener("hashchange", render);
show();
