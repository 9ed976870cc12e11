using Npgsql;

namespace PhrFhir.Storage;

/// <summary>The identity tables (Schema/010_identity.sql) inside a write's transaction (Server/Identity).</summary>
public sealed partial class WriteTransaction
{
    /// <summary>
    /// Set by the identity operations ($link, $unlink, $merge) only: Patient.link is theirs to write, and
    /// every other write that would change it is refused (Identity/IdentifierDomains).
    /// </summary>
    public bool MaintainsLinks { get; set; }

    /// <summary>Who may assign identifiers in <paramref name="system"/>, or null when no one has registered it.</summary>
    public async Task<string[]?> DomainAssignersAsync(string system, CancellationToken ct)
    {
        await using var cmd = Command("select assigners from fhir.identifier_domain where system = $1", system);
        return await cmd.ExecuteScalarAsync(ct) as string[];
    }

    /// <summary>
    /// The checks of a Patient version's new identifiers (system|value) in one round trip (issue #12): who assigns
    /// in their systems (when <paramref name="readAssigners"/>; a system nobody registered is absent), a
    /// transaction lock per value, so that concurrent writers of one value run one after another, and then
    /// which values a current Patient other than <paramref name="key"/> holds, whoever wrote it — this
    /// transaction's queued versions included. The locks are taken in one order, and before the search:
    /// the search is a later statement, so it sees what a writer that held a lock committed.
    /// </summary>
    public async Task<(Dictionary<string, string[]> Assigners, HashSet<(string System, string Value)> HeldElsewhere)> IdentifierChecksAsync(
        string key, IReadOnlyList<(string System, string Value)> identifiers, bool readAssigners, CancellationToken ct)
    {
        // The identity operations write links beside the versions: the search reads everything from the database.
        if (MaintainsLinks) await FlushAsync(ct);
        var held = new HashSet<(string System, string Value)>();
        foreach (var (other, rows) in PendingRows)
            if (other != key && other.StartsWith("Patient/", StringComparison.Ordinal))
                foreach (var t in rows.Tokens)
                    if (t.Param == "Patient.identifier" && t.System is { } system && t.Code is { } code && identifiers.Contains((system, code)))
                        held.Add((system, code));

        await using var batch = new NpgsqlBatch(_conn, _tx);
        NpgsqlBatchCommand Statement(string sql, params object[] args) => FhirStore.Statement(batch, sql, args);
        // Planned once per connection (a generic plan), not for their values on every call: planning these three cost
        // PostgreSQL 0.34 ms per POST /Patient, more than executing them (docs/performance.md, "Session 11"). A generic
        // plan is made with the statistics of the moment and kept while a table grows, so each statement has the one
        // shape that is right at every size — index probes by key, per value — and the planner is not let choose a
        // table or bitmap scan, which it would when it first saw the table small (session 7: a plan made on an empty
        // database scanned ix_token for each check while 10,000 Patients were seeded). Set back after them: a search
        // later in the transaction is planned for its values, with every plan open to it.
        Statement("set local plan_cache_mode = force_generic_plan");
        Statement("set local enable_seqscan = off");
        Statement("set local enable_bitmapscan = off");
        if (readAssigners)
            Statement("select system, assigners from fhir.identifier_domain where system = any($1)", (object)identifiers.Select(i => i.System).Distinct().ToArray());
        Statement("select count(pg_advisory_xact_lock(hashtextextended(k, 0))) from (select k from unnest($1::text[]) k order by k) s",
            (object)identifiers.Select(i => "identifier:" + i.System + "|" + i.Value).Distinct().ToArray());
        // Rows of versions this transaction replaces are stale (their queued rows were looked at above). Per value one
        // probe of ix_token by (param, code): a lateral subquery with a limit cannot become a hash or merge join over
        // the whole parameter's rows, and the replaced-by link is a scalar subquery, one probe of its key per row.
        Statement("select i.system, i.code from unnest($1::text[], $2::text[]) as i(system, code) cross join lateral (select from fhir.ix_token t " +
                  "where t.param = 'Patient.identifier' and t.code = i.code and t.system = i.system and t.rkey <> $3 and t.rkey <> all($4) " +
                  "and (select l.kind from fhir.person_link l where l.patient_key = t.rkey) is distinct from 'replaced-by' limit 1) held",
            identifiers.Select(i => i.System).ToArray(), identifiers.Select(i => i.Value).ToArray(), key, PendingReplacedKeys);
        Statement("set local enable_bitmapscan = on");
        Statement("set local enable_seqscan = on");
        Statement("set local plan_cache_mode = force_custom_plan");

        var assigners = new Dictionary<string, string[]>(StringComparer.Ordinal);
        try
        {
            await using var reader = await batch.ExecuteReaderAsync(ct);
            // The settings' statements have no result set: the reader starts at the first select's.
            if (readAssigners)
            {
                while (await reader.ReadAsync(ct)) assigners[reader.GetString(0)] = reader.GetFieldValue<string[]>(1);
                await reader.NextResultAsync(ct);
            }
            await reader.NextResultAsync(ct); // the locks
            while (await reader.ReadAsync(ct)) held.Add((reader.GetString(0), reader.GetString(1)));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DeadlockDetected)
        {
            throw FhirError.Conflict("Another request was writing the same identifiers at the same time; retry. (他の更新と競合しました)");
        }
        return (assigners, held);
    }

