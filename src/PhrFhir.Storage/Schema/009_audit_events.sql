-- AuditEvents in a table of their own, shaped for appending and for the access-log searches
-- (AuditQuery): one row per event, no generic index rows, no Marten document (docs/audit.md). The
-- columns hold what the searches and the access rules read; `json` is the AuditEvent served as is.
-- `row_mac` is an HMAC-SHA256, under a key kept outside the database, of every column but the chain's
-- own (AuditChain.RowMac); the sealer links rows into a keyed chain (chain_pos, chain_mac) in the
-- order it seals them. Rows are only ever inserted; nothing updates them but the sealer, once.
create table if not exists fhir.audit_event (
    seq         bigserial   primary key,          -- insertion order (the sealer's order)
    id          text        not null unique,      -- "AuditEvent/{id}", the key access filters use
    recorded    timestamptz not null,             -- AuditEvent.recorded (= meta.lastUpdated), milliseconds
    person      text,                             -- the BALP patient entity: whose access log it is in
    type_system text,
    type_code   text,
    subtype     text[]      not null,             -- "system|code"
    action      text,
    outcome     text,
    agent       text[]      not null,             -- agent.who: references "Type/id", identifiers "system|value"
    altid       text[]      not null,
    entity      text[]      not null,             -- entity.what references
    json        text        not null,
    row_mac     bytea       not null,
    chain_pos   bigint      unique,
    chain_mac   bytea
);
-- The person's log and `patient=` searches, newest first; everything else by date.
create index if not exists audit_event_person on fhir.audit_event (person, recorded);
create index if not exists audit_event_recorded on fhir.audit_event (recorded);
create index if not exists audit_event_unsealed on fhir.audit_event (seq) where chain_pos is null;
-- Before this table, AuditEvents were Marten documents hash-chained by fhir.audit_chain (004). They are
-- not moved here (their chain was unkeyed, so moving them could not make them tamper-evident); both stay
-- for an administrator to export, and are no longer served.
