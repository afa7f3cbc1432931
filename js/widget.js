// The RoomWidget frontend: an anywidget ESM module. It renders what the kernel mirrors from its
// room client and never talks to the room server itself.
//
// - Presence and connection state arrive as traitlets (me, others, connection_state, error).
// - Messages arrive as custom messages: one snapshot ({type: "messages-snapshot"}) when this view
//   asks for it ({type: "sync-request"}) or after a resync, then deltas ({type: "messages-delta"})
//   applied in place to the list, rows keyed by message id: one new message is one new row.
// - A click sets the `selection` traitlet itself (one hop to the kernel); a post is
//   {type: "post", text}.
// - The classroom (polls, help queue, pulse, follow the teacher) is its own view (classroom.js),
//   below the messages. A teacher's view also shows moderation controls: delete any message,
//   mute / unmute and remove a person, lock / unlock the room — {type: "call", procedure, input}
//   messages that the kernel forwards for an allow-list of procedures; the server decides.

import { classroomView } from "./classroom.js";
import { button as control, h } from "./dom.js";

/**
 * @typedef {{ [key: string]: unknown, selection_id?: string | null }} Presence
 * @typedef {{ connection_id: string, id?: string, role?: string, name: string, color: string, presence: Presence }} Me
 * @typedef {Me & { connection_ids: string[] }} Other
 * @typedef {{ id: string, author: string, color: string, text: string, time: number }} Message
 * @typedef {{ index: number, insert?: Message[], delete?: number, set?: Message }} Op
 * @typedef {{ type: "messages-snapshot", version: number, messages: Message[] }} Snapshot
 * @typedef {{ type: "messages-delta", base: number, version: number, ops: Op[] }} Delta
 * @typedef {{
 *   room_name: string, connection_state: string, error: string, selection: string | null,
 *   me: Me | Record<string, never>, others: Other[], classroom: Record<string, any>,
 *   progress: Record<string, any>
 * }} State
 * @typedef {{
 *   get<K extends keyof State>(key: K): State[K],
 *   set<K extends keyof State>(key: K, value: State[K]): void,
 *   save_changes(): void,
 *   on(event: string, callback: (...args: any[]) => void): void,
 *   off(event: string, callback: (...args: any[]) => void): void,
 *   send(content: unknown): void,
 * }} Model
 * @typedef {{ name: string, color: string, isMe: boolean }} Selector
 */

// Presence fields the widget itself uses; any other field is shown as a badge on the person.
const OWN_FIELDS = new Set(["name", "color", "selection_id", "cell"]);

const STATE_LABELS = /** @type {Record<string, string>} */ ({
  untouched: "connecting…",
  connecting: "connecting…",
  open: "connected",
  unavailable: "reconnecting…",
  closed: "left the room",
});

/**
 * What the view can tell `RoomWidget.doctor()` about where it runs: the host application and the
 * widget manager, as far as they say (best effort: nothing here is a public API of every host).
 * @param {Model} model
 * @returns {{ host: string, manager: string }}
 */
function hostInfo(model) {
  const w = /** @type {any} */ (globalThis);
  const app = w.jupyterapp;
  let host = app ? `${app.name ?? "Jupyter"} ${app.version ?? ""}`.trim() : "";
  const marimo = document.querySelector("marimo-version");
  if (!host && marimo) host = `marimo ${marimo.getAttribute("data-version") ?? ""}`.trim();
  if (!host && w.acquireVsCodeApi) host = "VS Code";
  if (!host && w.google?.colab) host = "Colab";
  const manager = /** @type {any} */ (model).widget_manager;
  const version = String(manager?.version ?? manager?.constructor?.version ?? "");
  const described = version ? `widget manager ${version}` : "a widget manager (it does not say its version)";
  return { host: host || "an unnamed host", manager: manager ? described : "" };
}

// Rows live in chunks of about this many: adding one row to a room of 10,000 lays out one
// chunk, not the whole list.
const CHUNK = 100;

// One formatter for every row: toLocaleTimeString builds a new one per call.
const CLOCK = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });


