using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Audit;

/// <summary>
/// GET [base]/AuditEvent/$verify-chain: recomputes the audit trail's hashes and says whether it is
/// intact or where it was first changed. The AuditEvents themselves are searched like any resource
/// (ITI-81: GET [base]/AuditEvent?entity=…&date=…).
/// </summary>
public static class AuditEndpoints
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/AuditEvent/$verify-chain", VerifyAsync).WithMetadata(new FhirAccess(Interaction.Read, "AuditEvent"));

    static async Task VerifyAsync(HttpContext ctx, FhirStore store)
    {
        while (await store.SealAuditChainAsync(ctx.RequestAborted) > 0) { } // include what is not sealed yet
        var report = await store.VerifyAuditChainAsync(ctx.RequestAborted);
        var outcome = report.FirstBreak is { } broken
            ? FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Invariant,
                $"The audit trail is broken at chain position {broken.Position} ({broken.AuditEventKey}): {broken.Reason}. {report.Checked} earlier entries verified. (監査ログの改ざんを検出しました)",
                broken.AuditEventKey)
            : FhirResponse.Outcome(OperationOutcome.IssueSeverity.Information, OperationOutcome.IssueType.Informational,
                $"The audit trail is intact: {report.Checked} AuditEvents verified, {report.PendingSeal} awaiting their place in the chain. (監査ログは改ざんされていません)");
        await FhirResponse.ResourceAsync(ctx, outcome, 200);
    }
}
