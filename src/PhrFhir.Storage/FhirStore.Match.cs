using System.Text.RegularExpressions;
using Npgsql;
using NpgsqlTypes;

namespace PhrFhir.Storage;

/// <summary>
/// What Patient/$match (Server/Identity/PatientMatch) looks candidates up by: blocking keys, each an
/// indexed lookup on the search index (Schema/001, 014), so the cost follows the candidates, not the
/// number of persons. Names are folded as the index folds them (Search/JapaneseText).
/// </summary>
public sealed record MatchKeys(
    IReadOnlyList<(string System, string Value)> Identifiers,
    IReadOnlyList<string> Families,
    IReadOnlyList<string> Givens,
    (DateTimeOffset Low, DateTimeOffset High)? BirthDate,
    IReadOnlyList<string> PhoneDigits)
{
    public bool IsEmpty => Identifiers.Count == 0 && (Families.Count == 0 || Givens.Count == 0) && BirthDate is null && PhoneDigits.Count == 0;
}

public sealed partial class FhirStore
{
    /// <summary>
    /// The current Patients sharing a blocking key with the input — an identifier (system and value), a
    /// family and a given name, the birth date, or a phone number's digits — that the request's
    /// <paramref name="filter"/> lets it see (null: all), at most <paramref name="limit"/>. Hidden
    /// Patients are never read, so the caller cannot tell them from no Patient at all.
    /// </summary>
    public async Task<List<StoredResource>> MatchCandidatesAsync(MatchKeys keys, AccessFilter? filter, int limit, CancellationToken ct)
    {
        await using var cmd = DataSource.CreateCommand();
        string Arg(object value, NpgsqlDbType? type = null)
        {
            var p = new NpgsqlParameter { Value = value };
            if (type is { } t) p.NpgsqlDbType = t;
            cmd.Parameters.Add(p);
            return "$" + cmd.Parameters.Count;
        }
        var blocks = new List<string>();
        if (keys.Identifiers.Count > 0)
            blocks.Add("select rkey from fhir.ix_token where param = 'Patient.identifier' and (system, code) in " +
                       $"(select * from unnest({Arg(keys.Identifiers.Select(i => i.System).ToArray())}::text[], {Arg(keys.Identifiers.Select(i => i.Value).ToArray())}::text[]))");
        if (keys.Families.Count > 0 && keys.Givens.Count > 0)
            blocks.Add($"select f.rkey from fhir.ix_string f where f.param = 'Patient.family' and f.norm = any({Arg(keys.Families.ToArray())}) " +
                       $"and exists(select 1 from fhir.ix_string g where g.rkey = f.rkey and g.param = 'Patient.given' and g.norm = any({Arg(keys.Givens.ToArray())}))");
        if (keys.BirthDate is { } birth)
            blocks.Add($"select rkey from fhir.ix_date where param = 'Patient.birthdate' and low = {Arg(birth.Low.UtcDateTime, NpgsqlDbType.TimestampTz)} " +
                       $"and high = {Arg(birth.High.UtcDateTime, NpgsqlDbType.TimestampTz)}");
        if (keys.PhoneDigits.Count > 0)
            blocks.Add($"select rkey from fhir.ix_token where param = 'Patient.phone' and regexp_replace(code, '[^0-9]', '', 'g') = any({Arg(keys.PhoneDigits.ToArray())})");
        if (blocks.Count == 0) return [];

        var visible = "";
        if (filter is not null)
        {
            visible = $" and ({filter.Render(cmd.Parameters.Count + 1)})";
            foreach (var a in filter.Args) cmd.Parameters.Add(new() { Value = a });
        }
        cmd.CommandText =
            $"with candidates(rkey) as ({string.Join(" union ", blocks)}) " +
            $"select {DocColumns} from {Docs} d join candidates c on c.rkey = d.id " +
            $"where d.resource_type = 'Patient' and not d.deleted{visible} order by d.id limit {limit}";
        return await ReadAll(cmd, ct);
    }

    [GeneratedRegex("[^0-9]")]
    private static partial Regex NotDigit();

    /// <summary>A phone number or postal code as its digits only, as Schema/014 indexes phones.</summary>
    public static string Digits(string value) => NotDigit().Replace(value.Normalize(System.Text.NormalizationForm.FormKC), "");
}
