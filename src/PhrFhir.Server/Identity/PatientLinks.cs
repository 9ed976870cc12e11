using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Audit;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Identity;

/// <summary>
/// Linking an institution's Patient to the person's own Patient (docs/identity.md, "Links"): never by
/// matching alone, always by an explicit operation —
///
/// - `POST [base]/Patient/$link` by the PHR operator, naming both Patients (`person`, and `patient` or
///   the institution's `identifier`), or by the person from their app, proving the institution's
///   number (`identifier`): the one Patient carrying it must have the person's birth date;
/// - `POST [base]/Patient/$unlink` (`patient`) by the operator, or by the person for their own links.
///
/// The link is written as FHIR says (R4 Patient.link, as PIXm reads it): the institution's Patient gets
/// `refer` → the person's Patient, which gets `seealso` → it; both are new versions in one transaction
/// with the row the access rules read (fhir.person_link), and the request's AuditEvents (one per Patient).
/// From then on the person's token covers the institution's records (AccessPolicy), and a chained search
/// by either Patient's identifier finds both Patients' documents (ITI-67 `patient.identifier`).
/// </summary>
public static class PatientLinks
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/Patient/$link", LinkAsync).WithMetadata(new FhirAccess(Interaction.Update, "Patient"));
        app.MapPost("/Patient/$unlink", UnlinkAsync).WithMetadata(new FhirAccess(Interaction.Update, "Patient"));
    }

    /// <summary>The same answer whatever the reason, so that the person's attempts tell nothing of others' records.</summary>
    static FhirError NoMatch() => FhirError.NotFound(
        "No record with this identifier matches your registration (identifier and birth date). (番号と生年月日が一致する記録がありません)");

    static async Task LinkAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, AuditTrail trail, IOptions<ServerLimits> limits,
        IOptions<LinkAttemptLimits> attempts)
    {
        var policy = await AccessPolicy.OfAsync(ctx, store);
        var input = await ParametersAsync(ctx, limits.Value);
        await using var tx = await BeginAsync(ctx, trail, policy);
        var ct = ctx.RequestAborted;

        Patient person, patient;
        long? attempt = null;
        if (policy.Role == "person")
        {
            var identifier = input.Parameter.FirstOrDefault(p => p.Name == "identifier")?.Value as Identifier;
            if (identifier is not { System.Length: > 0, Value.Length: > 0 })
                throw FhirError.BadRequest("$link needs 'identifier' (valueIdentifier with system and value): the number the institution gave you. (identifier パラメータが必要です)", "Parameters.parameter");
            attempt = await ReserveAttemptAsync(store, Key(policy.Person), attempts.Value, ct);
            person = await CurrentAsync(tx, policy.Person!, ct) ?? throw NoMatch();
            var candidates = (await store.PatientsWithIdentifierAsync(identifier.System, identifier.Value, ct)).Where(id => id != person.Id).ToList();
            if (candidates.Count != 1) throw NoMatch();
            patient = await CurrentAsync(tx, candidates[0], ct) ?? throw NoMatch();
            // The proof: the number printed on their report, and the birth date the institution recorded.
            if (string.IsNullOrEmpty(person.BirthDate) || person.BirthDate != patient.BirthDate) throw NoMatch();
            if (await tx.LinkOfAsync(Key(patient.Id), ct) is { } existing && existing.Person != Key(person.Id)) throw NoMatch();
            if (await tx.HasLinkedAsync(Key(patient.Id), ct)) throw NoMatch();
        }
        else if (policy.Role == "operator")
        {
            person = await NamedAsync(tx, input, "person", ct);
            patient = input.Parameter.Any(p => p.Name == "patient") ? await NamedAsync(tx, input, "patient", ct)
                : await IdentifiedAsync(tx, store, input, ct);
            if (person.Id == patient.Id) throw FhirError.BadRequest("'person' and 'patient' name the same Patient. (同じ患者です)", "Parameters.parameter");
            if (await tx.LinkOfAsync(Key(patient.Id), ct) is { } existing && existing.Person != Key(person.Id))
                throw FhirError.Conflict($"Patient/{patient.Id} is already linked to another person: unlink it first. (別の人に連携済みです)");
            if (await tx.HasLinkedAsync(Key(patient.Id), ct))
                throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule,
                    $"Patient/{patient.Id} is a person's own Patient with linked records: merge the two persons with Patient/$merge instead. (統合は $merge で行います)");
        }
        else throw OnlyOperatorOrPerson();

        if (await tx.LinkOfAsync(Key(person.Id), ct) is not null)
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule,
                $"Patient/{person.Id} is itself linked to another person's Patient: link to that one. (連携先の本人の患者を指定してください)");

        if (await tx.LinkOfAsync(Key(patient.Id), ct) is null)
        {
            SetLink(patient, person.Id, Patient.LinkType.Refer);
            SetLink(person, patient.Id, Patient.LinkType.Seealso);
            await writes.UpdateAsync(tx, "Patient", patient.Id!, patient, null, ct);
            await writes.UpdateAsync(tx, "Patient", person.Id!, person, null, ct);
            await tx.SetLinkAsync(Key(patient.Id), Key(person.Id), "refer", ct);
        }
        await tx.CommitAsync(ct);
        if (attempt is { } succeeded) await store.ReleaseLinkAttemptAsync(succeeded, ct);
        await FhirResponse.ResourceAsync(ctx, Answer(person.Id, patient.Id), 200);
    }

    /// <summary>
    /// Bounds the person's guessing of institutions' numbers (docs/identity.md, "Links"): every attempt counts
    /// until it succeeds; past the limit in the window, 429 with Retry-After — whatever the number, so a
    /// throttled answer tells nothing about it either. Failures and refusals are audited as every request is.
    /// </summary>
    static async Task<long> ReserveAttemptAsync(FhirStore store, string personKey, LinkAttemptLimits limits, CancellationToken ct)
    {
        var (attempt, retryAfter) = await store.ReserveLinkAttemptAsync(personKey, limits.Limit, limits.Window, ct);
        return attempt ?? throw new FhirError(HttpStatusCode.TooManyRequests, OperationOutcome.IssueType.Throttled,
            $"Too many attempts to link a record by its number: at most {limits.Limit} failed attempts in {limits.Window.TotalMinutes:0.#} minutes. " +
            $"Try again in {Math.Ceiling(retryAfter.TotalMinutes):0} minutes. (番号の入力回数が上限に達しました。しばらくしてから再度お試しください)")
        { RetryAfterSeconds = (int)Math.Ceiling(retryAfter.TotalSeconds) };
    }

    static async Task UnlinkAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, AuditTrail trail, IOptions<ServerLimits> limits)
    {
        var policy = await AccessPolicy.OfAsync(ctx, store);
        if (policy.Role is not ("operator" or "person")) throw OnlyOperatorOrPerson();
        var input = await ParametersAsync(ctx, limits.Value);
        await using var tx = await BeginAsync(ctx, trail, policy);
        var ct = ctx.RequestAborted;
        var notLinked = FhirError.NotFound("This Patient is not linked to the person. (連携されていません)");
        var reference = Key(PatientId(input, "patient"));
        var link = await tx.LinkOfAsync(reference, ct);
        // The person unlinks only their own links; anything else answers as a Patient that is not linked.
        if (link is null || policy.Role == "person" && link.Value.Person != Key(policy.Person!)) throw notLinked;
        if (link.Value.Kind == "replaced-by")
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule,
                "This Patient was merged into the person's: a merge is not undone by $unlink. (統合は $unlink で取り消せません)");
        var patient = await CurrentAsync(tx, reference[8..], ct) ?? throw notLinked;
        var person = await CurrentAsync(tx, link.Value.Person[8..], ct) ?? throw notLinked;
        patient.Link.RemoveAll(l => l.Other?.Reference == Key(person.Id));
        person.Link.RemoveAll(l => l.Other?.Reference == Key(patient.Id));
        await writes.UpdateAsync(tx, "Patient", patient.Id!, patient, null, ct);
        await writes.UpdateAsync(tx, "Patient", person.Id!, person, null, ct);
        await tx.RemoveLinkAsync(Key(patient.Id), ct);
        await tx.CommitAsync(ct);
        await FhirResponse.ResourceAsync(ctx, Answer(person.Id, patient.Id), 200);
    }

    /// <summary>
    /// The request's audited transaction. The identity operations decide who may link what themselves
    /// (above), so no per-version write rule: the Patients keep their writers, and only they write Patient.link.
    /// </summary>
    internal static async Task<WriteTransaction> BeginAsync(HttpContext ctx, AuditTrail trail, AccessPolicy policy)
    {
        var tx = await trail.BeginWriteAsync(ctx);
        tx.Writer = policy.WriterKey;
        tx.MaintainsLinks = true;
        tx.BaseUrl = FhirResponse.BaseUrl(ctx.Request);
        return tx;
    }

    internal static async Task<Parameters> ParametersAsync(HttpContext ctx, ServerLimits limits) =>
        await FhirFormat.ReadResourceAsync(ctx.Request, limits, ctx.RequestAborted) as Parameters
        ?? throw FhirError.BadRequest("The body must be a Parameters resource. (Parameters リソースを送ってください)");

    static FhirError OnlyOperatorOrPerson() => new(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
        "Records are linked by the PHR operator, or by the person themselves. (連携は運営者または本人が行います)");

    internal static string Key(string? id) => "Patient/" + id;

    internal static async Task<Patient?> CurrentAsync(WriteTransaction tx, string id, CancellationToken ct) =>
        await tx.ReadAsync("Patient", id, ct) is { Deleted: false } s ? (Patient)FhirFormat.ParseStored(s.Json) : null;

    /// <summary>A Patient the operator names by reference (it sees every Patient).</summary>
    internal static async Task<Patient> NamedAsync(WriteTransaction tx, Parameters input, string name, CancellationToken ct)
    {
        var id = PatientId(input, name);
        return await CurrentAsync(tx, id, ct) ?? throw FhirError.NotFound($"Patient/{id} is not known. (患者がいません)");
    }

    /// <summary>The id of the Patient a parameter's valueReference names ("Patient/{id}").</summary>
    internal static string PatientId(Parameters input, string name)
    {
        var reference = (input.Parameter.FirstOrDefault(p => p.Name == name)?.Value as ResourceReference)?.Reference;
        var id = reference?.StartsWith("Patient/", StringComparison.Ordinal) == true ? reference[8..] : null;
        return id is not null && ResourceWrites.IdPattern().IsMatch(id) ? id
            : throw FhirError.BadRequest($"'{name}' must be a valueReference to Patient/{{id}}. ({name} パラメータが必要です)", "Parameters.parameter");
    }

    static async Task<Patient> IdentifiedAsync(WriteTransaction tx, FhirStore store, Parameters input, CancellationToken ct)
    {
        if (input.Parameter.FirstOrDefault(p => p.Name == "identifier")?.Value is not Identifier { System.Length: > 0, Value.Length: > 0 } identifier)
            throw FhirError.BadRequest("$link needs 'patient' (valueReference) or 'identifier' (valueIdentifier) naming the institution's Patient. (patient または identifier が必要です)", "Parameters.parameter");
        var found = await store.PatientsWithIdentifierAsync(identifier.System, identifier.Value, ct);
        if (found.Count != 1) throw FhirError.NotFound($"No single Patient carries {identifier.System}|{identifier.Value}. (該当する患者が一つに定まりません)");
        return await CurrentAsync(tx, found[0], ct) ?? throw FhirError.NotFound("The Patient is not known. (患者がいません)");
    }

    internal static void SetLink(Patient on, string? otherId, Patient.LinkType type)
    {
        on.Link.RemoveAll(l => l.Other?.Reference == Key(otherId));
        on.Link.Add(new Patient.LinkComponent { Other = new ResourceReference(Key(otherId)), Type = type });
    }

    static Parameters Answer(string? person, string? patient) => new()
    {
        Parameter =
        [
            new() { Name = "person", Value = new ResourceReference(Key(person)) },
            new() { Name = "patient", Value = new ResourceReference(Key(patient)) },
        ],
    };
}

/// <summary>
/// Configuration Identity:LinkAttempts (docs/identity.md): how many $link attempts by number a person may make
/// without success within the window (Limit, default 5; Window, default 00:15:00).
/// </summary>
public sealed class LinkAttemptLimits
{
    public int Limit { get; set; } = 5;
    public TimeSpan Window { get; set; } = TimeSpan.FromMinutes(15);
}
