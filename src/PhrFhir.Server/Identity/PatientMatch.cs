using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Identity;

/// <summary>
/// IHE PDQm ITI-119 Patient Demographics Match (PDQm 3.2.0, OperationDefinition PDQmMatch, R4
/// Patient-match): `POST [base]/Patient/$match` with Parameters (`resource` a Patient, `onlyCertainMatches`,
/// `count`) or the Patient alone answers a searchset Bundle (IHE.PDQm.MatchParametersOut) of scored
/// candidates, best first: `search.mode` match, `search.score` 0..1 and the match-grade extension.
///
/// Candidates come from blocking keys on the search index (FhirStore.MatchCandidatesAsync: identifier,
/// folded family + given, birth date, phone), confined in SQL by the request's access filter: an
/// institution is offered only Patients it may read (those it registered, those a Consent shows it), the
/// person their own, the operator all. A hidden Patient is never read, so "no match" and "hidden" are the
/// same empty Bundle (no existence oracle). Scores: <see cref="MatchScore"/>.
/// </summary>
public static class PatientMatch
{
    public const string OperationUrl = "https://profiles.ihe.net/ITI/PDQm/OperationDefinition/PDQmMatch";
    const string OutProfile = "https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.MatchParametersOut";
    const string MatchGradeUrl = "http://hl7.org/fhir/StructureDefinition/match-grade";

    /// <summary>The server's choice when `count` is absent (R4 Patient-match: "the server decides"), and its ceiling.</summary>
    const int DefaultCount = 10, MaxCount = 100;

    /// <summary>Candidates scored at most: blocking keys keep the set small; a bound keeps a degenerate input (a common birth date) cheap.</summary>
    const int CandidateLimit = 500;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/Patient/$match", HandleAsync).WithMetadata(new FhirAccess(Interaction.Search, "Patient"));

    static async Task HandleAsync(HttpContext ctx, FhirStore store, IOptions<ServerLimits> limits)
    {
        var ct = ctx.RequestAborted;
        var policy = await AccessPolicy.OfAsync(ctx, store);
        var posted = await FhirFormat.ReadResourceAsync(ctx.Request, limits.Value, ct);
        Audit.AuditTrail.Queried(ctx, FhirFormat.ToJson(posted)); // PDQm ITI-119 audit: the query is the Parameters sent
        var (input, onlyCertain, count) = Read(posted);
        var subject = new MatchScore.Demographics(input);
        if (subject.Keys.IsEmpty)
            throw FhirError.BadRequest(
                "The Patient to match needs an identifier, a phone number, a birth date, or a family and a given name. " +
                "(照合には識別子・電話番号・生年月日、または姓と名が必要です)", "Parameters.parameter[resource]");

        var candidates = await store.MatchCandidatesAsync(subject.Keys, await policy.FilterAsync(), CandidateLimit, ct);
        var scored = candidates
            .Select(c => (Stored: c, Patient: (Patient)FhirFormat.ParseStored(c.Json)))
            .Select(c => (c.Stored, c.Patient, Score: MatchScore.Of(subject, new MatchScore.Demographics(c.Patient))))
            .Where(c => c.Score.Grade is not null)
            .OrderByDescending(c => c.Score.Value).ThenBy(c => c.Stored.Id, StringComparer.Ordinal)
            .ToList();
        // R4 Patient-match: with onlyCertainMatches, several potential matches are not returned; one certain match is.
        if (onlyCertain) scored = scored.Count(c => c.Score.Grade == "certain") == 1 ? [.. scored.Where(c => c.Score.Grade == "certain")] : [];
        scored = [.. scored.Take(count)];
        Audit.AuditTrail.Concerns(ctx, scored.Select(c => c.Stored.Person));

        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var bundle = new Bundle
        {
            Meta = new Meta { Profile = [OutProfile] },
            Type = Bundle.BundleType.Searchset,
            Total = scored.Count,
            Link = [new Bundle.LinkComponent { Relation = "self", Url = baseUrl + "/Patient/$match" }],
            Entry = [.. scored.Select(c => new Bundle.EntryComponent
            {
                FullUrl = $"{baseUrl}/Patient/{c.Stored.Id}",
                Resource = c.Patient,
                Search = new Bundle.SearchComponent
                {
                    Mode = Bundle.SearchEntryMode.Match,
                    Score = c.Score.Value,
                    Extension = [new Extension(MatchGradeUrl, new Code(c.Score.Grade))],
                },
            })],
        };
        await FhirResponse.ResourceAsync(ctx, bundle, 200);
    }

