-- Index rows carry their resource's writer beside its person: an access filter of the form "what this
-- client wrote" / "this person's" is then applied by the index scan itself (AccessFilter.IndexSql), and
-- a search with its total stays on the index tables.
alter table fhir.ix_string add column if not exists writer text;
alter table fhir.ix_token add column if not exists writer text;
alter table fhir.ix_reference add column if not exists writer text;
alter table fhir.ix_date add column if not exists writer text;
alter table fhir.ix_number add column if not exists writer text;
alter table fhir.ix_uri add column if not exists writer text;
-- Rows written before: take the writer from their document.
update fhir.ix_string i set writer = d.writer from fhir.mt_doc_resourcedocument d where d.id = i.rkey and d.writer is not null;
update fhir.ix_token i set writer = d.writer from fhir.mt_doc_resourcedocument d where d.id = i.rkey and d.writer is not null;
update fhir.ix_reference i set writer = d.writer from fhir.mt_doc_resourcedocument d where d.id = i.rkey and d.writer is not null;
update fhir.ix_date i set writer = d.writer from fhir.mt_doc_resourcedocument d where d.id = i.rkey and d.writer is not null;
update fhir.ix_number i set writer = d.writer from fhir.mt_doc_resourcedocument d where d.id = i.rkey and d.writer is not null;
update fhir.ix_uri i set writer = d.writer from fhir.mt_doc_resourcedocument d where d.id = i.rkey and d.writer is not null;
