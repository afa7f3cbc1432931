// The RoomWidget frontend: an anywidget ESM module. It only renders the traitlets the kernel
// mirrors from its room client and sends two kinds of messages back ({type: "post", text} and
// {type: "select", id}); it never talks to the room server itself.

/**
 * @typedef {{ [key: string]: unknown, selection_id?: string | null }} Presence
 * @typedef {{ connection_id: string, name: string, color: string, presence: Presence }} Me
 * @typedef {Me & { connection_ids: string[] }} Other
 * @typedef {{ id: string, author: string, color: string, text: string, time: number }} Message
 * @typedef {{
 *   room_name: string, connection_state: string, error: string,
 *   me: Me | Record<string, never>, others: Other[], messages: Message[]
 * }} State
 * @typedef {{
 *   get<K extends keyof State>(key: K): State[K],
 *   on(event: string, callback: () => void): void,
 *   off(event: string, callback: () => void): void,
 *   send(content: unknown): void,
 * }} Model
 */

// Presence fields the widget itself uses; any other field is shown as a badge on the person.
const OWN_FIELDS = new Set(["name", "color", "selection_id"]);

const STATE_LABELS = /** @type {Record<string, string>} */ ({
  untouched: "connecting…",
  connecting: "connecting…",
  open: "connected",
  unavailable: "reconnecting…",
  closed: "left the room",
});

/**
 * @param {string} tag
 * @param {string} className
 * @param {string} [text]
 * @returns {HTMLElement}
 */
function h(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** @param {string} key @param {unknown} value @returns {string | null} */
function badge(key, value) {
  if (value === null || value === undefined || value === false || value === "") return null;
  const label = key.replace(/_/g, " ");
  return value === true ? label : `${label}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`;
}

/** @param {number} time @returns {string} */
function clock(time) {
  if (!time) return "";
  return new Date(time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/**
 * A person in the list: coloured dot, name, and badges for their custom presence fields.
 * @param {Me | Other} person
 * @param {boolean} isMe
 */
function personNode(person, isMe) {
  const li = h("li", isMe ? "pluv-person pluv-me" : "pluv-person");
  li.dataset.connectionId = person.connection_id;
  li.dataset.name = person.name;
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
  return li;
}

export default {
  /** @param {{ model: Model, el: HTMLElement }} context */
  render({ model, el }) {
    const root = h("div", "pluv-room");
    const header = h("header", "pluv-header");
    const title = h("span", "pluv-room-name");
    const status = h("span", "pluv-status");
    header.append(title, status);
    const people = h("ul", "pluv-people");
    const list = h("ol", "pluv-messages");
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
    let dismissed = "";
    root.append(header, people, list, empty, form, error);
    el.append(root);

    /** @type {Map<string, HTMLElement>} message id -> its row, reused across renders */
    const rows = new Map();

    function renderState() {
      const state = model.get("connection_state");
      root.dataset.state = state;
      title.textContent = model.get("room_name");
      status.textContent = STATE_LABELS[state] ?? state;
      const live = state === "open";
      input.disabled = state === "closed";
      button.disabled = !live;
      const text = model.get("error");
      error.textContent = text;
      error.hidden = !text || text === dismissed;
    }

    function renderPeople() {
      const me = model.get("me");
      const others = model.get("others");
      const nodes = others.map((other) => personNode(other, false));
      if ("connection_id" in me) nodes.unshift(personNode(/** @type {Me} */ (me), true));
      people.replaceChildren(...nodes);
      people.dataset.count = String(nodes.length);
    }

    function renderMessages() {
      const messages = model.get("messages");
      const me = model.get("me");
      const others = model.get("others");
      /** @type {Map<string, {name: string, color: string, isMe: boolean}[]>} */
      const selectors = new Map();
      /** @type {(Me & { isMe: boolean })[]} */
      const everyone = others.map((other) => ({ ...other, isMe: false }));
      if ("connection_id" in me) everyone.unshift({ .../** @type {Me} */ (me), isMe: true });
      for (const person of everyone) {
        const id = person.presence?.selection_id;
        if (typeof id !== "string") continue;
        const entry = selectors.get(id) ?? [];
        entry.push({ name: person.isMe ? "you" : person.name, color: person.color, isMe: person.isMe });
        selectors.set(id, entry);
      }

      const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
      const seen = new Set();
      const ordered = messages.map((message) => {
        seen.add(message.id);
        let row = rows.get(message.id);
        if (!row) {
          row = h("li", "pluv-message");
          row.dataset.id = message.id;
          row.tabIndex = 0;
          const meta = h("div", "pluv-meta");
          meta.append(h("span", "pluv-author"), h("time", "pluv-time"), h("span", "pluv-selectors"));
          row.append(meta, h("p", "pluv-text"));
          rows.set(message.id, row);
        }
        const author = /** @type {HTMLElement} */ (row.querySelector(".pluv-author"));
        author.textContent = message.author;
        author.style.color = message.color;
        /** @type {HTMLElement} */ (row.querySelector(".pluv-time")).textContent = clock(message.time);
        /** @type {HTMLElement} */ (row.querySelector(".pluv-text")).textContent = message.text;

        const by = selectors.get(message.id) ?? [];
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
        return row;
      });
      for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
      list.replaceChildren(...ordered);
      empty.hidden = messages.length > 0;
      if (nearBottom) list.scrollTop = list.scrollHeight;
    }

    error.addEventListener("click", () => {
      dismissed = model.get("error");
      error.hidden = true;
    });
    list.addEventListener("click", (event) => {
      const row = /** @type {HTMLElement | null} */ (
        event.target instanceof Element ? event.target.closest(".pluv-message") : null
      );
      if (!row || model.get("connection_state") === "closed") return;
      const me = model.get("me");
      const current = "connection_id" in me ? me.presence?.selection_id : null;
      // Clicking your own selection again clears it.
      model.send({ type: "select", id: current === row.dataset.id ? null : row.dataset.id });
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
      renderMessages();
    };
    const onMessages = () => renderMessages();
    model.on("change:connection_state", onState);
    model.on("change:room_name", onState);
    model.on("change:error", onState);
    model.on("change:me", onPeople);
    model.on("change:others", onPeople);
    model.on("change:messages", onMessages);
    renderState();
    renderPeople();
    renderMessages();

    return () => {
      model.off("change:connection_state", onState);
      model.off("change:room_name", onState);
      model.off("change:error", onState);
      model.off("change:me", onPeople);
      model.off("change:others", onPeople);
      model.off("change:messages", onMessages);
    };
  },
};
