// The filter bar: the API's filter language (docs/store.md) and a text search. A filter the
// API refuses is shown with its message, the offending word underlined. As the user types, it
// suggests field names and, after `host:` and the like, values seen in the session.
import { forwardRef, useEffect, useRef, useState, type KeyboardEvent } from "react";
import { api } from "../api";
import { markError } from "../filterError";
import { accept, EMPTY_VOCABULARY, suggest, vocabularyFrom, type Suggestions, type Vocabulary } from "../suggest";

export interface FilterBarProps {
  filter: string;
  search: string;
  error: { message: string; position: number | null; parameter: string | null } | null;
  onFilter: (filter: string) => void;
  onSearch: (search: string) => void;
  /** The session whose hosts, methods and types are suggested. */
  sessionId: number | null;
}

/** The filter language's words (once) and the session's values (on each focus: they grow). */
function useVocabulary(sessionId: number | null): [Vocabulary, () => void] {
  const [vocabulary, setVocabulary] = useState(EMPTY_VOCABULARY);
  const language = useRef<Promise<Awaited<ReturnType<typeof api.filterLanguage>>> | null>(null);
  const refresh = () => {
    language.current ??= api.filterLanguage();
    const stats = sessionId === null ? Promise.resolve(null) : api.topStats(sessionId).catch(() => null);
    void Promise.all([language.current, stats]).then(([words, counts]) => setVocabulary(vocabularyFrom(words, counts)),
      () => { language.current = null; });
  };
  return [vocabulary, refresh];
}

export const FilterBar = forwardRef<HTMLInputElement, FilterBarProps>(function FilterBar(
  { filter, search, error, onFilter, onSearch, sessionId }, ref,
) {
  const [draft, setDraft] = useState(filter);
  const [vocabulary, refreshVocabulary] = useVocabulary(sessionId);
  const [open, setOpen] = useState<Suggestions | null>(null);
  const [active, setActive] = useState(0);
  const caret = useRef<number | null>(null);
  const input = useRef<HTMLInputElement | null>(null);
  useEffect(() => {  // put the caret after an accepted suggestion
    if (caret.current === null || !input.current) return;
    input.current.setSelectionRange(caret.current, caret.current);
    caret.current = null;
  }, [draft]);

  const offer = (text: string, at: number, force = false) => {
    setOpen(suggest(text, at, vocabulary, force));
    setActive(0);
  };
  // Typed into since focused and not dismissed: if the words arrive after the first keystrokes
  // (they are fetched on focus), offer them then instead of at the next keystroke.
  const typed = useRef(false);
  useEffect(() => {
    const field = input.current;
    if (!typed.current || !field || document.activeElement !== field) return;
    offer(field.value, field.selectionStart ?? field.value.length);
  }, [vocabulary]);  // eslint-disable-line react-hooks/exhaustive-deps
  const take = (index: number) => {
    if (!open) return;
    const next = accept(draft, open, open.items[index]);
    caret.current = next.caret;
    setDraft(next.text);
    offer(next.text, next.caret);
  };
  const onKey = (event: KeyboardEvent<HTMLInputElement>) => {
    const at = event.currentTarget.selectionStart ?? draft.length;
    if (open) {
      const keys: Record<string, () => void> = {
        ArrowDown: () => setActive((active + 1) % open.items.length),
        ArrowUp: () => setActive((active - 1 + open.items.length) % open.items.length),
        Tab: () => take(active), Enter: () => take(active),
        Escape: () => { typed.current = false; setOpen(null); },
      };
      const action = keys[event.key];
      if (action) {
        event.preventDefault();
        event.stopPropagation();  // Esc closes the list, not the detail
        action();
        return;
      }
    } else if ((event.key === " " && event.ctrlKey) || event.key === "ArrowDown") {
      event.preventDefault();
      offer(draft, at, true);
      return;
    }
    if (event.key === "Enter") onFilter(draft);
    if (event.key === "Escape") event.currentTarget.blur();
  };
  const [searchDraft, setSearchDraft] = useState(search);
  useEffect(() => setDraft(filter), [filter]);
  useEffect(() => setSearchDraft(search), [search]);
  useEffect(() => {
    if (draft === filter) return;
    const timer = window.setTimeout(() => onFilter(draft), 500);
    return () => window.clearTimeout(timer);
  }, [draft, filter, onFilter]);
  useEffect(() => {
    if (searchDraft === search) return;
    const timer = window.setTimeout(() => onSearch(searchDraft), 500);
    return () => window.clearTimeout(timer);
  }, [searchDraft, search, onSearch]);

  const filterError = error && error.parameter !== "search" ? error : null;
  const mark = filterError ? markError(filter, filterError.position) : null;
  return (
    <div className="filterbar">
      <div className="filter-field">
        <input
          ref={(element) => {
            input.current = element;
            if (typeof ref === "function") ref(element);
            else if (ref) ref.current = element;
          }}
          type="text" className={`filter-input${filterError ? " invalid" : ""}`}
          placeholder="Filter: host:example.com status:4xx !method:OPTIONS"
          aria-label="Filter" aria-invalid={!!filterError} spellCheck={false} autoComplete="off"
          role="combobox" aria-expanded={!!open} aria-controls="filter-suggestions" aria-autocomplete="list"
          aria-activedescendant={open ? `filter-suggestion-${active}` : undefined}
          value={draft}
          onChange={(event) => {
            setDraft(event.target.value);
            typed.current = true;
            offer(event.target.value, event.target.selectionStart ?? event.target.value.length);
          }}
          onFocus={refreshVocabulary}
          onBlur={() => { typed.current = false; setOpen(null); }}
          onKeyDown={onKey}
        />
        {open && (
          <ul className="suggestions" id="filter-suggestions" role="listbox" aria-label="Suggestions">
            {open.items.map((item, index) => (
              <li key={item.label} id={`filter-suggestion-${index}`} role="option" aria-selected={index === active}
                className={index === active ? "active" : ""}
                onMouseDown={(event) => { event.preventDefault(); take(index); }}>
                <code>{item.label}</code><span className="muted">{item.detail}</span>
              </li>
            ))}
          </ul>
        )}
        {filterError && (
          <div className="filter-error" role="alert">
            {mark && (
              <code className="filter-echo">
                {mark.before}<mark data-testid="filter-error-at">{mark.at}</mark>{mark.after}
              </code>
            )}
            <span className="filter-message">{filterError.message}</span>
          </div>
        )}
        {error && !filterError && <div className="filter-error" role="alert">{error.message}</div>}
      </div>
      <input
        type="search" className="search-input" placeholder="Search URLs, headers, bodies…" aria-label="Search"
        value={searchDraft} onChange={(event) => setSearchDraft(event.target.value)}
        onKeyDown={(event) => { if (event.key === "Enter") onSearch(searchDraft); }}
      />
      {(filter || search) && (
        <button className="ghost" onClick={() => { onFilter(""); onSearch(""); }} title="Clear the filter and search">✕</button>
      )}
    </div>
  );
});
