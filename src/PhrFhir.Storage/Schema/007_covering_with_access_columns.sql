-- The covering search indexes (003) also carry writer and person, so that a key set with an access
-- condition on them (AccessFilter.IndexSql) is still answered by an index-only scan.
create index if not exists ix_string_search_access on fhir.ix_string (param, norm text_pattern_ops) include (rkey, writer, person);
drop index if exists fhir.ix_string_search_keys;
create index if not exists ix_token_search_access on fhir.ix_token (param, code, system) include (rkey, writer, person);
drop index if exists fhir.ix_token_search_keys;
create index if not exists ix_reference_search_access on fhir.ix_reference (param, target) include (rkey, writer, person);
drop index if exists fhir.ix_reference_search_keys;
create index if not exists ix_date_search_access on fhir.ix_date (param, low, high) include (rkey, writer, person);
drop index if exists fhir.ix_date_search_keys;
