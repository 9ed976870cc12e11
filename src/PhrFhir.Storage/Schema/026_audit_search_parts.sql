-- A search's AuditEvents stored as one row (issue #12; docs/audit.md "One row per search", docs/performance.md
-- "Session 8"). A search about several patients records, per BALP PatientQuery, one AuditEvent per patient — each
-- with the query reduced to what concerns that patient — and the whole query once for the operator. Those events
-- differ only in the patient and the reduced query, yet each was built, serialised, MACed, stored (~2 kB, four
-- indexes), queued and chained on its own: 11 per `Patient?family=…&_count=10`. Now the operator's event is the one
-- stored row, and carries the per-patient parts in two arrays covered by its row MAC (AuditChain.RowMac):
--   part_person[i]  the patient of part i (1-based);
--   part_query[i]   the query as it concerns that patient, or null when their event keeps the whole query.
-- Part i is served as AuditEvent "<id>.<i>", projected at read time from the row's JSON, the patient and the reduced
-- query (Audit/BalpAuditEvents.ForPatient). Rows without parts (null arrays) keep their MAC and read as before.
alter table fhir.audit_event add column if not exists part_person text[], add column if not exists part_query text[];

-- Where each part lies in its patient's access log: a narrow derived index, filled by the insert trigger below
-- (whoever inserts, in the same transaction). It carries nothing served or sorted on: a part is served only where the
-- row's MACed part_person[part] equals its person, with the row's own columns (recorded included), and
-- `$verify-chain?full=true` checks that every part has its entry.
create table if not exists fhir.audit_event_part (
    seq         bigint      not null,             -- fhir.audit_event.seq of the row holding the part
    part        smallint    not null,             -- 1-based index into part_person / part_query
    person      text        not null,
    primary key (seq, part)
);
create index if not exists audit_event_part_person on fhir.audit_event_part (person);

-- The statement trigger of Schema/020 also files each inserted row's parts: still one call per statement.
create or replace function fhir.audit_event_queue_for_seal() returns trigger language plpgsql as $$
begin
    insert into fhir.audit_seal_queue (seq) select seq from added;
    insert into fhir.audit_event_part (seq, part, person)
        select a.seq, i, a.part_person[i] from added a, generate_subscripts(a.part_person, 1) i
        where a.part_person is not null;
    return null;
end
$$;
