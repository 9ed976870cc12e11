-- Searches page over the index tables alone when every criterion is a key set (FhirStore.SearchAsync):
-- these indexes carry rkey so that PostgreSQL answers them with index-only scans.
create index if not exists ix_string_search_keys on fhir.ix_string (param, norm text_pattern_ops) include (rkey);
drop index if exists fhir.ix_string_search;
create index if not exists ix_token_search_keys on fhir.ix_token (param, code, system) include (rkey);
drop index if exists fhir.ix_token_search;
create index if not exists ix_reference_search_keys on fhir.ix_reference (param, target) include (rkey);
drop index if exists fhir.ix_reference_search;
create index if not exists ix_date_search_keys on fhir.ix_date (param, low, high) include (rkey);
drop index if exists fhir.ix_date_search;
