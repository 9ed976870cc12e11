-- Patient/$match (IHE PDQm ITI-119, docs/identity.md): candidates are found by blocking keys on the
-- search index (FhirStore.MatchCandidatesAsync): identifier, folded family + given name, birth date and
-- phone. The first three use the search indexes of 001; a phone is compared by its digits only
-- ("090-1234-5678" = "09012345678"), so it gets an index of its own on that form.
create index if not exists ix_token_phone_digits on fhir.ix_token (regexp_replace(code, '[^0-9]', '', 'g'))
    where param = 'Patient.phone';
