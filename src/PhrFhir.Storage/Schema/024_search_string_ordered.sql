-- A search on one string prefix (Patient?family=東海林) pages in the order of this index: the matched value (folded,
-- byte order), then the key (FhirStore.OrderedByValue). With rkey in the key instead of among the included columns,
-- the rows of a value come out in key order, so the first page reads its _count + 1 rows instead of sorting every match
-- by key (2,000 for the bench's family row; docs/performance.md "Search", session 7). It replaces the covering index of
-- 007 on the same leading columns, which answered the same criteria (prefix, :contains, :exact by param), so writes
-- keep the same number of indexes.
create index if not exists ix_string_search_ordered on fhir.ix_string (param, norm text_pattern_ops, rkey) include (writer, person);
drop index if exists fhir.ix_string_search_access;
