-- A search that names a Patient by reference (ITI-67: DocumentReference?patient=…&status=current) reads its other
-- criteria for that person's rows only (FhirStore.Intersection): `… and person = any(<the persons of the patient's
-- rows>)`. With person before rkey in the key, the status rows of one person's documents are one short range, read
-- in a few pages, whatever the number of documents of everyone else; without it each of the patient's documents
-- costs a probe of ix_token_search_keyed (4 buffers at 200,000 documents, more as the index deepens).
create index if not exists ix_token_search_person on fhir.ix_token (param, code, person, rkey) include (system, writer);
