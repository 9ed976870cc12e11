-- SMART Health Links (docs/sharing.md): one row per link the person issued with Patient/{id}/$share.
-- The link's id is also the id of its folder List and the last segment of its manifest URL: 43 random
-- characters of [A-Za-z0-9] (256 bits), so the URL is the capability (SHL: "at least 256 bits of
-- entropy"). The Consent the link is recorded as (IHE PCF) is in the resource store; this row holds what
-- the resource store must not: the content key, the passcode's hash and the counters.
create table if not exists fhir.share_link (
    id            text        primary key,
    patient       text        not null,            -- Patient id whose documents it shares
    consent       text        not null,            -- Consent id (status inactive revokes the link)
    content_key   bytea       not null,            -- the 32-byte key of the shlink payload (JWE alg dir, A256GCM)
    passcode_hash text,                            -- Argon2id, "argon2id$m$t$p$salt$hash" (base64); null: no passcode
    attempts_left integer,                         -- wrong passcodes still allowed over the link's life; null: no passcode
    flags         text        not null,            -- SHL flag letters as issued ("", "L", "P", "LP", "U")
    label         text,
    expires       timestamptz,
    documents     text[]      not null,            -- the shared DocumentReference ids
    created       timestamptz not null default now(),
    revoked       timestamptz,
    opened        integer     not null default 0,  -- manifest requests answered with files
    polled        timestamptz                      -- L links: the last manifest request answered (429 when too soon)
);
create index if not exists share_link_patient on fhir.share_link (patient, created);

-- The `location` URLs a manifest answer hands out (SHL: short-lived, no token): 43 random characters each.
create table if not exists fhir.share_file (
    token     text        primary key,
    link      text        not null references fhir.share_link (id),
    resource  text        not null,                -- "DocumentReference/x": its JWE file; "Binary/y": its bytes (VHL, ITI-68)
    recipient text        not null,
    expires   timestamptz not null
);
create index if not exists share_file_link on fhir.share_file (link);
