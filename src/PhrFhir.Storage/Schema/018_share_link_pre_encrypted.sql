-- Pre-encrypted SMART Health Links (docs/sharing.md, "Pre-encryption"): at issue each shared document is
-- encrypted into its SHL file (a compact JWE) and only the ciphertext is kept; the key travels in the
-- shlink payload and nowhere else. Such a link's row has no content_key.
alter table fhir.share_link alter column content_key drop not null;
alter table fhir.share_link add column if not exists pre_encrypted boolean not null default false;

-- One JWE per shared document of a pre-encrypted link, as encrypted at issue (a snapshot); deleted with the
-- link's revocation.
create table if not exists fhir.share_link_file (
    link     text not null references fhir.share_link (id),
    document text not null,                      -- the DocumentReference id the file holds (with its content)
    jwe      text not null,                      -- compact JWE (alg dir, enc A256GCM), encrypted with the payload's key
    primary key (link, document)
);
