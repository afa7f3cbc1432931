// Small DOM helpers shared by the views.

/**
 * @param {string} tag
 * @param {string} className
 * @param {string} [text]
 * @returns {HTMLElement}
 */
export function h(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A button with a stable test id.
 * @param {string} className
 * @param {string} text
 * @param {string} testid
 * @returns {HTMLButtonElement}
 */
export function button(className, text, testid) {
  const node = /** @type {HTMLButtonElement} */ (h("button", className, text));
  node.type = "button";
  node.dataset.testid = testid;
  return node;
}

/** @param {number} seconds @returns {string} "45 s", "2 min 05 s", "1 h 02 min" */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** @param {number} n @returns {string} "1st", "2nd", "3rd", "11th" */
export function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] ?? "th";
  return `${n}${suffix}`;
}
