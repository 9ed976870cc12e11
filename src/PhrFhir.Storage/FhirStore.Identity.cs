namespace PhrFhir.Storage;

/// <summary>Reads of the identity tables (Schema/010_identity.sql) outside a write (Server/Identity).</summary>
public sealed partial class FhirStore
{
    /// <summary>
    /// The Patient ids of a person: their own Patient and every Patient linked to it (an institution's
    /// Patient by $link, a Patient merged into theirs). A person's token covers all of them. When their own
    /// Patient was merged into another (Patient/$merge), the survivor's: their token keeps working.
    /// </summary>
    public async Task<string[]> PersonPatientsAsync(string personId, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "with me(id) as (select coalesce((select substr(person_key, 9) from fhir.person_link where patient_key = 'Patient/' || $1 and kind = 'replaced-by'), $1)) " +
            "select id from me union all select substr(l.patient_key, 9) from fhir.person_link l join me on l.person_key = 'Patient/' || me.id");
        cmd.Parameters.Add(new() { Value = personId });
        var ids = new List<string>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) ids.Add(reader.GetString(0));
        return [.. ids];
    }

    /// <summary>The Patient keys of the same person as <paramref name="patientKeys"/> (fhir.same_person_keys), these included.</summary>
    public async Task<List<string>> SamePersonKeysAsync(string[] patientKeys, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand("select k from fhir.same_person_keys($1) k order by k");
        cmd.Parameters.Add(new() { Value = patientKeys });
        var keys = new List<string>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) keys.Add(reader.GetString(0));
        return keys;
    }

    /// <summary>
    /// For each of <paramref name="patientKeys"/> (c), every Patient key K whose person it belongs to: c is among
    /// fhir.same_person_keys(K) exactly when the row (c, K) is returned. The inverse of that function, for a few
    /// keys at once, so that a cache of the Consent holders' persons (Server/Security/ConsentRules) answers
    /// "whose Consents govern K" without a statement per request. Written out rather than calling the function
    /// per key, so it holds however the links chain: K belongs to the person x when x is K's person (x has no
    /// link of its own and K = x, or K is linked to x), and c counts x as its person when x = c or c is linked to x.
    /// </summary>
    public async Task<List<(string Holder, string Key)>> SamePersonCoverageAsync(string[] patientKeys, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "with x(c, x) as (select c, c from unnest($1::text[]) c " +
            "union select l.patient_key, l.person_key from fhir.person_link l where l.patient_key = any($1)) " +
            "select x.c, x.x from x where not exists(select 1 from fhir.person_link l where l.patient_key = x.x) " +
            "union select x.c, l.patient_key from x join fhir.person_link l on l.person_key = x.x");
        cmd.Parameters.Add(new() { Value = patientKeys });
        var pairs = new List<(string, string)>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) pairs.Add((reader.GetString(0), reader.GetString(1)));
        return pairs;
    }

    /// <summary>The current Patients carrying system|value (ids), whoever wrote them.</summary>
    public async Task<List<string>> PatientsWithIdentifierAsync(string system, string value, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "select substr(rkey, 9) from fhir.ix_token where param = 'Patient.identifier' and system = $1 and code = $2 order by rkey");
        cmd.Parameters.Add(new() { Value = system });
        cmd.Parameters.Add(new() { Value = value });
        var ids = new List<string>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) ids.Add(reader.GetString(0));
        return ids;
    }

    /// <summary>Who assigns identifiers in each domain (system → writer keys).</summary>
    public async Task<Dictionary<string, string[]>> IdentifierDomainsAsync(CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand("select system, assigners from fhir.identifier_domain");
        var domains = new Dictionary<string, string[]>(StringComparer.Ordinal);
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) domains[reader.GetString(0)] = reader.GetFieldValue<string[]>(1);
        return domains;
    }

    /// <summary>
    /// Every domain as recorded (Server/Identity/DomainNamingSystems serves each as a NamingSystem): who
    /// assigns in it, whether the operator registered it or its first assigner claimed it, and when.
    /// </summary>
    public async Task<List<IdentifierDomainRecord>> IdentifierDomainRecordsAsync(CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand("select system, assigners, origin, recorded from fhir.identifier_domain order by system");
        var domains = new List<IdentifierDomainRecord>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
            domains.Add(new(reader.GetString(0), reader.GetFieldValue<string[]>(1), reader.GetString(2), reader.GetFieldValue<DateTimeOffset>(3)));
        return domains;
    }

    /// <summary>The operator's registration of a domain (configuration Identity:Domains): replaces whatever was recorded.</summary>
    public async Task RegisterDomainAsync(string system, string[] assigners, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand(
            "insert into fhir.identifier_domain (system, assigners, origin) values ($1, $2, 'registered') " +
            "on conflict (system) do update set assigners = excluded.assigners, origin = 'registered', recorded = now()");
        cmd.Parameters.Add(new() { Value = system });
        cmd.Parameters.Add(new() { Value = assigners });
        await cmd.ExecuteNonQueryAsync(ct);
    }
}

/// <summary>A row of fhir.identifier_domain: Origin is "registered" (the operator) or "first-assigner".</summary>
public sealed record IdentifierDomainRecord(string System, string[] Assigners, string Origin, DateTimeOffset Recorded);
