using System.Net;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Storage;
using PhrFhir.Validation;

namespace PhrFhir.Server.Validation;

/// <summary>
/// Validation on write: a resource that declares a profile of a loaded family (HS037 eCheckup,
/// HS038/HS039 CLINS, IHE MHD) is validated against it, and refused (422 with the explained
/// OperationOutcome, nothing stored) when its family's policy is `reject` and there are errors.
/// Resources that declare no such profile are only parsed (the strict parser already refuses what
/// R4 itself forbids); `$validate` checks anything on request.
/// </summary>
public sealed class ProfileEnforcement(DocumentValidator validator, ILogger<ProfileEnforcement> log)
{
    // Resources already validated as part of an enclosing Bundle's profile (ITI-65 entries): not again.
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Resource, object> Validated = new();

    public static void MarkValidated(Resource resource) => Validated.AddOrUpdate(resource, true);

    public async Task CheckAsync(Resource resource, string where, CancellationToken ct)
    {
        if (Validated.TryGetValue(resource, out _)) return;
        if (validator.FamilyFor(resource).Id == DocumentFamilies.Core.Id) return;
        var policy = validator.PolicyFor(resource);
        if (policy == ProfilePolicy.Off) return;
        var outcome = await validator.ValidateAsync(resource, null, ct);
        var errors = outcome.Issue.Count(i => i.Severity is OperationOutcome.IssueSeverity.Error or OperationOutcome.IssueSeverity.Fatal);
        if (errors == 0) return;
        if (policy == ProfilePolicy.Warn)
        {
            log.LogWarning("{Where}: {Errors} profile validation error(s), stored under the 'warn' policy", where, errors);
            return;
        }
        var profiles = string.Join(", ", resource.Meta?.Profile ?? []);
        throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Processing,
            $"{where} does not conform to its declared profile ({profiles}): {errors} error(s), listed below with paths inside that resource; nothing was stored. (宣言されたプロファイルに適合しません)", where)
        { MoreIssues = outcome.Issue };
    }
}
