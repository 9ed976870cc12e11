-- Subscriptions: no outbox work while nobody listens (docs/subscriptions.md, "Reliability").
--
-- A write records its changes in fhir.subscription_outbox only when a Subscription to a topic watching
-- their type is live (status not off), checked by the insert itself (WriteTransaction.RecordChanges):
-- the partial index below answers that check from a handful of entries however many Subscriptions ended.
-- seen: the snapshot of that check. live_xid: the transaction that made the Subscription live (created
-- it, or restarted it from off). A change is an event of a Subscription whose live_xid the change's
-- snapshot saw committed (pg_visible_in_snapshot): exactly the Subscriptions its check counted, so one
-- made live after the check gets no event of it, and the deliverer makes a Subscription active only once
-- the transactions in progress when it became live have ended (SubscriptionDelivery), so that nothing
-- committed after it is active can have missed it.
alter table fhir.subscription_outbox add column if not exists seen pg_snapshot;
alter table fhir.subscription_state add column if not exists live_xid xid8;
create index if not exists subscription_state_live on fhir.subscription_state (topic) where status <> 'off';

-- A deleted Subscription is off (ResourceWrites.DeleteAsync now says so with the deletion).
update fhir.subscription_state s set status = 'off'
from fhir.mt_doc_resourcedocument d
where d.id = 'Subscription/' || s.id and d.deleted and s.status <> 'off';
