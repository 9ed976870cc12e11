-- The audit table becomes insert-only (issue #12; docs/audit.md "Tamper evidence", docs/performance.md "Audit").
-- Until now the sealer linked each row into the keyed chain by UPDATEing it (chain_pos, chain_mac): every
-- AuditEvent was written twice — a new version of the whole ~2 kB row, ~2,100 bytes of WAL, new entries in all
-- six indexes (chain_pos was indexed, so never HOT) and a dead tuple for autovacuum. Now:
--   * fhir.audit_event rows are written once, by the INSERT/COPY that stores them, and never updated;
--   * the chain lives in a narrow insert-only table of its own, one link per row: position, the row's seq, and
--     chain_mac = HMAC(key, previous chain_mac ‖ row_mac ‖ position) — the same formula and positions as before;
--   * rows awaiting their link are found through a small queue: a statement trigger puts the seq of every row
--     inserted into fhir.audit_event (whoever inserts it, in the same transaction) into fhir.audit_seal_queue,
--     and the sealer takes them off it as it links them (FhirStore.SealAuditChainAsync).
create table if not exists fhir.audit_chain_link (
    chain_pos   bigint primary key,               -- position in the chain, 1, 2, … in the order sealed
    seq         bigint not null,                  -- fhir.audit_event.seq of the row linked here
    chain_mac   bytea  not null
);

-- No index: the sealer takes up to 1,000 rows by ctid, whatever their order, and the table stays small (it holds
-- what has not been sealed yet, at most a second or so of AuditEvents, plus dead tuples until autovacuum).
create table if not exists fhir.audit_seal_queue (
    seq         bigint not null
);

-- One INSERT per statement (a COPY of 500 rows queues them with one INSERT), not a trigger call per row.
create or replace function fhir.audit_event_queue_for_seal() returns trigger language plpgsql as $$
begin
    insert into fhir.audit_seal_queue (seq) select seq from added;
    return null;
end
$$;
drop trigger if exists audit_event_queued on fhir.audit_event;
create trigger audit_event_queued after insert on fhir.audit_event
    referencing new table as added for each statement execute function fhir.audit_event_queue_for_seal();

-- Upgrade: rows sealed the old way keep their positions and links (the checkpoint file's head still matches),
-- rows not sealed yet are queued and get the next positions. Then the columns and the partial index go.
insert into fhir.audit_chain_link (chain_pos, seq, chain_mac)
    select chain_pos, seq, chain_mac from fhir.audit_event where chain_pos is not null order by chain_pos;
insert into fhir.audit_seal_queue (seq)
    select seq from fhir.audit_event where chain_pos is null order by seq;
drop index if exists fhir.audit_event_unsealed;
alter table fhir.audit_event drop column chain_pos, drop column chain_mac;
