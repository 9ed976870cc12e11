-- OpenIddict's stores (AuthorizationStore: its EF Core model with snake_case names), shared by every
-- server process and kept across restarts: a code is redeemed once, a replayed code or refresh token
-- revokes its authorization everywhere. Exactly the tables, columns and indexes the EF model expects
-- (AuthorizationStoreTests compares them); ids are strings OpenIddict generates. The text columns hold
-- OpenIddict's JSON (permissions, redirect URIs, properties); payload stays empty: codes and refresh
-- tokens are self-contained encrypted JWTs, and only their id, state and dates are stored here.
create schema if not exists auth;

-- The clients of PHRFHIR_CLIENTS, re-registered at every start (secrets as OpenIddict hashes).
create table if not exists auth.applications (
    id                        text not null,
    application_type          varchar(50),
    client_id                 varchar(100),
    client_secret             text,
    client_type               varchar(50),
    concurrency_token         varchar(50),
    consent_type              varchar(50),
    display_name              text,
    display_names             text,
    json_web_key_set          text,
    permissions               text,
    post_logout_redirect_uris text,
    properties                text,
    redirect_uris             text,
    requirements              text,
    settings                  text,
    constraint pk_applications primary key (id)
);
create unique index if not exists ix_applications_client_id on auth.applications (client_id);

-- Not used by PhrFhir (scopes are checked against each client's registration), but part of the model.
create table if not exists auth.scopes (
    id                text not null,
    concurrency_token varchar(50),
    description       text,
    descriptions      text,
    display_name      text,
    display_names     text,
    name              varchar(200),
    properties        text,
    resources         text,
    constraint pk_scopes primary key (id)
);
create unique index if not exists ix_scopes_name on auth.scopes (name);

-- One per person's consent to an app (ad hoc); revoking it revokes its codes and refresh tokens.
create table if not exists auth.authorizations (
    id                text not null,
    application_id    text,
    concurrency_token varchar(50),
    creation_date     timestamptz,
    properties        text,
    scopes            text,
    status            varchar(50),
    subject           varchar(400),
    type              varchar(50),
    constraint pk_authorizations primary key (id),
    constraint fk_authorizations_applications_application_id foreign key (application_id) references auth.applications (id)
);
create index if not exists ix_authorizations_application_id_status_subject_type on auth.authorizations (application_id, status, subject, type);

-- Authorization codes and refresh tokens (access tokens are not stored: AuthorizationServer).
create table if not exists auth.tokens (
    id                text not null,
    application_id    text,
    authorization_id  text,
    concurrency_token varchar(50),
    creation_date     timestamptz,
    expiration_date   timestamptz,
    payload           text,
    properties        text,
    redemption_date   timestamptz,
    reference_id      varchar(100),
    status            varchar(50),
    subject           varchar(400),
    type              varchar(150),
    constraint pk_tokens primary key (id),
    constraint fk_tokens_applications_application_id foreign key (application_id) references auth.applications (id),
    constraint fk_tokens_authorizations_authorization_id foreign key (authorization_id) references auth.authorizations (id)
);
create index if not exists ix_tokens_application_id_status_subject_type on auth.tokens (application_id, status, subject, type);
create index if not exists ix_tokens_authorization_id on auth.tokens (authorization_id);
create unique index if not exists ix_tokens_reference_id on auth.tokens (reference_id);
