-- String parameters that select the same values on a type are stored once, under the first code in ordinal order
-- (SearchParam.RowsOf, issue #12): in R4 the `phonetic` parameters of Patient, Practitioner, RelatedPerson and Person
-- select what `name` selects, and searches on `phonetic` now read the `name` rows. The rows written under
-- `phonetic` before are never read again: they go (an update would have removed them with the resource's other rows).
delete from fhir.ix_string where param in ('Patient.phonetic', 'Practitioner.phonetic', 'RelatedPerson.phonetic', 'Person.phonetic');

-- The covering access index of 005 is named like Marten's own indexes, and Marten dropped it at the next start (it drops
-- the mt_… indexes of its tables it was not told about); it is now exempt (FhirStore.Configure: IgnoreIndex) and made again.
create index if not exists mt_doc_resourcedocument_access on fhir.mt_doc_resourcedocument (id) include (resource_type, deleted, writer, person);
