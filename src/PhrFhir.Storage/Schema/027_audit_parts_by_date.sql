-- The access log's newest-first page (GET AuditEvent, AuditLog.SearchAuditAsync) takes the first rows of each of its
-- two kinds in date order and merges them: a row's own event by audit_event_recorded, a search's per-patient parts
-- (Schema/026) through the rows that have parts, in date order, each joined to its few entries in audit_event_part.
-- Without this index the parts had to be joined and sorted in full for every page: with 300,000 parts, seconds.
-- Only rows of searches about several patients carry parts, so the index stays small and costs other writes nothing.
create index if not exists audit_event_recorded_parts on fhir.audit_event (recorded) where part_person is not null;
