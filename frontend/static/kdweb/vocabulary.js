// The words the scripts share with the server, read once from the page's json_script block "kdweb-vocabulary"
// ({% vocabulary_script %} in base.html, jobs/templatetags/vocabulary.py): the loss terms in the engine's order
// and their chart titles, the study variants in order, and the run statuses.

const node = document.getElementById("kdweb-vocabulary");
const words = node ? JSON.parse(node.textContent) : {};

export const TERMS = words.terms || [];
export const VARIANTS = words.variants || [];
/** Series names of the loss charts, in order: loss/total, then one per term. */
export const LOSS_ORDER = ["loss/total", ...TERMS.map((t) => `loss/${t}`)];
/** Chart title of each loss series (`loss/<term>`). */
export const LOSS_TITLES = Object.fromEntries(
  Object.entries(words.loss_titles || {}).map(([term, title]) => [`loss/${term}`, title]),
);
/** Statuses a live page keeps following, and those after which nothing changes. */
export const LIVE = new Set(words.live_statuses || []);
export const FINISHED = new Set((words.statuses || []).filter((s) => !LIVE.has(s)));
