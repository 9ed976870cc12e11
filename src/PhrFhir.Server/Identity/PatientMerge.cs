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
/// `POST [base]/Patient/$merge` (docs/identity.md, "Merge"), by the PHR operator only, in the shapes of FHIR
/// R5's Patient $merge: `source-patient` / `target-patient` (valueReference) or `source-patient-identifier` /
/// `target-patient-identifier` (valueIdentifier); answers Parameters with `input`, `outcome` and `result`
/// (the target). Two records of one person become one, in one transaction:
///
/// - the source gets `active` false and `link` replaced-by → the target, which gets `link` replaces → the
///   source and the source's identifiers (use old), so a search by either identifier finds the survivor;
/// - Patients linked to the source (institutions' records, earlier merges) are linked to the target;
/// - everything in the source's compartment (documents, Consents, Tasks, observations…) moves to the target's
///   (WriteTransaction.MoveCompartmentAsync): the person's token, Consents and access log follow the survivor;
/// - every Patient changed is a new version, audited with the request (one AuditEvent per Patient).
/// A merge is not undone by $unlink. R5's `preview` and `result-patient` are not supported (400).
/// </summary>
public static class PatientMerge
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/Patient/$merge", MergeAsync).WithMetadata(new FhirAccess(Interaction.Update, "Patient"));

    static async Task MergeAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, AuditTrail trail, IOptions<ServerLimits> limits)
    {
        var policy = await AccessPolicy.OfAsync(ctx, store);
        if (policy.Role != "operator")
            throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden, "Patients are merged by the PHR operator only. (統合は運営者が行います)");
        var input = await PatientLinks.ParametersAsync(ctx, limits.Value);
        foreach (var unsupported in new[] { "preview", "result-patient" })
            if (input.Parameter.Any(p => p.Name == unsupported && !(unsupported == "preview" && p.Value is FhirBoolean { Value: false })))
                throw FhirError.BadRequest($"'{unsupported}' is not supported: the server merges as documented (docs/identity.md). ({unsupported} には対応していません)", "Parameters.parameter");
        await using var tx = await PatientLinks.BeginAsync(ctx, trail, policy);
        var ct = ctx.RequestAborted;

        var source = await NamedAsync(tx, store, input, "source-patient", ct);
        var target = await NamedAsync(tx, store, input, "target-patient", ct);
        if (source.Id == target.Id) throw FhirError.BadRequest("The source and target name the same Patient. (同じ患者です)", "Parameters.parameter");
        var sourceKey = PatientLinks.Key(source.Id);
        var targetKey = PatientLinks.Key(target.Id);
        var sourceLink = await tx.LinkOfAsync(sourceKey, ct);
        if (sourceLink is { Kind: "replaced-by" })
            throw Unprocessable($"Patient/{source.Id} was already merged into {sourceLink.Value.Person}. (既に統合済みです)");
        if (await tx.LinkOfAsync(targetKey, ct) is { } targetLink)
            throw Unprocessable($"Patient/{target.Id} is linked to {targetLink.Person}: merge into the person's own Patient. (統合先は本人の患者を指定してください)");

        // The person the source was linked to (as an institution's record) no longer lists it.
        if (sourceLink is { Person: var formerPerson } && formerPerson != targetKey
            && await PatientLinks.CurrentAsync(tx, formerPerson[8..], ct) is { } former)
        {
            former.Link.RemoveAll(l => l.Other?.Reference == sourceKey);
            await writes.UpdateAsync(tx, "Patient", former.Id!, former, null, ct);
        }
        // What was linked to the source is linked to the survivor.
        foreach (var (linkedKey, kind) in await tx.LinkedToAsync(sourceKey, ct))
        {
            if (await PatientLinks.CurrentAsync(tx, linkedKey[8..], ct) is not { } linked) continue;
            linked.Link.RemoveAll(l => l.Other?.Reference == sourceKey);
            PatientLinks.SetLink(linked, target.Id, kind == "replaced-by" ? Patient.LinkType.ReplacedBy : Patient.LinkType.Refer);
            await writes.UpdateAsync(tx, "Patient", linked.Id!, linked, null, ct);
            PatientLinks.SetLink(target, linked.Id, kind == "replaced-by" ? Patient.LinkType.Replaces : Patient.LinkType.Seealso);
            await tx.SetLinkAsync(linkedKey, targetKey, kind, ct);
        }

        // The source first: once it is replaced-by, its identifiers are no collision on the survivor.
        await tx.SetLinkAsync(sourceKey, targetKey, "replaced-by", ct);
        source.Active = false;
        source.Link = [new Patient.LinkComponent { Other = new ResourceReference(targetKey), Type = Patient.LinkType.ReplacedBy }];
        await writes.UpdateAsync(tx, "Patient", source.Id!, source, null, ct);

        target.Link.RemoveAll(l => l.Other?.Reference == sourceKey);
        PatientLinks.SetLink(target, source.Id, Patient.LinkType.Replaces);
        foreach (var identifier in source.Identifier.Where(i => !string.IsNullOrEmpty(i.System) && !string.IsNullOrEmpty(i.Value)))
            if (!target.Identifier.Any(t => t.System == identifier.System && t.Value == identifier.Value))
            {
                var old = (Identifier)identifier.DeepCopy();
                old.Use = Identifier.IdentifierUse.Old;
                target.Identifier.Add(old);
            }
        await writes.UpdateAsync(tx, "Patient", target.Id!, target, null, ct);

        var moved = await tx.MoveCompartmentAsync(source.Id!, target.Id!, ct);
        tx.AnnounceCompartmentMove();
        await tx.CommitAsync(ct);

        var result = await store.ReadAsync("Patient", target.Id!, ct) is { } stored ? FhirFormat.ParseStored(stored.Json) : target;
        await FhirResponse.ResourceAsync(ctx, new Parameters
        {
            Parameter =
            [
                new() { Name = "input", Resource = input },
                new()
                {
                    Name = "outcome",
                    Resource = FhirResponse.Outcome(OperationOutcome.IssueSeverity.Information, OperationOutcome.IssueType.Informational,
                        $"Patient/{source.Id} merged into Patient/{target.Id}; {moved} resources moved to the survivor. (統合しました)"),
                },
                new() { Name = "result", Resource = result },
            ],
        }, 200);
    }

    static FhirError Unprocessable(string message) => new(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule, message);

    /// <summary>The Patient named by `{name}` (valueReference) or `{name}-identifier` (valueIdentifier, exactly one current Patient).</summary>
    static async Task<Patient> NamedAsync(WriteTransaction tx, FhirStore store, Parameters input, string name, CancellationToken ct)
    {
        if (input.Parameter.Any(p => p.Name == name)) return await PatientLinks.NamedAsync(tx, input, name, ct);
        if (input.Parameter.FirstOrDefault(p => p.Name == name + "-identifier")?.Value is not Identifier { System.Length: > 0, Value.Length: > 0 } identifier)
            throw FhirError.BadRequest($"$merge needs '{name}' (valueReference) or '{name}-identifier' (valueIdentifier with system and value). ({name} が必要です)", "Parameters.parameter");
        var found = await store.PatientsWithIdentifierAsync(identifier.System, identifier.Value, ct);
        if (found.Count != 1) throw Unprocessable($"No single Patient carries {identifier.System}|{identifier.Value} ({name}-identifier). (該当する患者が一つに定まりません)");
        return await PatientLinks.CurrentAsync(tx, found[0], ct) ?? throw FhirError.NotFound("The Patient is not known. (患者がいません)");
    }
}