/** @param {string} key @param {unknown} value @returns {string | null} */
function badge(key, value) {
  if (value === null || value === undefined || value === false || value === "") return null;
  const label = key.replace(/_/g, " ");
  return value === true ? label : `${label}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`;
}

/** @param {number} time @returns {string} */
function clock(time) {
  return time ? CLOCK.format(new Date(time)) : "";
}

/**
 * A person in the list: coloured dot, name, and badges for their custom presence fields; in a
 * teacher's view, a student's mute / remove controls.
 * @param {Me | Other} person
 * @param {boolean} isMe
 * @param {{ muted: Set<string> } | null} moderate the teacher's controls, or null
 */
function personNode(person, isMe, moderate) {
  const li = h("li", isMe ? "pluv-person pluv-me" : "pluv-person");
  li.dataset.connectionId = person.connection_id;
  li.dataset.name = person.name;
  if (person.id) li.dataset.user = person.id;
  if (person.role) li.dataset.role = person.role;
  li.style.setProperty("--pluv-color", person.color);
  li.append(h("span", "pluv-dot"), h("span", "pluv-name", isMe ? `${person.name} (you)` : person.name));
  for (const [key, value] of Object.entries(person.presence ?? {})) {
    if (OWN_FIELDS.has(key)) continue;
    const text = badge(key, value);
    if (text) {
      const span = h("span", "pluv-badge", text);
      span.dataset.field = key;
      li.append(span);
    }
  }
  if (person.role === "teacher" && !isMe) li.append(h("span", "pluv-tag", "teacher"));
  if (moderate && !isMe && person.id && person.role !== "teacher") {
    const muted = moderate.muted.has(person.id);
    const mute = control("pluv-mod", muted ? "unmute" : "mute", "pluv-user-mute");
    mute.dataset.action = muted ? "users.unmute" : "users.mute";
    const remove = control("pluv-mod", "remove", "pluv-user-remove");
    remove.dataset.action = "users.remove";
    li.append(mute, remove);
  }
  return li;
}

/** @param {Message} message @returns {HTMLElement} a message's row */
function messageRow(message) {
  const row = h("li", "pluv-message");
  row.dataset.id = message.id;
  row.tabIndex = 0;
  const meta = h("div", "pluv-meta");
  const author = h("span", "pluv-author", message.author);
  author.style.color = message.color;
  const remove = control("pluv-mod pluv-msg-delete", "delete", "pluv-msg-delete");
  remove.title = "delete this message for everyone";
  meta.append(author, h("time", "pluv-time", clock(message.time)), h("span", "pluv-selectors"), remove);
  row.append(meta, h("p", "pluv-text", message.text));
  return row;
}

/**
 * Outline a row in the colour of who selected it, with their names as tags.
 * @param {HTMLElement} row
 * @param {Selector[]} by
 */
function markSelected(row, by) {
  const tags = by.map((person) => {
    const tag = h("span", person.isMe ? "pluv-selector pluv-selector-me" : "pluv-selector", person.name);
    tag.style.setProperty("--pluv-color", person.color);
    return tag;
  });
  /** @type {HTMLElement} */ (row.querySelector(".pluv-selectors")).replaceChildren(...tags);
  const outline = by.find((person) => !person.isMe) ?? by[0];
  row.classList.toggle("pluv-selected", by.length > 0);
  row.classList.toggle("pluv-selected-by-me", by.some((person) => person.isMe));
  row.dataset.selectedBy = by.map((person) => person.name).join(",");
  if (outline) row.style.setProperty("--pluv-color", outline.color);
  else row.style.removeProperty("--pluv-color");
}

/** @param {Selector[] | undefined} a @param {Selector[] | undefined} b */
function sameSelectors(a, b) {
  if (!a || !b) return a === b;
  return a.length === b.length && a.every((x, i) => x.name === b[i].name && x.color === b[i].color && x.isMe === b[i].isMe);
}

