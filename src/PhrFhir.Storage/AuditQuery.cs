using System.Globalization;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage;

/// <summary>
/// A search of the access log (GET /AuditEvent?…, ITI-81 style) as SQL on fhir.audit_event's own columns
/// (alias <c>d</c>), without the generic index. It supports exactly <see cref="Parameters"/> (the
/// CapabilityStatement lists these for AuditEvent); anything else is a 400 unless the request is lenient.
/// Comma-separated values are alternatives; repeated parameters must all hold (R4 search.html).
/// </summary>
public sealed class AuditQuery
{
    /// <summary>The search parameters the access log supports (R4 AuditEvent's, by code).</summary>
    public static readonly string[] Parameters = ["_id", "action", "agent", "altid", "date", "entity", "outcome", "patient", "subtype", "type"];

    static readonly string[] ResultParameters = ["_count", "_offset", "_sort", "_total", "_summary", "_elements", "_format", "_pretty"];

    readonly List<object> _args = [];
    public List<string> Where { get; } = [];
    public IReadOnlyList<object> Arguments => _args;
    public int Count { get; private set; } = SearchQuery.DefaultCount;
    public int Offset { get; private set; }
    public TotalMode Total { get; private set; }
    /// <summary>Newest first unless <c>_sort=date</c>.</summary>
    public bool Descending { get; private set; } = true;
    /// <summary>The parameters applied, for the Bundle's links.</summary>
    public List<KeyValuePair<string, string>> Applied { get; } = [];

    public AuditQuery(IEnumerable<KeyValuePair<string, string>> parameters, bool lenient)
    {
        foreach (var (name, value) in parameters)
        {
            var code = name.Split(':')[0];
            var modifier = name.Contains(':') ? name[(name.IndexOf(':') + 1)..] : null;
            if (ResultParameters.Contains(code)) { Result(code, value); continue; }
            if (!Parameters.Contains(code) || !Modifier(code, modifier))
            {
                if (lenient) continue;
                throw FhirError.BadRequest(
                    $"AuditEvent search supports {string.Join(", ", Parameters)} (and :identifier on agent); '{name}' is not supported. (この検索パラメータは未対応です)", name);
            }
            var values = value.Split(',');
            Where.Add("(" + string.Join(" or ", values.Select(v => Criterion(code, modifier, v))) + ")");
            Applied.Add(new(name, value));
        }
    }

    static bool Modifier(string code, string? modifier) =>
        modifier is null || code == "agent" && modifier == "identifier" || code is "patient" && modifier == "Patient";

    int Arg(object value)
    {
        _args.Add(value);
        return _args.Count;
    }

    string Criterion(string code, string? modifier, string value)
    {
        FhirError Bad(string why) => FhirError.BadRequest($"{code}: '{value}' {why}", code);
        switch (code)
        {
            case "_id":
                var (key, part) = FhirStore.AuditId(value); // a search's part: "{id}.{part}" (Schema/026)
                return $"(d.id = ${Arg(key)} and d.part = ${Arg(part)})";
            case "patient":
                var patient = ReferenceTarget.Local(value) is { Type: "Patient" } p ? p.Id
                    : value.Length is > 0 and <= 64 && !value.Contains('/') && !value.Contains(':') ? value
                    : throw Bad("is not a Patient reference. (Patient の参照ではありません)");
                return $"d.person = ${Arg(patient)}";
            case "entity" or "agent" when modifier is null:
                var column = code == "entity" ? "d.entity" : "d.agent";
                if (ReferenceTarget.Local(value) is { } target) return $"{column} @> array[${Arg(target.Type + "/" + target.Id)}]::text[]";
                if (value.Length is > 0 and <= 64 && !value.Contains('/') && !value.Contains(':') && !value.Contains('|'))
                    return $"exists(select 1 from unnest({column}) r where split_part(r, '/', 2) = ${Arg(value)})";
                throw Bad("is not a reference (Type/id or id). (参照の形式が不正です)");
            case "agent": // :identifier
                return $"d.agent @> array[${Arg(value)}]::text[]";
            case "altid":
                return $"d.altid @> array[${Arg(value.Contains('|') ? value[(value.IndexOf('|') + 1)..] : value)}]::text[]";
            case "type":
                return Token("d.type_system", "d.type_code", value);
            case "subtype":
                var bar = value.IndexOf('|');
                return bar < 0
                    ? $"exists(select 1 from unnest(d.subtype) s where split_part(s, '|', 2) = ${Arg(value)})"
                    : bar == value.Length - 1
                        ? $"exists(select 1 from unnest(d.subtype) s where split_part(s, '|', 1) = ${Arg(value[..bar])})"
                        : $"d.subtype @> array[${Arg(value)}]::text[]";
            case "outcome":
                return $"d.outcome = ${Arg(value)}";
            case "action":
                return $"d.action = ${Arg(value)}";
            case "date":
                var prefix = value.Length > 2 && char.IsLetter(value[0]) && char.IsLetter(value[1]) ? value[..2] : "eq";
                var date = prefix == "eq" && !value.StartsWith("eq", StringComparison.Ordinal) ? value : value[2..];
                if (!DateRange.TryParse(date, out var low, out var high)) throw Bad("is not a FHIR date, dateTime or instant. (日時の形式が不正です)");
                var (l, h) = (low.UtcDateTime, high.UtcDateTime);
                return prefix switch
                {
                    "eq" or "ap" => $"d.recorded between ${Arg(l)} and ${Arg(h)}",
                    "ne" => $"d.recorded not between ${Arg(l)} and ${Arg(h)}",
                    "ge" => $"d.recorded >= ${Arg(l)}",
                    "gt" or "sa" => $"d.recorded > ${Arg(h)}",
                    "le" => $"d.recorded <= ${Arg(h)}",
                    "lt" or "eb" => $"d.recorded < ${Arg(l)}",
                    _ => throw Bad("has an unknown prefix. (不明な接頭辞です)"),
                };
            default:
                throw Bad("is not supported.");
        }
    }

    // token: code | system|code | |code (no system) | system| (any code of the system)
    string Token(string systemColumn, string codeColumn, string value)
    {
        var bar = value.IndexOf('|');
        if (bar < 0) return $"{codeColumn} = ${Arg(value)}";
        var system = value[..bar];
        var code = value[(bar + 1)..];
        if (system.Length == 0) return $"({systemColumn} is null and {codeColumn} = ${Arg(code)})";
        if (code.Length == 0) return $"{systemColumn} = ${Arg(system)}";
        return $"({systemColumn} = ${Arg(system)} and {codeColumn} = ${Arg(code)})";
    }

    void Result(string code, string value)
    {
        switch (code)
        {
            case "_count":
                Count = SearchQuery.ParseCount(value);
                Applied.Add(new(code, Count.ToString(CultureInfo.InvariantCulture)));
                break;
            case "_offset":
                Offset = SearchQuery.ParseOffset(value);
                break;
            case "_total":
                Total = SearchQuery.ParseTotal(value);
                Applied.Add(new(code, value));
                break;
            case "_summary" or "_elements" or "_format" or "_pretty":
                // The server's concern, but paging links repeat them (R4 http.html#paging), as a resource search's do.
                Applied.Add(new(code, value));
                break;
            case "_sort":
                Descending = value switch
                {
                    "date" => false,
                    "-date" => true,
                    _ => throw FhirError.BadRequest($"AuditEvent results sort by date only (_sort=date or -date), not '{value}'. (並べ替えは date のみです)", "_sort"),
                };
                Applied.Add(new(code, value));
                break;
        }
    }
}
