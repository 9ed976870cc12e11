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
/// A resource that declares a profile of a family whose packages are missing is refused under
/// `reject` too (it cannot be checked, so it is never stored as if valid), and stored with a
/// warning under `warn`. Resources that declare no such profile are only parsed (the strict parser
/// already refuses what R4 itself forbids); `$validate` checks anything on request.
/// </summary>
public sealed class ProfileEnforcement(DocumentValidator validator, ILogger<ProfileEnforcement> log, IHttpContextAccessor http)
{
    // Resources already validated as part of an enclosing Bundle's profile (ITI-65 entries): not again.
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Resource, object> Validated = new();
    const string WarningsKey = "phrfhir.validation-warnings";

    public static void MarkValidated(Resource resource) => Validated.AddOrUpdate(resource, true);

    /// <summary>The issues a write stored under the `warn` policy (for <c>Prefer: return=OperationOutcome</c>).</summary>
    public static IReadOnlyList<OperationOutcome.IssueComponent> Warnings(HttpContext ctx) =>
        ctx.Items[WarningsKey] as List<OperationOutcome.IssueComponent> ?? [];

    public async Task CheckAsync(Resource resource, string where, CancellationToken ct)
    {
        if (Validated.TryGetValue(resource, out _)) return;
        var family = validator.StatusFor(resource);
        if (family.Id == DocumentFamilies.Core.Id || family.Policy == ProfilePolicy.Off) return;
        var profiles = string.Join(", ", resource.Meta?.Profile ?? []);
        if (family.State is FamilyState.Unavailable or FamilyState.Failed && family.Policy == ProfilePolicy.Reject)
            // Not the client's fault, but a 5xx would say "try again"; 422 with not-supported says what is missing.
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.NotSupported,
                $"{where} declares {profiles}, which cannot be checked here: the conformance packages of {family.Title} are not available " +
                $"({family.Reason}) Nothing was stored. (宣言されたプロファイルを検証するためのパッケージがこのサーバーにないため、保存しませんでした)", where);
        var outcome = await validator.ValidateAsync(resource, null, ct);
        var errors = outcome.Issue.Count(i => i.Severity is OperationOutcome.IssueSeverity.Error or OperationOutcome.IssueSeverity.Fatal);
        if (family.Policy == ProfilePolicy.Warn)
        {
            var notable = outcome.Issue.Where(i => i.Severity <= OperationOutcome.IssueSeverity.Warning).ToList();
            if (notable.Count == 0) return;
            log.LogWarning("{Where}: {Errors} profile validation error(s), {Count} issue(s) in all, stored under the 'warn' policy", where, errors, notable.Count);
            if (http.HttpContext is { } ctx)
            {
                var list = ctx.Items[WarningsKey] as List<OperationOutcome.IssueComponent> ?? [];
                foreach (var issue in notable)
                {
                    var copy = (OperationOutcome.IssueComponent)issue.DeepCopy();
                    copy.Severity = OperationOutcome.IssueSeverity.Warning; // stored all the same: the policy made errors warnings
                    list.Add(copy);
                }
                ctx.Items[WarningsKey] = list;
            }
            return;
        }
        if (errors == 0) return;
        throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Processing,
            $"{where} does not conform to its declared profile ({profiles}): {errors} error(s), listed below with paths inside that resource; nothing was stored. (宣言されたプロファイルに適合しません)", where)
        { MoreIssues = outcome.Issue };
    }
}
