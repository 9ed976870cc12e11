-- A search under an access filter (Security/AccessPolicy) joins each matching key to its document
-- to test who wrote it and whose it is before counting: this index answers that join from the index
-- alone (no heap visit for rows the visibility map marks all-visible).
create index if not exists mt_doc_resourcedocument_access on fhir.mt_doc_resourcedocument (id) include (resource_type, deleted, writer, person);
