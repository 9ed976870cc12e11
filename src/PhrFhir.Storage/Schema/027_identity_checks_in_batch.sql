-- The identity-domain checks of a Patient's new identifiers inside the write's own batch (issue #12): a single-resource
-- write (POST/PUT/PATCH of a Patient) sends this call in the same round trip as its documents, index rows, AuditEvent and
-- COMMIT, instead of a round trip of its own before them (WriteTransaction.CheckIdentifiersWithWrites). A refusal raises
-- an error PostgreSQL ends the batch with — nothing after it runs, the commit included, so nothing is stored — and the
-- server answers it with the same OperationOutcome as the checks made in C# (Server/Identity/IdentifierDomains):
--   SQLSTATE PH403, the message is the identifier's position in the arrays (0-based): the writer does not assign in its
--   system; SQLSTATE PH409, the message is the position: a current Patient other than p_key holds the value. (The
--   position is the message, not the DETAIL: Npgsql hides an error's detail unless the connection string asks for it.)
-- The rules are those of IdentifierDomains.CheckAsync (docs/identity.md), in the same order per identifier:
--   - p_writer null: no assigner check (the operator assigns anywhere); else the writer must be among the system's
--     assigners; a system nobody registered is JP Core's institution-specific patient id system of the writer's own
--     institution number (IdentifierDomains.InstitutionNumberOf/IsInstitution), or becomes the writer's (first assigner);
--   - a lock per value (in one order, before the search, so the search — a later statement, with its own snapshot, as
--     this function is volatile — sees what a lock holder committed), then the values another current Patient holds,
--     rows of p_replaced (versions this transaction replaces) and merged-away Patients not counted.
create or replace function fhir.check_identifiers(p_key text, p_systems text[], p_values text[], p_writer text, p_replaced text[])
returns void language plpgsql volatile as $$
declare
    i int;
    assigners text[];
    institution text;
begin
    perform count(pg_advisory_xact_lock(hashtextextended(k, 0)))
        from (select distinct 'identifier:' || s || '|' || v as k from unnest(p_systems, p_values) as u(s, v) order by 1) l;
    for i in 1 .. coalesce(array_length(p_systems, 1), 0) loop
        if p_writer is not null then
            select d.assigners into assigners from fhir.identifier_domain d where d.system = p_systems[i];
            if not found then
                institution := substring(p_systems[i] from '^urn:oid:1\.2\.392\.100495\.20\.3\.51\.1([0-9]{10})$');
                if institution is not null then
                    assigners := case when substr(p_writer, strpos(p_writer, '|') + 1) = institution then array[p_writer] else array[]::text[] end;
                else
                    insert into fhir.identifier_domain (system, assigners, origin) values (p_systems[i], array[p_writer], 'first-assigner')
                        on conflict (system) do nothing;
                    select coalesce((select d.assigners from fhir.identifier_domain d where d.system = p_systems[i]), array[p_writer]) into assigners;
                end if;
            end if;
            if not (p_writer = any(assigners)) then
                raise exception using errcode = 'PH403', message = (i - 1)::text;
            end if;
        end if;
        if exists(select 1 from fhir.ix_token t
                  where t.param = 'Patient.identifier' and t.code = p_values[i] and t.system = p_systems[i]
                    and t.rkey <> p_key and t.rkey <> all(p_replaced)
                    and not exists(select 1 from fhir.person_link l where l.patient_key = t.rkey and l.kind = 'replaced-by')) then
            raise exception using errcode = 'PH409', message = (i - 1)::text;
        end if;
    end loop;
end
$$;
