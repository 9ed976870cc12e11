using System.Net;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Identity;

/// <summary>
/// Identifier domains (docs/identity.md): every Patient.identifier.system is an assigning authority, and
/// one value in it names one person. Checked on every version of a Patient written, whatever the path
/// (REST, Bundles, conditional writes), from ResourceWrites:
///
/// - an institution (any role but the operator and the person) assigns only in its own domains: one the
///   operator registered for it (configuration Identity:Domains), JP Core's institution-specific patient
///   id system of its own institution number (`urn:oid:1.2.392.100495.20.3.51.1` + the 10 digits), or a
///   system nobody has registered yet, which becomes its domain (the first assigner);
/// - the operator assigns in any domain; the person adds no identifier but their own (an institution's
///   number reaches their record by Patient/$link, with proof);
/// - a value another current Patient holds is refused (409) naming the domain, never the other Patient;
/// - Patient.link is written by the identity operations only (PatientLinks): a client that sends none
///   keeps the current links, one that sends other links is refused.
/// Identifiers a Patient already carries are not checked again (data recorded before these rules).
/// </summary>
public sealed partial class IdentifierDomains(IHttpContextAccessor http)
{
    /// <summary>JP Core 1.1.2 IdSystem for institution-specific patient ids: this prefix, then the institution's 10-digit number.</summary>
    public const string JpCoreInstitutionPatientId = "urn:oid:1.2.392.100495.20.3.51.1";

    [GeneratedRegex(@"^urn:oid:1\.2\.392\.100495\.20\.3\.51\.1(\d{10})$")]
    private static partial Regex JpCoreSystem();

    public async Task CheckAsync(WriteTransaction tx, Resource resource, StoredResource? current, CancellationToken ct)
    {
        if (resource is not Patient patient) return;
        var before = current is { Deleted: false } ? (Patient)FhirFormat.ParseStored(current.Json) : null;
        KeepLinks(tx, patient, before);

        var user = http.HttpContext?.User;
        var role = user?.FindFirst(Security.AuthorizationServer.RoleClaim)?.Value;
        var held = (before?.Identifier ?? []).Select(Key).ToHashSet(StringComparer.Ordinal);
        var added = patient.Identifier.Select((x, i) => (System: x.System ?? "", Value: x.Value ?? "", Expression: $"Patient.identifier[{i}]"))
            .Where(a => a.System != "" && a.Value != "" && !held.Contains(a.System + "|" + a.Value))
            .ToList();
        if (added.Count == 0) return;
        if (role == "person")
            foreach (var (system, value, expression) in added)
                if (user!.FindFirst(Security.AuthorizationServer.ActorClaim)?.Value != system + "|" + value)
                    throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
                        "A person adds no identifier to their record but their own: an institution's number is linked with Patient/$link. " +
                        "(医療機関の番号は Patient/$link で連携してください)", expression);

        // One round trip for all of them (issue #12): the domains, a lock per value, the values held elsewhere.
        var checkAssigners = role is not ("person" or "operator");
        var (assigners, heldElsewhere) = await tx.IdentifierChecksAsync(ResourceDocument.Key("Patient", patient.Id!),
            [.. added.Select(a => (a.System, a.Value))], checkAssigners, ct);
        foreach (var (system, value, expression) in added)
        {
            if (checkAssigners)
                await AssignerAsync(tx, assigners.GetValueOrDefault(system), system, tx.Writer ?? "", expression, ct);
            // One value names one person.
            if (heldElsewhere.Contains((system, value)))
                throw new FhirError(HttpStatusCode.Conflict, OperationOutcome.IssueType.Duplicate,
                    $"The identifier value is already assigned to another person in the identifier domain {system}: one value names one person. " +
                    "(この識別子は同じ発番元で別の人に割り当て済みです)", expression);
        }
    }

    /// <summary>Refuses an identifier in a domain the writer does not assign in; records the first assigner of an unregistered system.</summary>
    static async Task AssignerAsync(WriteTransaction tx, string[]? assigners, string system, string writer, string expression, CancellationToken ct)
    {
        if (assigners is null && InstitutionNumberOf(system) is { } number)
        {
            if (IsInstitution(writer, number)) return;
            throw NotYourDomain(system, expression);
        }
        assigners ??= await tx.ClaimDomainAsync(system, writer, ct);
        if (!assigners.Contains(writer)) throw NotYourDomain(system, expression);
    }

    /// <summary>The institution number of JP Core's institution-specific patient id system, or null for any other system.</summary>
    internal static string? InstitutionNumberOf(string system) => JpCoreSystem().Match(system) is { Success: true } m ? m.Groups[1].Value : null;

    /// <summary>The institution with that number is the writer, whatever system its actor identifier uses.</summary>
    internal static bool IsInstitution(string writer, string number) => writer[(writer.IndexOf('|') + 1)..] == number;

    /// <summary>True when the writer assigns identifiers in this system (its registered or first-assigner domain, or JP Core's system of its number).</summary>
    internal static bool Assigns(Dictionary<string, string[]> domains, string system, string writer) =>
        domains.TryGetValue(system, out var assigners) ? assigners.Contains(writer)
        : InstitutionNumberOf(system) is { } number && IsInstitution(writer, number);

    static FhirError NotYourDomain(string system, string expression) =>
        new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
            $"Identifiers of {system} are assigned by another institution (its identifier domain): you may assign only in your own. " +
            "(この識別子の発番元ではありません)", expression);

    /// <summary>Patient.link is the identity operations' to write (docs/identity.md, "Links").</summary>
    static void KeepLinks(WriteTransaction tx, Patient patient, Patient? before)
    {
        if (tx.MaintainsLinks) return;
        var kept = before?.Link ?? [];
        if (patient.Link.Count == 0)
        {
            patient.Link = [.. kept.Select(l => (Patient.LinkComponent)l.DeepCopy())];
            return;
        }
        static string Describe(IEnumerable<Patient.LinkComponent> links) =>
            string.Join(",", links.Select(l => $"{l.Type}:{l.Other?.Reference}|{l.Other?.Identifier?.System}|{l.Other?.Identifier?.Value}").Order(StringComparer.Ordinal));
        if (Describe(patient.Link) != Describe(kept))
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule,
                "Patient.link is maintained by the server: link and unlink with Patient/$link and Patient/$unlink, merge with Patient/$merge (send the links unchanged, or none). " +
                "(Patient.link は Patient/$link で更新します)", "Patient.link");
    }

    /// <summary>
    /// The operator's registrations (configuration Identity:Domains:N:System and :Assigners:M, each an
    /// institution's actor identifier "system|value"), applied at start over whatever was recorded.
    /// </summary>
    public static async Task RegisterAsync(FhirStore store, IConfiguration configuration, CancellationToken ct)
    {
        foreach (var domain in configuration.GetSection("Identity:Domains").GetChildren())
        {
            var system = domain["System"];
            var assigners = domain.GetSection("Assigners").Get<string[]>() ?? [];
            if (string.IsNullOrWhiteSpace(system) || assigners.Length == 0 || assigners.Any(a => !a.Contains('|')))
                throw new InvalidOperationException($"Identity:Domains:{domain.Key} needs System and Assigners (actor identifiers \"system|value\").");
            await store.RegisterDomainAsync(system, assigners, ct);
        }
    }

    static string Key(Identifier identifier) => identifier.System + "|" + identifier.Value;
}
