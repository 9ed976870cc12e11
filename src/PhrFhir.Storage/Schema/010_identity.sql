-- Patient identity across institutions (docs/identity.md).
--
-- Identifier domains: each Patient.identifier.system is an assigning authority; `assigners` are the
-- writer keys (an institution's actor identifier "system|value") allowed to assign values in it. A row
-- is either registered by the operator (configuration Identity:Domains, applied at start) or recorded
-- when the first institution assigns in a system nobody registered ("first-assigner"), in the same
-- transaction as that Patient, so a refused write records nothing.
create table if not exists fhir.identifier_domain (
    system     text        primary key,
    assigners  text[]      not null,
    origin     text        not null check (origin in ('registered', 'first-assigner')),
    recorded   timestamptz not null default now()
);

-- Which person each institution's Patient (or a merged-away Patient) belongs to: the authority the access
-- rules read (the person's token covers every Patient linked to theirs). Patient.link on both resources
-- is its FHIR representation, written in the same transaction by Patient/$link, $unlink and $merge.
-- Keys are "Patient/{id}", as in the index tables.
create table if not exists fhir.person_link (
    patient_key text        primary key,          -- an institution's Patient, or one merged into the person
    person_key  text        not null,             -- the person's own Patient (a person's token is bound to it)
    kind        text        not null check (kind in ('refer', 'replaced-by')),
    linked      timestamptz not null default now()
);
create index if not exists person_link_person on fhir.person_link (person_key);

-- Every Patient key of the persons the given Patient keys belong to: the persons' own Patients and every
-- Patient linked to them. A chained search on a Patient (ITI-67 patient.identifier) follows it, so a
-- person's documents are found by any of their linked identifiers.
create or replace function fhir.same_person_keys(keys text[]) returns setof text language sql stable as $$
    with persons as (
        select coalesce(l.person_key, k) as person_key from unnest(keys) k left join fhir.person_link l on l.patient_key = k)
    select person_key from persons
    union
    select l.patient_key from fhir.person_link l join persons p on l.person_key = p.person_key
$$;
