-- An AuditEvent's JSON is ~2 kB, just over the size at which PostgreSQL compresses a row's long values, so most audit
-- rows are compressed as they are stored, by pglz unless told otherwise. lz4 compresses and decompresses several times
-- faster at about the same size: measured on 20,000 stored BALP events, the backend's CPU per inserted row fell by
-- ~15 % (docs/performance.md, "Audit rows compressed with lz4"). Rows already stored keep their pglz form and read as
-- before. A PostgreSQL built without lz4 (it is in Debian's and the managed services' builds) keeps pglz.
do $$
begin
    if exists (select 1 from pg_settings where name = 'default_toast_compression' and 'lz4' = any(enumvals)) then
        alter table fhir.audit_event alter column json set compression lz4;
    end if;
end
$$;
