namespace PhrFhir.Storage;

/// <summary>What Patient/$merge and subjects named by identifier (Server/Identity) read of fhir.person_link inside a write.</summary>
public sealed partial class WriteTransaction
{
    /// <summary>The Patients linked to <paramref name="personKey"/> (key and kind), locked for this transaction: they follow a merge.</summary>
    public async Task<List<(string Patient, string Kind)>> LinkedToAsync(string personKey, CancellationToken ct)
    {
        await using var cmd = Command("select patient_key, kind from fhir.person_link where person_key = $1 order by patient_key for update", personKey);
        var linked = new List<(string, string)>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) linked.Add((reader.GetString(0), reader.GetString(1)));
        return linked;
    }

    /// <summary>
    /// A compartment move (MoveCompartmentAsync) changes whose rows are whose without writing versions: the
    /// caches of watched types (ConsentRules' Consents) are told at commit, as a write of them would tell them.
    /// </summary>
    public void AnnounceCompartmentMove()
    {
        foreach (var type in _store.Watched)
            if (_notified.Add(type)) Add("select pg_notify($1, $2)", FhirStore.ChangeChannel, type);
    }

    /// <summary>
    /// The persons' Patient ids the current Patients holding system|value belong to (the holder itself when it
    /// is linked to no one; the survivor for a merged-away holder), and the holders' ids.
    /// </summary>
    public async Task<List<(string Holder, string Person)>> PersonsHoldingAsync(string system, string value, CancellationToken ct)
    {
        await FlushAsync(ct);
        await using var cmd = Command(
            "select substr(t.rkey, 9), substr(coalesce(l.person_key, t.rkey), 9) from fhir.ix_token t left join fhir.person_link l on l.patient_key = t.rkey " +
            "where t.param = 'Patient.identifier' and t.system = $1 and t.code = $2 order by t.rkey", system, value);
        var found = new List<(string, string)>();
        await using var reader = await cmd.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct)) found.Add((reader.GetString(0), reader.GetString(1)));
        return found;
    }

    /// <summary>
    /// Patients a subject named by identifier resolved to in this transaction (Identity/IdentifierDomains):
    /// the MHDS "known patient" rule (Mhd/DocumentRegistry) accepts them without the requester reading them.
    /// </summary>
    public HashSet<string> ResolvedPatients { get; } = [];

    /// <summary>
    /// Patients ("Patient/id") the MHDS "known patient" rule found current and visible earlier in this transaction
    /// (Mhd/DocumentRegistry): an ITI-65's DocumentReferences name the SubmissionSet's Patient again, and
    /// nothing the transaction writes later can delete or hide it (DELETE entries run first; an update keeps its writer).
    /// </summary>
    public HashSet<string> KnownPatients { get; } = [];
}
