// Follow the teacher, in the notebook's own DOM (JupyterLab's; other hosts fall back to text).
//
// The teacher's view reports where its notebook's active cell is: the text of the nearest
// heading above it, its index and the notebook's cell count. A student's view scrolls its own
// copy of the lesson there: by heading text first; when that heading is not in the DOM
// (JupyterLab's "full" windowing detaches off-screen cells) it scrolls the notebook's windowed
// container to index/count of its height, which attaches the cells around there, and looks again.

/** @typedef {{ heading: string, index: number, count: number }} CellPosition */

const HEADINGS = ":is(h1, h2, h3, h4, h5, h6)";

/** @param {string} text */
export function normalize(text) {
  return text.replace(/¶/g, "").replace(/\s+/g, " ").trim();
}

/** @param {Element} heading @returns {string} its text without JupyterLab's anchor link */
function headingText(heading) {
  const copy = /** @type {Element} */ (heading.cloneNode(true));
  for (const anchor of Array.from(copy.querySelectorAll(".jp-InternalAnchorLink"))) anchor.remove();
  return normalize(copy.textContent ?? "");
}

/** @param {HTMLElement} el the widget's element @returns {HTMLElement | null} its notebook */
export function notebookOf(el) {
  return /** @type {HTMLElement | null} */ (el.closest(".jp-Notebook"));
}

/** @param {HTMLElement} notebook @returns {HTMLElement[]} */
function cellsOf(notebook) {
  return /** @type {HTMLElement[]} */ (Array.from(notebook.querySelectorAll(".jp-Cell")));
}

/** @param {HTMLElement} cell @param {number} fallback @returns {number} its index in the notebook */
function indexOf(cell, fallback) {
  const own = cell.dataset.windowedListIndex ?? cell.closest("[data-windowed-list-index]")?.getAttribute("data-windowed-list-index");
  const index = Number(own);
  return own !== undefined && own !== null && Number.isFinite(index) ? index : fallback;
}

/**
 * The last heading a cell shows: rendered markdown, or the source of one being edited.
 * @param {HTMLElement} cell
 * @returns {string | null}
 */
function lastHeadingIn(cell) {
  if (!cell.classList.contains("jp-MarkdownCell")) return null;
  const rendered = Array.from(cell.querySelectorAll(`.jp-RenderedMarkdown ${HEADINGS}`));
  if (rendered.length) return headingText(rendered[rendered.length - 1]);
  const lines = Array.from(cell.querySelectorAll(".cm-line")).map((line) => line.textContent ?? "");
  const source = lines.filter((line) => /^#{1,6}\s/.test(line));
  return source.length ? normalize(source[source.length - 1].replace(/^#+\s*/, "")) : null;
}

/**
 * Where the notebook's active cell is, or null when this view is not in a notebook.
 * @param {HTMLElement} el
 * @returns {CellPosition | null}
 */
export function activeCell(el) {
  const notebook = notebookOf(el);
  if (!notebook) return null;
  const cells = cellsOf(notebook);
  const active = /** @type {HTMLElement | null} */ (notebook.querySelector(".jp-Cell.jp-mod-active"));
  if (!active) return null;
  const position = cells.indexOf(active);
  let heading = "";
  for (let i = position; i >= 0; i--) {
    const found = lastHeadingIn(cells[i]);
    if (found) {
      heading = found;
      break;
    }
  }
  const index = indexOf(active, position);
  const scrollbarItems = notebook.querySelectorAll(".jp-WindowedPanel-scrollbar-content > li").length;
  const count = Math.max(cells.length, scrollbarItems, index + 1);
  return { heading, index, count };
}

/**
 * The heading with this text, the one nearest the index when several have it.
 * @param {HTMLElement} notebook
 * @param {CellPosition} position
 * @returns {HTMLElement | null}
 */
function findHeading(notebook, position) {
  if (!position.heading) return null;
  const want = normalize(position.heading);
  /** @type {HTMLElement | null} */
  let best = null;
  let distance = Infinity;
  const cells = cellsOf(notebook);
  cells.forEach((cell, position_) => {
    for (const heading of Array.from(cell.querySelectorAll(`.jp-RenderedMarkdown ${HEADINGS}`))) {
      if (headingText(heading) !== want) continue;
      const d = Math.abs(indexOf(cell, position_) - position.index);
      if (d < distance) {
        best = /** @type {HTMLElement} */ (heading);
        distance = d;
      }
    }
  });
  return best;
}

/** @param {HTMLElement} notebook @returns {HTMLElement} the element that scrolls the notebook */
function scrollerOf(notebook) {
  const candidates = [notebook.querySelector(".jp-WindowedPanel-outer"), notebook, notebook.parentElement];
  for (const node of candidates) {
    if (node instanceof HTMLElement && node.scrollHeight > node.clientHeight + 1) return node;
  }
  return notebook;
}

/** @param {HTMLElement} heading scrolled to the top with its cell (the cell's padding included) */
function show(heading) {
  (/** @type {HTMLElement} */ (heading.closest(".jp-Cell") ?? heading)).scrollIntoView({ block: "start" });
}

/** @param {number} ms */
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Scroll the notebook holding `el` to `position`. Resolves with how: "heading" (found and shown),
 * "position" (scrolled to index/count; the heading is not in this notebook) or "none" (no
 * notebook DOM here: the caller shows the heading's text instead).
 * @param {HTMLElement} el
 * @param {CellPosition} position
 * @returns {Promise<"heading" | "position" | "none">}
 */
export async function jumpTo(el, position) {
  const notebook = notebookOf(el);
  if (!notebook) return "none";
  let heading = findHeading(notebook, position);
  if (heading) {
    show(heading);
    return "heading";
  }
  const scroller = scrollerOf(notebook);
  const fraction = position.count > 0 ? Math.min(1, position.index / position.count) : 0;
  scroller.scrollTop = fraction * scroller.scrollHeight;
  // Cells around there attach over the next frames: look again for a second or so.
  for (let attempt = 0; attempt < 12; attempt++) {
    await pause(100);
    heading = findHeading(notebook, position);
    if (heading) {
      show(heading);
      return "heading";
    }
  }
  return "position";
}
