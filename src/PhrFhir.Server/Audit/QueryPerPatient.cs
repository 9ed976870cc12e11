using System.Text;
using Microsoft.AspNetCore.Http.Features;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Audit;

/// <summary>
/// The query entity of a search's AuditEvents (BALP PatientQuery: one AuditEvent per patient). A patient's
/// event is in that patient's access log, so it keeps only what concerns them: every parameter value that
/// names a patient (a Patient reference or id, a patient identifier, a Patient search's demographics) is kept
/// only in the event of the patient it names. When that removed anything, the whole query goes into one more
/// event outside every compartment (no patient), which only the operator reads (docs/audit.md).
/// </summary>
public sealed class QueryPerPatient
{
    /// <summary>One value of one search parameter, and whether and whom it names.</summary>
    sealed record Part(bool Form, string Name, string Value, bool NamesPatient, string? Patient);

    readonly string _head;
    readonly List<Part> _parts;

    QueryPerPatient(string head, List<Part> parts)
    {
        _head = head;
        _parts = parts;
    }

    /// <summary>The patients found by the identifiers the search names (a search that found nothing still concerns them).</summary>
    public List<string> Identified { get; } = [];

    /// <summary>True when a patient's event leaves out part of the query (so the whole query is recorded apart).</summary>
    public bool Reduces(string patient) => _parts.Any(x => x.NamesPatient && x.Patient != patient);

    /// <summary>The query as it concerns <paramref name="patient"/>: the parts naming no one, and those naming them.</summary>
    public string For(string patient)
    {
        var kept = _parts.Where(p => !p.NamesPatient || p.Patient == patient).ToList();
        // The values of one parameter that survive are joined again as one comma list, in their order.
        string Render(bool form) => string.Join('&', kept.Where(p => p.Form == form)
            .GroupBy(p => p.Name, StringComparer.Ordinal)
            .Select(g => Uri.EscapeDataString(g.Key) + "=" + string.Join(',', g.Select(p => Uri.EscapeDataString(p.Value)))));
        var text = new StringBuilder(_head);
        var query = Render(false);
        if (query.Length > 0) text.Append('?').Append(query);
        if (kept.Any(p => p.Form)) text.Append('\n').Append(Render(true));
        return text.ToString();
    }

    /// <summary>
    /// Reads a search request's parameters and finds whom each value names. A patient identifier is looked
    /// up (bounded by <paramref name="maxLookups"/>) only when several patients are concerned or none is: with
    /// exactly one, a single value that the search satisfied names that patient.
    /// </summary>
    public static async Task<QueryPerPatient> ReadAsync(HttpContext ctx, FhirStore store, IReadOnlyCollection<string> concerned, int maxLookups)
    {
        var request = ctx.Request;
        var type = ctx.GetRouteValue("type") as string;
        var pairs = request.Query.SelectMany(kv => kv.Value.Select(v => (Form: false, kv.Key, Value: v ?? "")));
        if (request.HasFormContentType && ctx.Features.Get<IFormFeature>()?.Form is { } form)
            pairs = pairs.Concat(form.SelectMany(kv => kv.Value.Select(v => (Form: true, kv.Key, Value: v ?? ""))));
        var sole = concerned.Count == 1 ? concerned.First() : null;
        var lookups = 0;
        var identified = new List<string>();
        var parts = new List<Part>();
        foreach (var (isForm, name, value) in pairs)
        {
            var kind = Kind(type, name);
            var values = kind == Naming.None && !value.Contains("Patient/", StringComparison.Ordinal) ? [value] : value.Split(',');
            foreach (var one in values)
            {
                string? patient = ReferenceTarget.Local(one) is { Type: "Patient" } target ? target.Id : null;
                if (patient is null && kind != Naming.None && values.Length == 1 && sole is not null) patient = sole;
                else if (patient is null && kind == Naming.Id && one.Length is > 0 and <= 64 && !one.Contains(':') && !one.Contains('/')) patient = one;
                else if (patient is null && kind == Naming.Identifier && one.Contains('|') && lookups++ < maxLookups
                    && await PersonCompartment.PatientWithIdentifierAsync(store, one, ctx.RequestAborted) is { } found)
                    identified.Add(patient = found);
                parts.Add(new Part(isForm, name, one, kind != Naming.None || patient is not null, patient));
            }
        }
        var result = new QueryPerPatient($"{request.Method} {request.Path}", parts);
        result.Identified.AddRange(identified.Distinct(StringComparer.Ordinal));
        return result;
    }

    enum Naming { None, Id, Identifier, Demographic }

    // Result parameters never name anyone; a Patient search's own parameters all describe patients.
    static readonly string[] ResultParameters = ["_count", "_offset", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_format", "_pretty"];

    static Naming Kind(string? type, string name)
    {
        var chain = name.Split('.');
        var code = chain[0].Split(':')[0];
        if (ResultParameters.Contains(code)) return Naming.None;
        var last = chain.Length > 1 ? chain[^1].Split(':')[0] : null;
        if (code is "patient" or "subject")
            return last is null ? Naming.Id : last == "identifier" ? Naming.Identifier : Naming.Demographic;
        if (type != "Patient") return Naming.None;
        return code switch { "_id" => Naming.Id, "identifier" => Naming.Identifier, _ => Naming.Demographic };
    }
}