    /// <summary>PDQm MatchParametersIn (resource 1..1, onlyCertainMatches 0..1, count 0..1, nothing else), or the Patient posted alone.</summary>
    static (Patient Input, bool OnlyCertain, int Count) Read(Resource body)
    {
        if (body is Patient alone) return (alone, false, DefaultCount);
        if (body is not Parameters parameters)
            throw FhirError.BadRequest("Post a Parameters resource (resource, onlyCertainMatches, count) or a Patient to Patient/$match. (Parameters または Patient を送ってください)");
        foreach (var (p, i) in parameters.Parameter.Select((p, i) => (p, i)))
            if (p.Name is not ("resource" or "onlyCertainMatches" or "count") || parameters.Parameter.Count(q => q.Name == p.Name) > 1)
                throw FhirError.BadRequest($"Parameter '{p.Name}' is not one of $match's (resource, onlyCertainMatches, count, each once). ($match のパラメータではありません)", $"Parameters.parameter[{i}]");
        var input = parameters.Parameter.FirstOrDefault(p => p.Name == "resource")?.Resource as Patient
            ?? throw FhirError.BadRequest("$match needs 'resource', the Patient to match. (resource パラメータに照合する Patient が必要です)", "Parameters.parameter[resource]");
        var onlyCertain = parameters.Parameter.FirstOrDefault(p => p.Name == "onlyCertainMatches") is not { } only ? false
            : only.Value is FhirBoolean { Value: { } b } ? b
            : throw FhirError.BadRequest("'onlyCertainMatches' is a valueBoolean. (onlyCertainMatches は真偽値です)", "Parameters.parameter[onlyCertainMatches]");
        var count = parameters.Parameter.FirstOrDefault(p => p.Name == "count") is not { } c ? DefaultCount
            : c.Value is Integer { Value: { } n } && n >= 1 ? Math.Min(n, MaxCount)
            : throw FhirError.BadRequest("'count' is a valueInteger of at least 1. (count は1以上の整数です)", "Parameters.parameter[count]");
        return (input, onlyCertain, count);
    }
}

/// <summary>
/// How alike two Patients' demographics are (the $match score), a weighted agreement in the manner of
/// Fellegi–Sunter: each field both carry adds its weight when it agrees and, for fields that tell persons
/// apart, subtracts when it disagrees. Names agree when a folded family (or given) name is common — kanji
/// or kana, full or half width, hiragana or katakana (JapaneseText, as PDQm ITI-78 folds) — so 斉藤 and
/// 斎藤 agree through their reading さいとう.
///
/// Grades (R4 match-grade): `certain` only with a shared identifier and nothing disagreeing — demographics
/// alone never make a person certain; `probable` ≥ 0.7 (name, birth date and sex agree); `possible` ≥ 0.4;
/// a candidate holding another value in one of the input's identifier domains is `certainly-not` (one value
/// names one person), returned last with score 0 when its demographics alone would be possible. Below
/// possible a candidate is not returned.
/// </summary>
public static class MatchScore
{
    const decimal Identifier = 0.5m, Family = 0.2m, Given = 0.2m, BirthDate = 0.3m, NearBirthDate = 0.1m,
        Sex = 0.05m, SexDiffers = -0.15m, Phone = 0.15m, PostalCode = 0.05m;

    public sealed record Result(decimal Value, string? Grade);

    /// <summary>The fields compared, normalised once per Patient.</summary>
    public sealed class Demographics
    {
        public HashSet<(string System, string Value)> Identifiers { get; }
        public HashSet<string> Families { get; } = [];
        public HashSet<string> Givens { get; } = [];
        public string? BirthDate { get; }
        public AdministrativeGender? Gender { get; }
        public HashSet<string> Phones { get; }
        public HashSet<string> PostalCodes { get; }
        public MatchKeys Keys { get; }

