-- Searches intersect their criteria as semi-joins (FhirStore.SearchAsync): PostgreSQL starts from the
-- smallest key set and probes the others by key. These indexes put rkey into the key, after the columns a
-- criterion compares for equality, so that a probe ("is this DocumentReference's status current?") is one
-- index-only lookup instead of a walk over every current document, and the keys of an equality criterion
-- come out in key order, the order pages are read in. They replace the covering indexes of 007 on the same
-- columns (system moves to the included columns: a token criterion always names its code or only a system,
-- which the index answers as before, by its param range), so writes keep the same number of indexes.
create index if not exists ix_token_search_keyed on fhir.ix_token (param, code, rkey) include (system, writer, person);
drop index if exists fhir.ix_token_search_access;
create index if not exists ix_reference_search_keyed on fhir.ix_reference (param, target, rkey) include (writer, person);
drop index if exists fhir.ix_reference_search_access;
-- A bare id (patient=123) compares target_id.
create index if not exists ix_reference_id_keyed on fhir.ix_reference (param, target_id, rkey) include (writer, person);
drop index if exists fhir.ix_reference_id;
