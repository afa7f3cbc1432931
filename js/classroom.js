// The classroom under the room: polls, the help queue, the class pulse and "follow the teacher".
//
// Everything shown comes from the `classroom` traitlet — this connection's view as the server
// sent it (a student's holds their own vote and place in the queue, never anyone else's) — and
// from `others` (the teacher's shared position) and `progress` (what this kernel would share).
// Every action is a {type: "call", procedure, input} message: the kernel forwards the procedures
// the buttons need, and the server decides. The view picks the teacher's or the student's
// controls by the role in the view; it hides nothing the server would otherwise refuse.

import { button, duration, h, ordinal } from "./dom.js";
import { activeCell, jumpTo } from "./follow.js";

/**
 * @typedef {{
 *   id: string, question: string, options: string[], multiple: boolean, anonymous: boolean,
 *   state: string, revealed: boolean, created: number, voters: number,
 *   counts?: Record<string, number> | null, my_choice?: string[],
 *   votes?: Record<string, string[]>, names?: Record<string, string>
 * }} PollView
 * @typedef {{ user: string, name: string, note: string, since: number }} Hand
 * @typedef {{ done: number, of: number, who: string[] }} Checkpoint
 * @typedef {{
 *   user: string, name: string, present: boolean, sharing: boolean, cells_run: number | null,
 *   last_error: string | null, last_active: number | null, checkpoints: string[]
 * }} StatusRow
 * @typedef {{
 *   role?: string, polls?: PollView[], now?: number, present?: number,
 *   hands?: Hand[], pulse?: Record<string, Checkpoint>, status?: StatusRow[],
 *   hand?: { raised: boolean, position: number | null, queue_length: number, note: string } | null,
 *   checkpoints?: string[], sharing?: boolean
 * }} ClassView
 * @typedef {{ sharing?: boolean, cells_run?: number, last_error?: string | null,
 *   last_active?: number | null, counting?: boolean }} Progress
 * @typedef {{ heading: string, index: number, count: number }} CellPosition
 * @typedef {{ id: string, name: string, role?: string, cell?: CellPosition | null,
 *   presence?: { [key: string]: unknown } }} Person
 * @typedef {{
 *   get(key: string): any,
 *   on(event: string, callback: (...args: any[]) => void): void,
 *   off(event: string, callback: (...args: any[]) => void): void,
 *   send(content: unknown): void,
 * }} ClassModel
 */

const SVG = "http://www.w3.org/2000/svg";
/** How often the teacher's view looks at the active cell (ms); the kernel coalesces further. */
const CELL_CHECK_MS = 500;

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attributes
 * @returns {SVGElement}
 */
function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

/**
 * A horizontal bar chart of a poll's counts: one row per option, no dependency.
 * @param {PollView} poll
 * @param {Record<string, number>} counts
 * @returns {SVGElement}
 */