    /// <summary>
    /// Records <paramref name="writer"/> as the assigning authority of a system nobody registered (the first
    /// assigner), and answers who assigns in it now (another transaction may have claimed it first).
    /// </summary>
    public async Task<string[]> ClaimDomainAsync(string system, string writer, CancellationToken ct)
    {
        await using (var insert = Command(
            "insert into fhir.identifier_domain (system, assigners, origin) values ($1, $2, 'first-assigner') on conflict (system) do nothing",
            system, new[] { writer }))
            await insert.ExecuteNonQueryAsync(ct);
        return await DomainAssignersAsync(system, ct) ?? [writer];
    }

    /// <summary>
    /// Who is the same person changed: what holds that graph in memory (ConsentRules) is told at commit, in this
    /// process before the answer and in every other by NOTIFY, as a write of a watched type tells its caches.
    /// </summary>
    void AnnounceLinkChange()
    {
        if (_notified.Add(FhirStore.PersonLinksChanged)) Add("select pg_notify($1, $2)", FhirStore.ChangeChannel, FhirStore.PersonLinksChanged);
    }

    /// <summary>The person's Patient key a Patient is linked to, or null.</summary>
    public async Task<(string Person, string Kind)?> LinkOfAsync(string patientKey, CancellationToken ct)
    {
        await using var cmd = Command("select person_key, kind from fhir.person_link where patient_key = $1 for update", patientKey);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        return await reader.ReadAsync(ct) ? (reader.GetString(0), reader.GetString(1)) : null;
    }

    /// <summary>True when some Patient is linked to <paramref name="personKey"/> (it is a person's Patient).</summary>
    public async Task<bool> HasLinkedAsync(string personKey, CancellationToken ct)
    {
        await using var cmd = Command("select exists(select 1 from fhir.person_link where person_key = $1)", personKey);
        return await cmd.ExecuteScalarAsync(ct) is true;
    }

    public async Task SetLinkAsync(string patientKey, string personKey, string kind, CancellationToken ct)
    {
        AnnounceLinkChange();
        await using var cmd = Command(
            "insert into fhir.person_link (patient_key, person_key, kind) values ($1, $2, $3) " +
            "on conflict (patient_key) do update set person_key = excluded.person_key, kind = excluded.kind, linked = now()",
            patientKey, personKey, kind);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    public async Task RemoveLinkAsync(string patientKey, CancellationToken ct)
    {
        AnnounceLinkChange();
        await using var cmd = Command("delete from fhir.person_link where patient_key = $1", patientKey);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// A merge: every current resource in <paramref name="fromPerson"/>'s compartment but the Patient itself
    /// (documents, Consents, observations…) now belongs to <paramref name="toPerson"/>. Only the compartment
    /// key moves (documents and index rows); the resources keep their versions and references, so their
    /// subject still names the merged-away Patient, whose link says replaced-by.
    /// </summary>
    public async Task<int> MoveCompartmentAsync(string fromPerson, string toPerson, CancellationToken ct)
    {
        await FlushAsync(ct);
        int moved;
        await using (var docs = Command(
            "update fhir.mt_doc_resourcedocument set person = $2, data = jsonb_set(data, '{person}', to_jsonb($2::text)) " +
            "where person = $1 and resource_type <> 'Patient'", fromPerson, toPerson))
            moved = await docs.ExecuteNonQueryAsync(ct);
        await using (var bytes = Command("update fhir.binary_content set person = $2 where person = $1", fromPerson, toPerson))
            await bytes.ExecuteNonQueryAsync(ct);
        foreach (var table in (string[])["ix_string", "ix_token", "ix_reference", "ix_date", "ix_number", "ix_uri"])
        {
            await using var rows = Command($"update fhir.{table} set person = $2 where person = $1 and rkey not like 'Patient/%'", fromPerson, toPerson);
            await rows.ExecuteNonQueryAsync(ct);
        }
        return moved;
    }

    NpgsqlCommand Command(string sql, params object[] args)
    {
        var cmd = new NpgsqlCommand(sql, _conn, _tx);
        foreach (var a in args) cmd.Parameters.Add(new NpgsqlParameter { Value = a });
        return cmd;
    }
}
