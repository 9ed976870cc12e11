-- The person's Patient/$link attempts (docs/identity.md, "Links"): the person proves an institution's number
-- by typing it, so guessing is bounded per person and window (Identity:LinkAttempts). An attempt is a row
-- from the moment it is let through; a successful one is deleted, so the rows in the window are the failures
-- (and the attempts under way). Kept in PostgreSQL so that every server instance counts the same attempts.
create table if not exists fhir.link_attempt (
    id         bigint      generated always as identity primary key,
    person_key text        not null,          -- the person's own Patient, "Patient/{id}"
    attempted  timestamptz not null default now()
);
create index if not exists link_attempt_person on fhir.link_attempt (person_key, attempted);
