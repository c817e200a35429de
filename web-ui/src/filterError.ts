// Where a filter error points: the API answers 400 with a 0-based `position` into what was
// sent; the filter bar underlines the word found there.

export interface ErrorMark {
  before: string;
  at: string;
  after: string;
  /** The position, clamped into the text (the end of the text when past it). */
  position: number;
}

const DELIMITERS = /[\s()]/;

/** Split ``text`` around the word at ``position`` (the character there when it is a delimiter;
 * a visible blank when the position is the end, as for "expected a value" errors). */
export function markError(text: string, position: number | null): ErrorMark | null {
  if (position === null || !Number.isFinite(position)) return null;
  const at = Math.max(0, Math.min(Math.trunc(position), text.length));
  if (at >= text.length) return { before: text, at: " ", after: "", position: text.length };
  let end = at;
  if (DELIMITERS.test(text[at])) {
    end = at + 1;
  } else {
    while (end < text.length && !DELIMITERS.test(text[end])) end += 1;
  }
  return { before: text.slice(0, at), at: text.slice(at, end), after: text.slice(end), position: at };
}

/** A filter that matches a field's value exactly, quoted when the value needs it. */
export function quickFilter(field: string, value: string): string {
  const plain = /^[^\s()"'&|!]+$/.test(value);
  return `${field}:${plain ? value : `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`}`;
}

/** ``filter`` and-ed with ``term`` (unless it holds the term already). */
export function addTerm(filter: string, term: string): string {
  const current = filter.trim();
  if (!current) return term;
  if (current.split(/\s+/).includes(term)) return current;
  const grouped = /\bor\b|\|/i.test(current) ? `(${current})` : current;
  return `${grouped} ${term}`;
}
