using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Identity;

/// <summary>
/// IHE PIXm ITI-83 Mobile Patient Identifier Cross-reference Query (PIXm 3.1.0, OperationDefinition
/// IHE.PIXm.pix): `GET [base]/Patient/$ihe-pix?sourceIdentifier=system|value[&amp;targetSystem=…]` answers
/// Parameters (IHE.PIXm.Query.Parameters.Out) with the identifiers (`targetIdentifier`) and Patients
/// (`targetId`) of the same person: every Patient linked to the one carrying the source identifier
/// (Identity/PatientLinks). ITI-83 §2:3.83.4.2.3: an unknown source domain is 400, an unknown source
/// identifier 404, an unknown target domain 403.
///
/// What each requester is told (docs/identity.md, "Who sees which identifiers"): the operator every
/// domain; the person their own records; an institution (any other role) only identifiers in the domains
/// it assigns in and the person's own Patient (the PHR id). For an institution a source identifier outside
/// its domains answers as an unknown one, and a target domain it does not assign in as an unknown domain:
/// the answers never tell whether another institution knows the person.
/// </summary>
public static class PixQuery
{
    public const string OperationUrl = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix";
    const string OutProfile = "https://profiles.ihe.net/ITI/PIXm/StructureDefinition/IHE.PIXm.Query.Parameters.Out";

    public static void Map(IEndpointRouteBuilder app)
    {
        // PIXm asks for GET; a POST of Parameters (valueString sourceIdentifier, targetSystem) is the same query (R4 operations.html).
        app.MapGet("/Patient/$ihe-pix", (HttpContext ctx, FhirStore store) =>
            HandleAsync(ctx, store, ctx.Request.Query["sourceIdentifier"].ToList(), ctx.Request.Query["targetSystem"].ToList(), null))
            .WithMetadata(new FhirAccess(Interaction.Search, "Patient"));
        app.MapPost("/Patient/$ihe-pix", async (HttpContext ctx, FhirStore store, IOptions<ServerLimits> limits) =>
        {
            var input = await PatientLinks.ParametersAsync(ctx, limits.Value);
            List<string?> Strings(string name) => [.. input.Parameter.Where(p => p.Name == name).Select(p => (p.Value as FhirString)?.Value)];
            await HandleAsync(ctx, store, Strings("sourceIdentifier"), Strings("targetSystem"), FhirFormat.ToJson(input));
        }).WithMetadata(new FhirAccess(Interaction.Search, "Patient"));
    }

    /// <param name="posted">The Parameters a POST sent: the query its AuditEvent records (a GET's is its query string).</param>
    static async Task HandleAsync(HttpContext ctx, FhirStore store, List<string?> sources, List<string?> targetSystems, string? posted)
    {
        var ct = ctx.RequestAborted;
        var policy = await AccessPolicy.OfAsync(ctx, store);
        if (sources.Count != 1 || sources[0] is not { } source || source.IndexOf('|') is var bar && (bar <= 0 || bar == source.Length - 1))
            throw FhirError.BadRequest("sourceIdentifier is required once, as system|value (PIXm ITI-83). (sourceIdentifier は system|value で一つ指定します)", "sourceIdentifier");
        var (system, value) = (source[..bar], source[(bar + 1)..]);
        Audit.AuditTrail.Queried(ctx, posted, new Identifier(system, value)); // PIXm ITI-83 audit: the patient as queried
        var targets = targetSystems.SelectMany(t => (t ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)).ToHashSet(StringComparer.Ordinal);

        var domains = await store.IdentifierDomainsAsync(ct);
        bool Known(string s) => domains.ContainsKey(s) || IdentifierDomains.InstitutionNumberOf(s) is not null;
        bool Sees(string s) => policy.Role is "operator" or "person" || IdentifierDomains.Assigns(domains, s, policy.WriterKey);

        if (!Known(system))
            throw FhirError.BadRequest("sourceIdentifier Assigning Authority not found (この発番元は登録されていません)", "sourceIdentifier");
        foreach (var target in targets)
            if (!Known(target) || !Sees(target))
                throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.NotFound, $"targetSystem not found: {target} (この発番元は照会できません)", "targetSystem");

        var holders = Sees(system) ? await store.PatientsWithIdentifierAsync(system, value, ct) : [];
        var keys = await store.SamePersonKeysAsync([.. holders.Select(PatientLinks.Key)], ct);
        // The person asks about their own records only.
        if (policy.Role == "person")
        {
            var mine = (await store.PersonPatientsAsync(policy.Person!, ct)).Select(PatientLinks.Key).ToHashSet();
            if (!keys.All(mine.Contains)) keys = [];
        }
        if (holders.Count == 0 || keys.Count == 0)
            throw FhirError.NotFound("sourceIdentifier Patient Identifier not found (この識別子の患者はいません)");

        var patients = new List<(string Id, Patient Patient, string? Person)>();
        foreach (var key in keys)
            if (await store.ReadAsync("Patient", key[8..], ct) is { Deleted: false } s)
                patients.Add((s.Id, (Patient)FhirFormat.ParseStored(s.Json), s.Person));
        Audit.AuditTrail.Concerns(ctx, patients.Select(p => p.Person));
        // The person's own Patient (the PHR id): the one not linked onwards to another (links are the server's own).
        var phrIds = patients.Where(p => !p.Patient.Link.Any(l => l.Type is Patient.LinkType.Refer or Patient.LinkType.ReplacedBy)).Select(p => p.Id).ToHashSet();

        var answer = new Parameters { Meta = new Meta { Profile = [OutProfile] } };
        foreach (var (id, patient, _) in patients.OrderBy(p => p.Id, StringComparer.Ordinal))
        {
            if (holders.Contains(id)) continue; // the source itself is not cross-referenced to itself
            var identifiers = patient.Identifier
                .Where(i => !string.IsNullOrEmpty(i.System) && !string.IsNullOrEmpty(i.Value) && Sees(i.System) && (targets.Count == 0 || targets.Contains(i.System)))
                .ToList();
            var isPhrId = phrIds.Contains(id) && targets.Count == 0;
            if (identifiers.Count == 0 && !isPhrId) continue;
            answer.Parameter.Add(new() { Name = "targetId", Value = new ResourceReference("Patient/" + id) });
            foreach (var identifier in identifiers)
                answer.Parameter.Add(new() { Name = "targetIdentifier", Value = new Identifier(identifier.System, identifier.Value) });
        }
        await FhirResponse.ResourceAsync(ctx, answer, 200);
    }
}
