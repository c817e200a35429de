// The filter bar's suggestions: field names of the filter language (GET /api/filter) where a
// word starts, and after `field:` the values worth offering (hosts, methods, status classes and
// content types seen in the session, flags, mark colours). Pure, so the tests need no DOM.
import { quickFilter } from "./filterError";

export interface Vocabulary {
  fields: { name: string; description: string }[];
  flags: string[];
  marks: string[];
  hosts: string[];
  methods: string[];
  statusClasses: string[];
  contentTypes: string[];
}

export const EMPTY_VOCABULARY: Vocabulary = { fields: [], flags: [], marks: [], hosts: [], methods: [], statusClasses: [], contentTypes: [] };

export interface Suggestion {
  label: string;
  detail: string;
  /** What replaces the word being typed. */
  insert: string;
}

export interface Suggestions {
  /** The word being typed: text[from, to). */
  from: number;
  to: number;
  items: Suggestion[];
}

const DELIMITER = /[\s()!]/;

/** The values offered after ``field:`` (null: the field takes free text). */
function valuesOf(field: string, vocabulary: Vocabulary): string[] | null {
  switch (field) {
    case "host": return vocabulary.hosts;
    case "method": return vocabulary.methods;
    case "status": return vocabulary.statusClasses;
    case "type": return vocabulary.contentTypes;
    case "is": return vocabulary.flags;
    case "mark": case "marked": return vocabulary.marks;
    case "scheme": return ["http", "https"];
    case "kind": return ["http", "tunnel"];
    default: return null;
  }
}

/** Prefix matches first, then those that contain it; case-insensitive. */
function ranked<T>(items: T[], key: (item: T) => string, typed: string): T[] {
  const needle = typed.toLowerCase();
  const starts = items.filter((item) => key(item).toLowerCase().startsWith(needle));
  const contains = items.filter((item) => !key(item).toLowerCase().startsWith(needle) && key(item).toLowerCase().includes(needle));
  return [...starts, ...contains];
}

/** What to offer for the word at ``caret`` (null: nothing). An empty word gets the field
 * names only when ``force``d (Ctrl+Space, arrow down). */
export function suggest(text: string, caret: number, vocabulary: Vocabulary, force = false, max = 12): Suggestions | null {
  let from = caret;
  while (from > 0 && !DELIMITER.test(text[from - 1])) from -= 1;
  let to = caret;
  while (to < text.length && !DELIMITER.test(text[to])) to += 1;
  const typed = text.slice(from, caret);
  if (/["']/.test(typed)) return null;  // inside a quoted value: free text
  const colon = typed.indexOf(":");
  let items: Suggestion[];
  if (colon > 0) {
    const field = typed.slice(0, colon).toLowerCase();
    const values = valuesOf(field, vocabulary);
    if (!values) return null;
    const prefix = typed.slice(colon + 1);
    items = ranked(values, (v) => v, prefix)
      .filter((value) => value.toLowerCase() !== prefix.toLowerCase() || text.slice(caret, to) !== "")
      .map((value) => ({ label: value, detail: field, insert: `${quickFilter(field, value)} ` }));
  } else {
    if (!typed && !force) return null;
    items = ranked(vocabulary.fields, (f) => f.name, typed)
      .filter((f) => f.name !== typed)
      .map((f) => ({ label: `${f.name}:`, detail: f.description, insert: `${f.name}:` }));
  }
  return items.length ? { from, to, items: items.slice(0, max) } : null;
}

/** The text with ``item`` in place of the word, and where the caret goes. */
export function accept(text: string, suggestions: Suggestions, item: Suggestion): { text: string; caret: number } {
  const rest = text.slice(suggestions.to);
  // a value ends the term (its space is in the insert); a field name waits for its value
  const next = text.slice(0, suggestions.from) + item.insert + (item.insert.endsWith(" ") ? rest.trimStart() : rest);
  return { text: next, caret: suggestions.from + item.insert.length };
}

/** The values a session's stats (GET /api/traffic/stats/{id}) offer. */
export function vocabularyFrom(language: { fields: Vocabulary["fields"]; flags: string[]; marks: string[] },
  stats: { hosts?: { host: string }[]; methods?: Record<string, number>; statusClasses?: Record<string, number>; contentTypes?: { contentType: string }[] } | null): Vocabulary {
  return {
    fields: language.fields, flags: language.flags, marks: language.marks,
    hosts: (stats?.hosts ?? []).map((h) => h.host).filter(Boolean),
    methods: Object.keys(stats?.methods ?? {}).filter(Boolean),
    statusClasses: Object.keys(stats?.statusClasses ?? {}).filter((c) => c !== "none"),
    contentTypes: (stats?.contentTypes ?? []).map((t) => t.contentType).filter(Boolean),
  };
}
