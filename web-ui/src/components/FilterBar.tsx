// The filter bar: the API's filter language (docs/store.md) and a text search. A filter the
// API refuses is shown with its message, the offending word underlined.
import { forwardRef, useEffect, useState } from "react";
import { markError } from "../filterError";

export interface FilterBarProps {
  filter: string;
  search: string;
  error: { message: string; position: number | null; parameter: string | null } | null;
  onFilter: (filter: string) => void;
  onSearch: (search: string) => void;
}

export const FilterBar = forwardRef<HTMLInputElement, FilterBarProps>(function FilterBar(
  { filter, search, error, onFilter, onSearch }, ref,
) {
  const [draft, setDraft] = useState(filter);
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
          ref={ref} type="text" className={`filter-input${filterError ? " invalid" : ""}`}
          placeholder="Filter: host:example.com status:4xx !method:OPTIONS"
          aria-label="Filter" aria-invalid={!!filterError} spellCheck={false}
          value={draft} onChange={(event) => setDraft(event.target.value)}
          onKeyDown={(event) => {
            if (event.key === "Enter") onFilter(draft);
            if (event.key === "Escape") event.currentTarget.blur();
          }}
        />
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