export default {
  /** @param {{ model: Model, el: HTMLElement }} context */
  render({ model, el }) {
    const root = h("div", "pluv-room");
    const header = h("header", "pluv-header");
    const title = h("span", "pluv-room-name");
    const status = h("span", "pluv-status");
    const lock = control("pluv-mod pluv-lock", "lock room", "pluv-room-lock");
    header.append(title, lock, status);
    const people = h("ul", "pluv-people");
    const list = h("div", "pluv-messages");
    list.setAttribute("role", "list");
    const empty = h("p", "pluv-empty", "No messages yet — write the first one.");
    const form = /** @type {HTMLFormElement} */ (h("form", "pluv-compose"));
    const input = /** @type {HTMLInputElement} */ (h("input", "pluv-input"));
    input.type = "text";
    input.placeholder = "Write a message…";
    input.maxLength = 2000;
    const button = /** @type {HTMLButtonElement} */ (h("button", "pluv-post", "Post"));
    button.type = "submit";
    form.append(input, button);
    const error = h("p", "pluv-error");
    error.title = "click to dismiss";
    const notice = h("p", "pluv-notice"); // a student's: the room is locked, or they are muted
    let dismissed = "";
    const classroom = classroomView({ model: /** @type {any} */ (model), el });
    root.append(header, people, list, empty, notice, form, error, classroom.node);
    el.append(root);
    /** @param {string} procedure @param {Record<string, unknown>} input */
    const call = (procedure, input) => model.send({ type: "call", procedure, input });
    /** The room's moderation state, as the server's class view says it (never guessed here). */
    function moderation() {
      const view = /** @type {Record<string, any>} */ (model.get("classroom") ?? {});
      const muted = Array.isArray(view.muted) ? new Set(view.muted.map(String)) : new Set();
      return { locked: view.locked === true, muted, mutedMe: view.muted === true };
    }

    /** @type {Map<string, HTMLElement>} message id -> its row */
    const rows = new Map();
    /** @type {Map<string, Selector[]>} message id -> who selected it, as shown */
    let shownSelectors = new Map();
    /** @type {number | null} the version of the list shown; null until the first snapshot */
    let version = null;

    function renderState() {
      const state = model.get("connection_state");
      root.dataset.state = state;
      title.textContent = model.get("room_name");
      status.textContent = STATE_LABELS[state] ?? state;
      input.disabled = state === "closed";
      button.disabled = state !== "open";
      const me = model.get("me");
      const role = "role" in me ? me.role ?? "" : "";
      root.dataset.role = role;
      lock.hidden = role !== "teacher";
      const { locked, mutedMe } = moderation();
      lock.textContent = locked ? "unlock room" : "lock room";
      lock.dataset.locked = String(locked);
      root.dataset.locked = String(locked);
      const words = mutedMe ? "Your teacher muted you: you can read, not post." :
        locked && role !== "teacher" ? "Your teacher locked the room: you can read, not post." : "";
      notice.textContent = words;
      notice.hidden = !words;
      const text = model.get("error");
      error.textContent = text;
      error.hidden = !text || text === dismissed;
    }

    function renderPeople() {
      const me = model.get("me");
      const moderate = "role" in me && me.role === "teacher" ? { muted: moderation().muted } : null;
      const nodes = model.get("others").map((other) => personNode(other, false, moderate));
      if ("connection_id" in me) nodes.unshift(personNode(/** @type {Me} */ (me), true, null));
      people.replaceChildren(...nodes);
      people.dataset.count = String(nodes.length);
    }

    /** @returns {Map<string, Selector[]>} message id -> who selected it (me first) */
    function selectors() {
      /** @type {Map<string, Selector[]>} */
      const by = new Map();
      /** @param {unknown} id @param {Selector} person */
      const add = (id, person) => {
        if (typeof id !== "string") return;
        const entry = by.get(id) ?? [];
        entry.push(person);
        by.set(id, entry);
      };
      const me = model.get("me");
      if ("connection_id" in me) add(model.get("selection"), { name: "you", color: me.color, isMe: true });
      for (const other of model.get("others")) {
        add(other.presence?.selection_id, { name: other.name, color: other.color, isMe: false });
      }
      return by;
    }

    /** Re-mark only the rows whose selectors changed: O(selections), not O(messages). */
    function renderSelections() {
      const next = selectors();
      for (const id of new Set([...shownSelectors.keys(), ...next.keys()])) {
        const by = next.get(id);
        if (sameSelectors(shownSelectors.get(id), by)) continue;
        const row = rows.get(id);
        if (row) markSelected(row, by ?? []);
      }
      shownSelectors = next;
    }

    /** @param {Message} message */
    function rowFor(message) {
      const row = messageRow(message);
      const by = shownSelectors.get(message.id);
      if (by) markSelected(row, by);
      rows.set(message.id, row);
      return row;
    }

    /** @param {HTMLElement} row */
    function forget(row) {
      const id = row.dataset.id ?? "";
      if (rows.get(id) === row) rows.delete(id);
    }

    /** @param {() => void} change a change to the list, keeping it scrolled to the end if it was */
    function keepingScroll(change) {
      const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
      change();
      empty.hidden = list.childElementCount > 0;
      if (nearBottom) list.scrollTop = list.scrollHeight;
    }

    function newChunk() {
      const chunk = h("ol", "pluv-chunk");
      chunk.setAttribute("role", "presentation");
      return chunk;
    }

    /**
     * The chunk holding position `index` of the whole list, and the position inside it (the end of
     * the last chunk for `index` = the length).
     * @param {number} index
     * @returns {[HTMLElement | null, number]}
     */
    function locate(index) {
      let chunk = /** @type {HTMLElement | null} */ (list.firstElementChild);
      while (chunk) {
        const size = chunk.childElementCount;
        const next = /** @type {HTMLElement | null} */ (chunk.nextElementSibling);
        if (index < size || (index === size && !next)) return [chunk, index];
        index -= size;
        chunk = next;
      }
      return [null, 0];
    }

    /** @param {number} index @param {HTMLElement[]} newRows */
    function insertRows(index, newRows) {
      let [chunk, offset] = locate(index);
      if (!chunk || (offset === chunk.childElementCount && offset >= CHUNK && !chunk.nextElementSibling)) {
        chunk = list.appendChild(newChunk()); // appending to a full last chunk: start a new one
        offset = 0;
      }
      const before = chunk.children[offset] ?? null;
      if (newRows.length === 1) chunk.insertBefore(newRows[0], before);
      else {
        const fragment = document.createDocumentFragment();
        fragment.append(...newRows);
        chunk.insertBefore(fragment, before);
      }
      while (chunk.childElementCount > 2 * CHUNK) {
        const tail = newChunk(); // split an overgrown chunk (inserts in the middle)
        tail.append(...Array.from(chunk.children).slice(CHUNK));
        chunk.after(tail);
        chunk = tail;
      }
    }

    /** @param {number} index @param {number} count */
    function deleteRows(index, count) {
      for (let n = 0; n < count; n++) {
        const [chunk, offset] = locate(index);
        const row = /** @type {HTMLElement | null} */ (chunk?.children[offset] ?? null);
        if (!chunk || !row) break;
        forget(row);
        row.remove();
        if (chunk.childElementCount === 0) chunk.remove();
      }
    }

    /** @param {number} index @param {Message} message */
    function setRow(index, message) {
      const [chunk, offset] = locate(index);
      const row = /** @type {HTMLElement | null} */ (chunk?.children[offset] ?? null);
      if (!row) return;
      forget(row);
      row.replaceWith(rowFor(message));
    }

    /** @param {Snapshot} snapshot */
    function applySnapshot(snapshot) {
      keepingScroll(() => {
        rows.clear();
        const chunks = [];
        for (let start = 0; start < snapshot.messages.length; start += CHUNK) {
          const chunk = newChunk();
          chunk.append(...snapshot.messages.slice(start, start + CHUNK).map(rowFor));
          chunks.push(chunk);
        }
        list.replaceChildren(...chunks);
      });
      version = snapshot.version;
    }

    /** @param {Delta} delta */
    function applyDelta(delta) {
      if (version === null || delta.version <= version) return; // no snapshot yet, or already in
      if (delta.base !== version) {
        version = null; // a gap: start over from a snapshot
        model.send({ type: "sync-request" });
        return;
      }
      keepingScroll(() => {
        for (const op of delta.ops) {
          if (op.insert) insertRows(op.index, op.insert.map(rowFor));
          else if (op.delete) deleteRows(op.index, op.delete);
          else if (op.set) setRow(op.index, op.set);
        }
      });
      version = delta.version;
    }

    /** @param {{ type?: string, id?: number }} content */
    function onCustom(content) {
      if (content.type === "messages-snapshot") applySnapshot(/** @type {Snapshot} */ (content));
      else if (content.type === "messages-delta") applyDelta(/** @type {Delta} */ (content));
      else if (content.type === "doctor-ping") model.send({ type: "doctor-pong", id: content.id, ...hostInfo(model) });
    }

    error.addEventListener("click", () => {
      dismissed = model.get("error");
      error.hidden = true;
    });
    people.addEventListener("click", (event) => {
      const control = event.target instanceof Element ? event.target.closest(".pluv-mod") : null;
      const person = control?.closest(".pluv-person");
      const action = control instanceof HTMLElement ? control.dataset.action : undefined;
      const user = person instanceof HTMLElement ? person.dataset.user : undefined;
      if (!action || !user) return;
      call(action, { user_id: user }); // the server's next class view shows the change
    });
    lock.addEventListener("click", () => call(moderation().locked ? "room.unlock" : "room.lock", {}));
    list.addEventListener("click", (event) => {
      const remove = event.target instanceof Element ? event.target.closest(".pluv-msg-delete") : null;
      const owner = remove?.closest(".pluv-message");
      if (owner instanceof HTMLElement) {
        event.stopPropagation();
        call("messages.delete", { id: owner.dataset.id ?? "" });
        return;
      }
      const row = /** @type {HTMLElement | null} */ (
        event.target instanceof Element ? event.target.closest(".pluv-message") : null
      );
      if (!row || model.get("connection_state") === "closed") return;
      // One hop: the kernel observes `selection`. Clicking your own selection again clears it.
      const id = row.dataset.id ?? null;
      model.set("selection", model.get("selection") === id ? null : id);
      model.save_changes();
    });
    list.addEventListener("keydown", (event) => {
      if ((event.key === "Enter" || event.key === " ") && event.target instanceof HTMLElement) {
        event.preventDefault();
        event.target.click();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text || button.disabled) return;
      model.send({ type: "post", text });
      input.value = "";
    });
    // Keep JupyterLab's command-mode shortcuts (a, b, d d, …) out of the text box.
    input.addEventListener("keydown", (event) => event.stopPropagation());

    const onState = () => renderState();
    const onPeople = () => {
      renderPeople();
      renderSelections();
    };
    const onSelection = () => renderSelections();
    let shownModeration = "";
    const onModeration = () => { // the class view changes with every vote: redraw on moderation only
      const { locked, muted, mutedMe } = moderation();
      const now = JSON.stringify([locked, [...muted], mutedMe]);
      if (now === shownModeration) return;
      shownModeration = now;
      renderState();
      renderPeople();
    };
    model.on("change:classroom", onModeration);
    model.on("change:connection_state", onState);
    model.on("change:room_name", onState);
    model.on("change:error", onState);
    model.on("change:me", onPeople);
    model.on("change:me", onState);
    model.on("change:others", onPeople);
    model.on("change:selection", onSelection);
    model.on("msg:custom", onCustom);
    renderState();
    renderPeople();
    renderSelections();
    empty.hidden = true; // until the first snapshot says otherwise
    model.send({ type: "sync-request" });

    return () => {
      model.off("change:classroom", onModeration);
      model.off("change:connection_state", onState);
      model.off("change:room_name", onState);
      model.off("change:error", onState);
      model.off("change:me", onPeople);
      model.off("change:me", onState);
      model.off("change:others", onPeople);
      model.off("change:selection", onSelection);
      model.off("msg:custom", onCustom);
      classroom.destroy();
    };
  },
};
