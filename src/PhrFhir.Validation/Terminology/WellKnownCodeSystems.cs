using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Fhir.Metrics;
using Hl7.Fhir.Model;
using Hl7.Fhir.Specification.Source;
using Hl7.Fhir.Specification.Terminology;

namespace PhrFhir.Validation.Terminology;

/// <summary>
/// Answers <c>$validate-code</c> for value sets that are a whole grammar-defined code system — MIME types
/// (<c>urn:ietf:bcp:13</c>), languages (<c>urn:ietf:bcp:47</c>) and UCUM units — which no package can
/// enumerate, so <see cref="LocalTerminologyService"/> cannot expand them and used to report the code as
/// unchecked. Every other question goes to the inner service (R4 core code systems are expanded from
/// <c>specification.zip</c> there).
/// </summary>
/// <remarks>
/// The checks: a MIME type parses as a media type (RFC 2045/6838 syntax, parameters allowed, as R4's
/// <c>Attachment.contentType</c> examples carry <c>; charset=</c>) with a registered top-level type
/// (IANA media-types registry); a language tag is well-formed per RFC 5646 §2.1 (the ABNF, not the subtag
/// registry); a UCUM unit is one Fhir.Metrics (Firely's UCUM library, already used by the SDK) can parse.
/// </remarks>
internal sealed partial class WellKnownCodeSystems(ICodeValidationTerminologyService inner, IAsyncResourceResolver resolver) : ICodeValidationTerminologyService
{
    public const string MimeTypes = "urn:ietf:bcp:13";
    public const string Languages = "urn:ietf:bcp:47";
    public const string Ucum = "http://unitsofmeasure.org";

    // IANA "Media Types" registry top-level types (RFC 6838 §4.2.7 and later registrations).
    private static readonly HashSet<string> TopLevelTypes = new(StringComparer.OrdinalIgnoreCase)
    {
        "application", "audio", "example", "font", "haptics", "image", "message", "model", "multipart", "text", "video",
    };

    public async Task<Parameters> ValueSetValidateCode(Parameters parameters, string? id = null, bool useGet = false)
    {
        var url = parameters.Parameter.FirstOrDefault(p => p.Name == "url")?.Value?.ToString();
        var system = url is null ? null : await WholeSystemAsync(url).ConfigureAwait(false);
        if (system is null) return await inner.ValueSetValidateCode(parameters, id, useGet).ConfigureAwait(false);

        var codings = Codings(parameters).ToList();
        if (codings.Count == 0) return await inner.ValueSetValidateCode(parameters, id, useGet).ConfigureAwait(false);
        foreach (var (codeSystem, code) in codings)
            if ((codeSystem is null || codeSystem == system) && code is not null && IsValid(system, code))
                return Result(true, null);
        var (s, c) = codings[0];
        return Result(false, s is not null && s != system
            ? $"The code system '{s}' of code '{c}' is not the one value set '{url}' contains ('{system}')"
            : $"'{c}' is not a valid code of '{system}' ({Describe(system)}), so it is not in value set '{url}'");
    }

    public Task<Parameters> Subsumes(Parameters parameters, string? id = null, bool useGet = false) => inner.Subsumes(parameters, id, useGet);

    /// <summary>Whether a code is valid in a grammar-defined system this class knows.</summary>
    public static bool IsValid(string system, string code) => system switch
    {
        MimeTypes => MediaTypeHeaderValue.TryParse(code, out var media) && media.MediaType is { } type
            && type.Split('/') is [var top, { Length: > 0 }] && TopLevelTypes.Contains(top),
        Languages => LanguageTagRegex().IsMatch(code),
        Ucum => IsUcumUnit(code),
        _ => false,
    };

    public static bool Knows(string? system) => system is MimeTypes or Languages or Ucum;

    private static string Describe(string system) => system switch
    {
        MimeTypes => "a MIME type, RFC 6838",
        Languages => "a language tag, BCP 47 / RFC 5646",
        _ => "a UCUM unit",
    };

    private static bool IsUcumUnit(string code)
    {
        try { return FhirMetricService.Instance.Value.TryCanonicalize(("1", code, Ucum), out _); }
        catch (Exception) { return false; } // the parser throws on some malformed input instead of answering false
    }

    /// <summary>The one well-known system a value set consists of entirely (one include, the whole system, no filter), else null.</summary>
    private async Task<string?> WholeSystemAsync(string url)
    {
        if (await resolver.FindValueSetAsync(url).ConfigureAwait(false) is not { Compose: { } compose }) return null;
        if (compose.Exclude.Count > 0 || compose.Include.Count != 1) return null;
        var include = compose.Include[0];
        return include.Concept.Count == 0 && include.Filter.Count == 0 && !include.ValueSet.Any() && Knows(include.System) ? include.System : null;
    }

    private static IEnumerable<(string? System, string? Code)> Codings(Parameters parameters)
    {
        foreach (var p in parameters.Parameter)
        {
            switch (p.Name, p.Value)
            {
                case ("code", { } code):
                    yield return (parameters.Parameter.FirstOrDefault(x => x.Name == "system")?.Value?.ToString(), code.ToString());
                    break;
                case ("coding", Coding coding):
                    yield return (coding.System, coding.Code);
                    break;
                case ("codeableConcept", CodeableConcept concept):
                    foreach (var coding in concept.Coding) yield return (coding.System, coding.Code);
                    break;
            }
        }
    }

    private static Parameters Result(bool valid, string? message)
    {
        var result = new Parameters();
        result.Add("result", new FhirBoolean(valid));
        if (message is not null) result.Add("message", new FhirString(message));
        return result;
    }

    // RFC 5646 §2.1 Language-Tag = langtag / privateuse / grandfathered (irregular and regular grandfathered tags listed).
    [GeneratedRegex(@"^(?:(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4}|[A-Za-z]{5,8})(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*(?:-[Xx](?:-[A-Za-z0-9]{1,8})+)?|[Xx](?:-[A-Za-z0-9]{1,8})+|en-GB-oed|i-(?:ami|bnn|default|enochian|hak|klingon|lux|mingo|navajo|pwn|tao|tay|tsu)|sgn-(?:BE-FR|BE-NL|CH-DE)|art-lojban|cel-gaulish|no-bok|no-nyn|zh-(?:guoyu|hakka|min|min-nan|xiang))$")]
    private static partial Regex LanguageTagRegex();
}