function histogram(poll, counts) {
  const row = 22;
  const label = 120;
  const width = 360;
  const most = Math.max(1, ...poll.options.map((option) => counts[option] ?? 0));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${row * poll.options.length}`, class: "pluv-histogram", role: "img" });
  chart.dataset.testid = "pluv-histogram";
  chart.setAttribute("aria-label", poll.options.map((o) => `${o}: ${counts[o] ?? 0}`).join(", "));
  const voters = poll.votes && poll.names ? poll.names : null;
  poll.options.forEach((option, i) => {
    const count = counts[option] ?? 0;
    const y = i * row;
    const name = svg("text", { x: label - 6, y: y + row / 2 + 4, "text-anchor": "end", class: "pluv-bar-label" });
    name.textContent = option.length > 18 ? `${option.slice(0, 17)}…` : option;
    const bar = svg("rect", {
      x: label, y: y + 3, height: row - 6, rx: 3, class: "pluv-bar",
      width: Math.max(count ? 2 : 0, ((width - label - 40) * count) / most),
    });
    bar.dataset.testid = "pluv-bar";
    bar.dataset.option = option;
    bar.dataset.count = String(count);
    if (voters && poll.votes) {
      const who = Object.entries(poll.votes).filter(([, choices]) => choices.includes(option))
        .map(([user]) => voters[user] ?? user);
      const title = svg("title", {});
      title.textContent = who.join(", ") || "nobody";
      bar.append(title);
    }
    const value = svg("text", { x: label + Number(bar.getAttribute("width")) + 6, y: y + row / 2 + 4, class: "pluv-bar-count" });
    value.textContent = String(count);
    chart.append(name, bar, value);
  });
  return chart;
}

/**
 * @param {{ model: ClassModel, el: HTMLElement }} context
 * @returns {{ node: HTMLElement, destroy: () => void }}
 */
export function classroomView({ model, el }) {
  /** @param {string} procedure @param {Record<string, unknown>} input */
  const call = (procedure, input) => model.send({ type: "call", procedure, input });

  const node = h("section", "pluv-class");
  node.dataset.testid = "pluv-class";

  // -- follow the teacher ---------------------------------------------------------------------
  const follow = h("div", "pluv-follow");
  follow.dataset.testid = "pluv-follow";
  const followText = h("span", "pluv-follow-text");
  const jump = button("pluv-button", "Jump there", "pluv-follow-jump");
  const followLabel = h("label", "pluv-follow-label");
  const followBox = /** @type {HTMLInputElement} */ (h("input", ""));
  followBox.type = "checkbox";
  followBox.dataset.testid = "pluv-follow-toggle";
  followLabel.append(followBox, " follow");
  const fallback = h("span", "pluv-follow-fallback");
  fallback.dataset.testid = "pluv-follow-fallback";
  fallback.hidden = true;
  follow.append(followText, jump, followLabel, fallback);
  const leading = h("div", "pluv-follow-me");
  leading.dataset.testid = "pluv-follow-me";

  // -- polls ----------------------------------------------------------------------------------
  const pollsSection = h("div", "pluv-section pluv-polls-section");
  const pollForm = /** @type {HTMLFormElement} */ (h("form", "pluv-poll-form"));
  pollForm.dataset.testid = "pluv-poll-form";
  const question = /** @type {HTMLInputElement} */ (h("input", "pluv-field"));
  question.placeholder = "Ask the class…";
  question.maxLength = 500;
  question.dataset.testid = "pluv-poll-question";
  const options = /** @type {HTMLTextAreaElement} */ (h("textarea", "pluv-field pluv-poll-options"));
  options.placeholder = "One option per line";
  options.rows = 3;
  options.dataset.testid = "pluv-poll-options";
  /** @param {string} text @param {string} testid @returns {[HTMLLabelElement, HTMLInputElement]} */
  const checkbox = (text, testid) => {
    const label = /** @type {HTMLLabelElement} */ (h("label", "pluv-check"));
    const box = /** @type {HTMLInputElement} */ (h("input", ""));
    box.type = "checkbox";
    box.dataset.testid = testid;
    label.append(box, ` ${text}`);
    return [label, box];
  };
  const [multipleLabel, multiple] = checkbox("several answers", "pluv-poll-multiple");
  const [anonymousLabel, anonymous] = checkbox("anonymous", "pluv-poll-anonymous");
  const ask = /** @type {HTMLButtonElement} */ (h("button", "pluv-button pluv-primary", "Ask"));
  ask.type = "submit";
  ask.dataset.testid = "pluv-poll-ask";
  const formRow = h("div", "pluv-row");
  formRow.append(multipleLabel, anonymousLabel, ask);
  pollForm.append(question, options, formRow);
  const pollList = h("div", "pluv-polls");
  pollList.dataset.testid = "pluv-polls";
  pollsSection.append(pollForm, pollList);

  // -- hands ----------------------------------------------------------------------------------
  const handsSection = h("div", "pluv-section pluv-hands");
  const handRow = h("div", "pluv-row pluv-hand");
  const note = /** @type {HTMLInputElement} */ (h("input", "pluv-field"));
  note.placeholder = "What are you stuck on? (only the teacher sees it)";
  note.maxLength = 300;
  note.dataset.testid = "pluv-hand-note";
  const raise = button("pluv-button", "Raise hand", "pluv-hand-raise");
  const lower = button("pluv-button", "Lower hand", "pluv-hand-lower");
  const place = h("span", "pluv-hand-position");
  place.dataset.testid = "pluv-hand-position";
  handRow.append(note, raise, lower, place);
  const queueHead = h("div", "pluv-row pluv-queue-head");
  const queueTitle = h("span", "pluv-section-title", "Help queue");
  const next = button("pluv-button", "Next", "pluv-queue-next");
  queueHead.append(queueTitle, next);
  const queue = h("ol", "pluv-queue");
  queue.dataset.testid = "pluv-queue";
  handsSection.append(handRow, queueHead, queue);

  // -- pulse ----------------------------------------------------------------------------------
  const pulseSection = h("div", "pluv-section pluv-pulse");
  const preview = h("div", "pluv-pulse-preview");
  preview.dataset.testid = "pluv-pulse-preview";
  const previewText = h("span", "pluv-pulse-values");
  const [shareLabel, share] = checkbox("share this with the teacher", "pluv-pulse-share");
  preview.append(previewText, shareLabel);
  const checkpointRow = h("div", "pluv-row");
  const checkpointName = /** @type {HTMLInputElement} */ (h("input", "pluv-field"));
  checkpointName.placeholder = "Checkpoint, e.g. ex3";
  checkpointName.maxLength = 64;
  checkpointName.dataset.testid = "pluv-checkpoint-name";
  const checkpointDone = button("pluv-button", "Done", "pluv-checkpoint-done");
  const mine = h("span", "pluv-my-checkpoints");
  mine.dataset.testid = "pluv-my-checkpoints";
  checkpointRow.append(checkpointName, checkpointDone, mine);
  const checkpoints = h("ul", "pluv-checkpoints");
  checkpoints.dataset.testid = "pluv-checkpoints";
  const grid = /** @type {HTMLTableElement} */ (h("table", "pluv-status-grid"));
  grid.dataset.testid = "pluv-status-grid";
  pulseSection.append(preview, checkpointRow, checkpoints, grid);

  node.append(follow, leading, pollsSection, handsSection, pulseSection);

  // -- state ----------------------------------------------------------------------------------
  /** @type {Map<string, Set<string>>} a multiple-choice poll's ticked options, not sent yet */
  const drafts = new Map();
  /** seconds to add to this browser's clock to get the server's */
  let offset = 0;
  /** @type {string} the teacher's position last jumped to (following) */
  let followed = "";

  /** @returns {ClassView} */
  const view = () => model.get("classroom") ?? {};
  const role = () => view().role || model.get("me")?.role || "";
  const serverNow = () => Date.now() / 1000 + offset;

  /** @param {PollView} poll @param {string} currentRole @returns {HTMLElement} */
  function pollCard(poll, currentRole) {
    const card = h("div", "pluv-poll");
    card.dataset.testid = "pluv-poll";
    card.dataset.pollId = poll.id;
    card.dataset.state = poll.state;
    card.dataset.revealed = String(poll.revealed);
    const title = h("div", "pluv-poll-title");
    title.append(h("span", "pluv-poll-question-text", poll.question));
    for (const [on, text] of /** @type {[boolean, string][]} */ ([
      [poll.state === "closed", "closed"], [poll.revealed, "revealed"], [poll.anonymous, "anonymous"],
      [poll.multiple, "several answers"],
    ])) if (on) title.append(h("span", "pluv-tag", text));
    card.append(title);

    const teacher = currentRole === "teacher";
    if (!teacher) {
      const chosen = new Set(poll.my_choice ?? []);
      const draft = drafts.get(poll.id) ?? new Set(chosen);
      const list = h("div", "pluv-poll-options-list");
      const canVote = poll.state === "open" && currentRole === "student";
      for (const option of poll.options) {
        const choice = button("pluv-poll-option", "", "pluv-poll-option");
        choice.dataset.option = option;
        choice.disabled = !canVote;
        const picked = poll.multiple ? draft.has(option) : chosen.has(option);
        choice.setAttribute("aria-pressed", String(picked));
        choice.classList.toggle("pluv-chosen", chosen.has(option));
        if (poll.multiple) {
          const tick = /** @type {HTMLInputElement} */ (h("input", ""));
          tick.type = "checkbox";
          tick.checked = draft.has(option);
          tick.tabIndex = -1;
          tick.disabled = !canVote;
          choice.append(tick);
        }
        choice.append(h("span", "", option));
        const counts = poll.counts;
        if (counts) choice.append(h("span", "pluv-option-count", String(counts[option] ?? 0)));
        choice.addEventListener("click", () => {
          if (!poll.multiple) {
            call("polls.vote", { poll: poll.id, choice: option });
            return;
          }
          const next = new Set(drafts.get(poll.id) ?? chosen);
          if (next.has(option)) next.delete(option);
          else next.add(option);
          drafts.set(poll.id, next);
          render();
        });
        list.append(choice);
      }
      card.append(list);
      if (poll.multiple && canVote) {
        const vote = button("pluv-button", "Vote", "pluv-poll-vote");
        vote.addEventListener("click", () => {
          call("polls.vote", { poll: poll.id, choice: [...(drafts.get(poll.id) ?? [])] });
          drafts.delete(poll.id);
        });
        card.append(vote);
      }
    }
    if (poll.counts) card.append(histogram(poll, poll.counts));
    const present = view().present;
    const voters = h("div", "pluv-voters",
      teacher && typeof present === "number"
        ? `${poll.voters} voter${poll.voters === 1 ? "" : "s"} of ${present} present`
        : `${poll.voters} voter${poll.voters === 1 ? "" : "s"}`);
    voters.dataset.testid = "pluv-voters";
    voters.dataset.voters = String(poll.voters);
    card.append(voters);
    if (teacher) {
      const actions = h("div", "pluv-row");
      const reveal = button("pluv-button", "Reveal", "pluv-poll-reveal");
      reveal.disabled = poll.revealed;
      reveal.addEventListener("click", () => call("polls.reveal", { poll: poll.id }));
      const close = button("pluv-button", "Close", "pluv-poll-close");
      close.disabled = poll.state === "closed";
      close.addEventListener("click", () => call("polls.close", { poll: poll.id }));
      actions.append(reveal, close);
      card.append(actions);
    }
    return card;
  }

  function renderPolls() {
    const currentRole = role();
    pollForm.hidden = currentRole !== "teacher";
    const polls = [...(view().polls ?? [])].sort((a, b) => (b.created ?? 0) - (a.created ?? 0));
    pollList.replaceChildren(...polls.map((poll) => pollCard(poll, currentRole)));
    pollsSection.hidden = currentRole !== "teacher" && polls.length === 0;
  }

  function renderHands() {
    const currentRole = role();
    const v = view();
    const teacher = currentRole === "teacher";
    handRow.hidden = currentRole !== "student";
    queueHead.hidden = queue.hidden = !teacher;
    handsSection.hidden = !teacher && currentRole !== "student";
    if (currentRole === "student") {
      const hand = v.hand;
      const raised = Boolean(hand?.raised);
      raise.hidden = raised;
      lower.hidden = !raised;
      note.disabled = raised;
      if (raised && hand?.note && document.activeElement !== note) note.value = hand.note;
      place.textContent = raised && hand?.position
        ? `You are ${ordinal(hand.position)} of ${hand.queue_length} in the queue`
        : hand?.queue_length ? `${hand.queue_length} waiting` : "";
      handRow.dataset.raised = String(raised);
    }
    if (teacher) {
      const hands = v.hands ?? [];
      next.disabled = hands.length === 0;
      queueTitle.textContent = hands.length ? `Help queue (${hands.length})` : "Help queue — nobody waiting";
      queue.replaceChildren(...hands.map((hand) => {
        const item = h("li", "pluv-queue-item");
        item.dataset.testid = "pluv-queue-item";
        item.dataset.user = hand.user;
        const wait = h("span", "pluv-wait");
        wait.dataset.since = String(hand.since);
        const done = button("pluv-button", "Done", "pluv-queue-done");
        done.addEventListener("click", () => call("hands.resolve", { user_id: hand.user }));
        item.append(h("span", "pluv-name", hand.name), h("span", "pluv-note", hand.note), wait, done);
        return item;
      }));
    }
  }

  function renderPulse() {
    const currentRole = role();
    const v = view();
    const teacher = currentRole === "teacher";
    preview.hidden = checkpointRow.hidden = currentRole !== "student";
    checkpoints.hidden = grid.hidden = !teacher;
    pulseSection.hidden = !teacher && currentRole !== "student";
    if (currentRole === "student") {
      /** @type {Progress} */
      const progress = model.get("progress") ?? {};
      share.checked = Boolean(progress.sharing);
      preview.dataset.sharing = String(Boolean(progress.sharing));
      mine.textContent = (v.checkpoints ?? []).length ? `✓ ${(v.checkpoints ?? []).join(", ")}` : "";
      renderPreview();
    }
    if (teacher) {
      const pulse = Object.entries(v.pulse ?? {});
      checkpoints.replaceChildren(...pulse.map(([name, counts]) => {
        const item = h("li", "pluv-checkpoint");
        item.dataset.checkpoint = name;
        item.dataset.done = String(counts.done);
        const meter = h("span", "pluv-meter");
        const fill = h("span", "pluv-meter-fill");
        fill.style.width = `${counts.of ? Math.min(100, (100 * counts.done) / counts.of) : 0}%`;
        meter.append(fill);
        item.title = counts.who.join(", ");
        item.append(h("span", "pluv-name", name), meter, h("span", "", `${counts.done}/${counts.of}`));
        return item;
      }));
      const head = h("tr", "");
      for (const column of ["student", "here", "cells", "last error", "idle", "checkpoints"]) head.append(h("th", "", column));
      const rows = (v.status ?? []).map((row) => {
        const tr = h("tr", row.present ? "pluv-status-row" : "pluv-status-row pluv-away");
        tr.dataset.user = row.user;
        const idle = h("td", "pluv-idle", row.sharing ? "" : "—");
        if (row.sharing && typeof row.last_active === "number") idle.dataset.since = String(row.last_active);
        tr.append(
          h("td", "pluv-name", row.name),
          h("td", "", row.present ? "●" : "○"),
          h("td", "", row.sharing && row.cells_run !== null ? String(row.cells_run) : "—"),
          h("td", row.last_error ? "pluv-last-error" : "", row.sharing ? row.last_error ?? "" : "—"),
          idle,
          h("td", "", row.checkpoints.join(", ")),
        );
        return tr;
      });
      grid.replaceChildren(head, ...rows);
      grid.hidden = rows.length === 0;
    }
  }

  function renderPreview() {
    /** @type {Progress} */
    const progress = model.get("progress") ?? {};
    const idle = typeof progress.last_active === "number" ? duration(Date.now() / 1000 - progress.last_active) : "—";
    const counting = progress.counting === false ? " (counted in Jupyter only)" : "";
    previewText.textContent =
      `Shared if you tick the box: cells run ${progress.cells_run ?? 0}${counting} · last error ` +
      `${progress.last_error ?? "none"} · idle ${idle}. Never your code or values.`;
  }

  /** @returns {Person | undefined} the teacher sharing a position */
  function teacherPerson() {
    return /** @type {Person[]} */ (model.get("others") ?? []).find((person) => person.role === "teacher" && person.cell);
  }

  let jumps = 0;
  /** @param {CellPosition} cell */
  async function goTo(cell) {
    followed = `${cell.heading}\u0000${cell.index}`;
    const ticket = ++jumps;
    const how = await jumpTo(el, cell);
    if (ticket !== jumps) return; // a newer jump started meanwhile: it reports
    follow.dataset.jumped = how;
    fallback.hidden = how === "heading";
    fallback.textContent = how === "none"
      ? `Go to “${cell.heading || `cell ${cell.index + 1}`}” in your notebook.`
      : how === "position" ? `Near cell ${cell.index + 1}; look for “${cell.heading}”.` : "";
  }

  function renderFollow() {
    const currentRole = role();
    const teacher = teacherPerson();
    const cell = teacher?.cell ?? null;
    follow.hidden = currentRole === "teacher" || !cell;
    if (cell && teacher) {
      followText.textContent = `${teacher.name} is at “${cell.heading || "the top"}” (cell ${cell.index + 1} of ${cell.count})`;
      follow.dataset.heading = cell.heading;
      if (followBox.checked && followed !== `${cell.heading}\u0000${cell.index}`) void goTo(cell);
    }
    const mineCell = /** @type {CellPosition | undefined} */ (model.get("me")?.presence?.cell);
    leading.hidden = currentRole !== "teacher" || !mineCell;
    if (mineCell) leading.textContent = `Students can follow you: “${mineCell.heading || "the top"}” (cell ${mineCell.index + 1} of ${mineCell.count})`;
  }

  function tick() {
    const now = serverNow();
    for (const node_ of Array.from(node.querySelectorAll("[data-since]"))) {
      const since = Number(/** @type {HTMLElement} */ (node_).dataset.since);
      node_.textContent = duration(now - since);
    }
    if (!preview.hidden) renderPreview();
  }

  function render() {
    renderFollow();
    renderPolls();
    renderHands();
    renderPulse();
    tick();
    node.dataset.role = role();
  }

  // -- actions ----------------------------------------------------------------------------------
  pollForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    const choices = options.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (!text || choices.length < 2) {
      pollForm.dataset.invalid = "true";
      return;
    }
    delete pollForm.dataset.invalid;
    call("polls.create", { question: text, options: choices, multiple: multiple.checked, anonymous: anonymous.checked });
    question.value = options.value = "";
    multiple.checked = anonymous.checked = false;
  });
  raise.addEventListener("click", () => call("hands.raise", { note: note.value.trim() }));
  lower.addEventListener("click", () => {
    call("hands.lower", {});
    note.value = "";
  });
  next.addEventListener("click", () => call("hands.next", {}));
  share.addEventListener("change", () => model.send({ type: "share-progress", share: share.checked }));
  checkpointDone.addEventListener("click", () => {
    const name = checkpointName.value.trim();
    if (name) call("pulse.checkpoint", { name });
    checkpointName.value = "";
  });
  jump.addEventListener("click", () => {
    const cell = teacherPerson()?.cell;
    if (cell) void goTo(cell);
  });
  followBox.addEventListener("change", () => {
    followed = "";
    renderFollow();
  });
  // Keep JupyterLab's command-mode shortcuts out of the text boxes.
  for (const input of [question, options, note, checkpointName]) {
    input.addEventListener("keydown", (event) => event.stopPropagation());
  }

  // The teacher's view reports where its notebook's active cell is (only when it moved).
  let reported = "";
  const watchCell = setInterval(() => {
    if (role() !== "teacher") return;
    const cell = activeCell(el);
    if (!cell) return;
    const key = JSON.stringify(cell);
    if (key === reported) return;
    reported = key;
    model.send({ type: "cell", ...cell });
  }, CELL_CHECK_MS);

  const onClassroom = () => {
    const v = view();
    if (typeof v.now === "number") offset = v.now - Date.now() / 1000;
    render();
  };
  const onPeople = () => renderFollow();
  const onProgress = () => renderPulse();
  model.on("change:classroom", onClassroom);
  model.on("change:others", onPeople);
  model.on("change:me", render);
  model.on("change:progress", onProgress);
  const ticking = setInterval(tick, 1000);
  onClassroom();

  return {
    node,
    destroy() {
      clearInterval(ticking);
      clearInterval(watchCell);
      model.off("change:classroom", onClassroom);
      model.off("change:others", onPeople);
      model.off("change:me", render);
      model.off("change:progress", onProgress);
    },
  };
}
