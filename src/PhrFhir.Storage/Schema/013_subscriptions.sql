-- Topic-based Subscriptions (R5 backport on R4, IHE DSUBm; docs/subscriptions.md).
--
-- subscription_outbox: one row per version written of a type some topic watches, inserted by
-- WriteTransaction in the write's own transaction (a rolled-back ITI-65 leaves none). The dispatcher
-- (SubscriptionStore.DispatchAsync) takes rows with `for update`, turns them into numbered events and
-- deletes them in one transaction, so a row committed late (a lower id after a higher one) is simply
-- taken later: nothing is skipped, and no cursor over ids is needed.
create table if not exists fhir.subscription_outbox (
    id            bigint generated always as identity primary key,
    rkey          text        not null,   -- "Type/id" of the resource written
    version       int         not null,   -- the version written (resource_history holds its JSON)
    resource_type text        not null,
    method        text        not null,   -- POST, PUT, DELETE
    person        text,
    recorded      timestamptz not null default now()
);

-- subscription_state: what the deliverer needs of each Subscription resource (written in the same
-- transaction as the Subscription itself), and its counters. events_since_start is the last event number
-- given out (incremented under this row's lock, so numbers have no gaps and no repeats);
-- delivered_through the last one the endpoint acknowledged (2xx).
create table if not exists fhir.subscription_state (
    id                 text        primary key,   -- the Subscription's id
    topic              text        not null,
    status             text        not null,      -- requested | active | error | off
    definition         jsonb       not null,      -- endpoint, payload, filters, subscriber (SubscriptionRules)
    created            timestamptz not null default now(),
    events_since_start bigint      not null default 0,
    delivered_through  bigint      not null default 0,
    attempts           int         not null default 0,
    first_failure      timestamptz,
    next_attempt       timestamptz not null default now(),
    last_sent          timestamptz,
    last_error         text
);

-- subscription_event: every event given a number, kept for $events and for redelivery.
create table if not exists fhir.subscription_event (
    subscription_id text        not null,
    number          bigint      not null,
    rkey            text        not null,
    version         int         not null,
    method          text        not null,
    person          text,
    recorded        timestamptz not null,
    primary key (subscription_id, number)
);
