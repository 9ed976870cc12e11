-- Tamper evidence for AuditEvents (the seed's ATNA): every AuditEvent written gets a row here, in the
-- same transaction, with the SHA-256 of its JSON. A sealer then links the rows into one hash chain in
-- the order it seals them (chain_pos), so no writer waits on a global lock; verification recomputes
-- both and names the first row that does not match (FhirStore.VerifyAuditChainAsync).
create table if not exists fhir.audit_chain (
    seq          bigserial primary key,
    rkey         text        not null,            -- "AuditEvent/{id}"
    person       text,
    recorded     timestamptz not null default now(),
    content_hash bytea       not null,            -- SHA-256 of the AuditEvent JSON as stored
    chain_pos    bigint unique,                   -- position in the chain, set by the sealer
    chain_hash   bytea                            -- SHA-256(previous chain_hash || content_hash)
);
create index if not exists audit_chain_unsealed on fhir.audit_chain (seq) where chain_pos is null;
