-- Binary content (documents: PDFs, CDA, FHIR document Bundles, images), kept outside the resource
-- JSON so that a 100 MB document is streamed in and out in 1 MB chunks, never held whole in memory.
-- One row per Binary version; an S3-compatible store can replace binary_chunk later (docs/scale.md).
create table if not exists fhir.binary_content (
    rkey         text   not null,     -- "Binary/{id}"
    version      int    not null,
    person       text,
    content_type text   not null,
    size         bigint not null,
    sha1         bytea  not null,     -- MHD: DocumentReference.content.attachment.hash is base64(SHA-1)
    chunk_size   int    not null,
    primary key (rkey, version)
);

create table if not exists fhir.binary_chunk (
    rkey    text  not null,
    version int   not null,
    chunk   int   not null,
    data    bytea not null,
    primary key (rkey, version, chunk)
);
