-- Every version of every resource (vread, _history). Written in the same transaction as the
-- Marten document that holds the current version. `person` is the Patient compartment key: a
-- distributed deployment (Citus) distributes this and every index table by it (docs/scale.md).
create table if not exists fhir.resource_history (
    rkey          text        not null,          -- "{type}/{id}"
    version       int         not null,
    resource_type text        not null,
    person        text,
    last_updated  timestamptz not null,
    deleted       boolean     not null,
    method        text        not null,          -- POST | PUT | DELETE
    json          text        not null,
    primary key (rkey, version)
);
create index if not exists resource_history_type_time on fhir.resource_history (resource_type, last_updated);
create index if not exists resource_history_time on fhir.resource_history (last_updated);

-- Search index: one table per SearchParameter type. Rows exist only for the current, undeleted
-- version of a resource; `param` is "{ResourceType}.{code}".
create table if not exists fhir.ix_string (
    rkey text not null, person text, param text not null,
    norm  text not null,                         -- folded: NFKC, kana, case, accents (JapaneseText)
    exact text not null
);
create index if not exists ix_string_search on fhir.ix_string (param, norm text_pattern_ops);
create index if not exists ix_string_key on fhir.ix_string (rkey);

create table if not exists fhir.ix_token (
    rkey text not null, person text, param text not null,
    system text, code text, display text,       -- display folded like strings, for :text
    type_system text, type_code text            -- Identifier.type, for :of-type
);
create index if not exists ix_token_search on fhir.ix_token (param, code, system);
create index if not exists ix_token_key on fhir.ix_token (rkey);

create table if not exists fhir.ix_reference (
    rkey text not null, person text, param text not null,
    target text not null,                        -- "{type}/{id}" for local refs, else the absolute URL
    target_id text                               -- the id alone, for `subject=123`
);
create index if not exists ix_reference_search on fhir.ix_reference (param, target);
create index if not exists ix_reference_target on fhir.ix_reference (target);
create index if not exists ix_reference_id on fhir.ix_reference (param, target_id);
create index if not exists ix_reference_key on fhir.ix_reference (rkey);

create table if not exists fhir.ix_date (
    rkey text not null, person text, param text not null,
    low timestamptz not null, high timestamptz not null   -- inclusive range implied by precision
);
create index if not exists ix_date_search on fhir.ix_date (param, low, high);
create index if not exists ix_date_key on fhir.ix_date (rkey);

create table if not exists fhir.ix_number (
    rkey text not null, person text, param text not null,
    value numeric not null, system text, code text         -- quantity: system/code of the unit
);
create index if not exists ix_number_search on fhir.ix_number (param, value);
create index if not exists ix_number_key on fhir.ix_number (rkey);

create table if not exists fhir.ix_uri (
    rkey text not null, person text, param text not null,
    uri text not null
);
create index if not exists ix_uri_search on fhir.ix_uri (param, uri);
create index if not exists ix_uri_key on fhir.ix_uri (rkey);