        public Demographics(Patient p)
        {
            Identifiers = [.. p.Identifier.Where(i => !string.IsNullOrEmpty(i.System) && !string.IsNullOrEmpty(i.Value)).Select(i => (i.System!, i.Value!))];
            foreach (var name in p.Name)
            {
                var family = name.Family;
                var given = name.Given.ToList();
                // A name given only as text ("山田 太郎", "ヤマダ タロウ"): family first, as Japanese names are written.
                if (string.IsNullOrWhiteSpace(family) && given.Count == 0 && name.Text is { } text)
                {
                    var parts = JapaneseText.Fold(text).Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (parts.Length >= 2) (family, given) = (parts[0], [.. parts[1..]]);
                }
                if (!string.IsNullOrWhiteSpace(family)) Families.Add(JapaneseText.Fold(family));
                foreach (var g in given) if (!string.IsNullOrWhiteSpace(g)) Givens.Add(JapaneseText.Fold(g));
            }
            BirthDate = p.BirthDate is { Length: >= 10 } b ? b[..10] : null;
            Gender = p.Gender;
            Phones = [.. p.Telecom.Where(t => t.System == ContactPoint.ContactPointSystem.Phone)
                .Select(t => FhirStore.Digits(t.Value ?? "")).Where(d => d.Length >= 6)];
            PostalCodes = [.. p.Address.Select(a => FhirStore.Digits(a.PostalCode ?? "")).Where(d => d.Length > 0)];
            Keys = new MatchKeys([.. Identifiers], [.. Families], [.. Givens],
                BirthDate is not null && DateRange.TryParse(BirthDate, out var low, out var high) ? (low, high) : null, [.. Phones]);
        }
    }

    public static Result Of(Demographics input, Demographics candidate)
    {
        var score = 0m;
        var sharedIdentifier = input.Identifiers.Overlaps(candidate.Identifiers);
        var otherValueInDomain = input.Identifiers.Any(i => candidate.Identifiers.Any(c => c.System == i.System && c.Value != i.Value)
                                                            && !candidate.Identifiers.Contains(i));
        var disagrees = false;
        if (sharedIdentifier) score += Identifier;
        if (input.Families.Overlaps(candidate.Families)) score += Family;
        if (input.Givens.Overlaps(candidate.Givens)) score += Given;
        if (input.BirthDate is { } b && candidate.BirthDate is { } c)
        {
            if (b == c) score += BirthDate;
            else if (NearMiss(b, c)) score += NearBirthDate;
            else { score -= BirthDate; disagrees = true; }
        }
        if (input.Gender is { } g && candidate.Gender is { } h && g != AdministrativeGender.Unknown && h != AdministrativeGender.Unknown)
        {
            if (g == h) score += Sex;
            else { score += SexDiffers; disagrees = true; }
        }
        if (input.Phones.Overlaps(candidate.Phones)) score += Phone;
        if (input.PostalCodes.Overlaps(candidate.PostalCodes)) score += PostalCode;
        score = Math.Clamp(score, 0m, 1m);

        if (otherValueInDomain) return new(0m, score >= 0.4m ? "certainly-not" : null);
        if (sharedIdentifier && !disagrees && score >= 0.9m) return new(score, "certain");
        // Without a shared identifier the score stays below certain's band.
        if (!sharedIdentifier) score = Math.Min(score, 0.89m);
        return new(score, score >= 0.7m ? "probable" : score >= 0.4m ? "possible" : null);
    }

    /// <summary>A birth date one typing slip away: one of year, month and day differs, or month and day are swapped.</summary>
    static bool NearMiss(string a, string b)
    {
        if (a.Length != 10 || b.Length != 10) return false;
        var (ay, am, ad) = (a[..4], a[5..7], a[8..10]);
        var (by, bm, bd) = (b[..4], b[5..7], b[8..10]);
        var differing = (ay != by ? 1 : 0) + (am != bm ? 1 : 0) + (ad != bd ? 1 : 0);
        return differing == 1 || ay == by && am == bd && ad == bm;
    }
}
