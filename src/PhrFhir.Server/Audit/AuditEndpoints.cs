using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Audit;

/// <summary>
/// The access log, served from its own table (Storage/AuditLog.cs): search (ITI-81 style: GET
/// [base]/AuditEvent?patient=…&amp;date=…, POST _search), read, vread of the one version, create (a client
/// records an event), and GET [base]/AuditEvent/$verify-chain for the operator. AuditEvents are append-only:
/// update, patch and delete answer 405 (Rest/ResourceWrites). These routes are more specific than
/// Rest/FhirEndpoints' /{type} ones, so they win for AuditEvent.
/// </summary>
public static class AuditEndpoints
{
    /// <summary>As GET /metadata declares it on AuditEvent (OperationDefinition AuditEvent-verify-chain in profiles/phrfhir.r4).</summary>
    public static CapabilityStatement.OperationComponent VerifyChainOperation => new()
    {
        Name = "verify-chain",
        Definition = "http://phrfhir.example/fhir/OperationDefinition/AuditEvent-verify-chain",
        Documentation = "GET AuditEvent/$verify-chain: the operator checks the access log's hash chain and signed checkpoints (docs/audit.md).",
    };

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/AuditEvent/$verify-chain", VerifyAsync).WithMetadata(new FhirAccess(Interaction.Read, "AuditEvent"));
        app.MapGet("/AuditEvent", SearchAsync).WithMetadata(new FhirAccess(Interaction.Search, "AuditEvent"));
        app.MapPost("/AuditEvent/_search", SearchAsync).WithMetadata(new FhirAccess(Interaction.Search, "AuditEvent"));
        app.MapGet("/AuditEvent/{id}", ReadAsync).WithMetadata(new FhirAccess(Interaction.Read, "AuditEvent"));
        app.MapGet("/AuditEvent/{id}/_history/{vid}", VReadAsync).WithMetadata(new FhirAccess(Interaction.Read, "AuditEvent"));
        app.MapPost("/AuditEvent", CreateAsync).WithMetadata(new FhirAccess(Interaction.Create, "AuditEvent"));
    }

    static async Task SearchAsync(HttpContext ctx, FhirStore store)
    {
        var pairs = await FhirEndpoints.SearchParametersAsync(ctx);
        var lenient = ctx.Request.Headers["Prefer"].ToString().Contains("handling=lenient", StringComparison.OrdinalIgnoreCase);
        var query = new AuditQuery(pairs, lenient);
        // The same role rules as every other resource (docs/consent.md): the person sees their own log.
        var filter = await (await AccessPolicy.OfAsync(ctx, store)).FilterAsync();
        var result = await store.SearchAuditAsync(query, filter, BalpAuditEvents.ForPatient, ctx.RequestAborted);
        AuditTrail.Concerns(ctx, result.Matches.Select(m => m.Person));
        await BundleResponses.SearchsetAsync(ctx, "AuditEvent", query.Applied, query.Offset, query.Count, result);
    }

    static async Task ReadAsync(HttpContext ctx, FhirStore store, string id)
    {
        var s = await ReadVisibleAsync(ctx, store, id);
        FhirResponse.VersionHeaders(ctx.Response, s, false, "");
        if (ctx.Request.Headers.IfNoneMatch.ToString() is { Length: > 0 } inm && inm.Contains("\"1\"", StringComparison.Ordinal))
        {
            ctx.Response.StatusCode = 304;
            return;
        }
        await FhirResponse.StoredAsync(ctx, s, 200);
    }

    /// <summary>An AuditEvent has one version, ever.</summary>
    static async Task VReadAsync(HttpContext ctx, FhirStore store, string id, string vid)
    {
        var s = await ReadVisibleAsync(ctx, store, id);
        if (vid != "1") throw FhirError.NotFound($"AuditEvent/{id} has no version {vid}: AuditEvents have one version. (その版はありません)");
        FhirResponse.VersionHeaders(ctx.Response, s, false, "");
        await FhirResponse.StoredAsync(ctx, s, 200);
    }

    static async Task<StoredResource> ReadVisibleAsync(HttpContext ctx, FhirStore store, string id)
    {
        var filter = await (await AccessPolicy.OfAsync(ctx, store)).FilterAsync();
        var s = await store.ReadAuditAsync(id, filter, BalpAuditEvents.ForPatient, ctx.RequestAborted)
            ?? throw FhirError.NotFound($"AuditEvent/{id} is not known. (リソースがありません)"); // another person's: as if it did not exist
        AuditTrail.Concerns(ctx, [s.Person]);
        return s;
    }

    /// <summary>A client records an AuditEvent (IHE ITI-20 style); the server gives it its id and stores it with the request's own.</summary>
    static async Task CreateAsync(HttpContext ctx, IOptions<ServerLimits> limits)
    {
        if (await FhirFormat.ReadResourceAsync(ctx.Request, limits.Value, ctx.RequestAborted) is not AuditEvent audit)
            throw FhirError.BadRequest("The body must be an AuditEvent. (AuditEvent を送ってください)", "resourceType");
        var row = AuditTrail.Row(audit);
        await using var tx = await ctx.BeginAuditedWriteAsync();
        tx.Guard?.Invoke(null, new ResourceDocument { Id = row.Key, ResourceType = "AuditEvent", Person = row.Person, Version = 1 }, "POST");
        await tx.AppendAuditsAsync([row], ctx.RequestAborted);
        tx.Written.Add((row.Key, row.Person));
        await tx.CommitAsync(ctx.RequestAborted);
        await FhirResponse.WrittenAsync(ctx, new StoredResource("AuditEvent", row.Id, 1, row.Recorded, false, row.Json, row.Person), 201, location: true);
    }

    /// <summary>
    /// Seals what is pending, then verifies the trail (Storage/AuditChain): from the last verified point, or
    /// with <c>?full=true</c> from the start. Only the operator: it speaks of the whole system's trail.
    /// </summary>
    static async Task VerifyAsync(HttpContext ctx, FhirStore store)
    {
        if (ctx.User.FindFirst(AuthorizationServer.RoleClaim)?.Value != "operator")
            throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
                "Only the operator verifies the audit trail. (監査ログの検証は運用者のみが行えます)");
        var full = ctx.Request.Query["full"].ToString() switch
        {
            "" or "false" => false,
            "true" => true,
            var v => throw FhirError.BadRequest($"full must be true or false, not '{v}'.", "full"),
        };
        while (await store.SealAuditChainAsync(ctx.RequestAborted) > 0) { } // include what is not sealed yet
        var report = await store.VerifyAuditChainAsync(full, ctx.RequestAborted);
        var scope = report.FromPosition == 0 ? "from the start" : $"from the last verified position {report.FromPosition}";
        var outcome = report.FirstBreak is { } broken
            ? FhirResponse.Outcome(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Invariant,
                $"The audit trail is broken at chain position {broken.Position}{(broken.AuditEventKey.Length > 0 ? $" ({broken.AuditEventKey})" : "")}: {broken.Reason}. {report.Checked} entries verified {scope} before it. (監査ログの改ざんを検出しました)",
                broken.AuditEventKey.Length > 0 ? broken.AuditEventKey : null)
            : FhirResponse.Outcome(OperationOutcome.IssueSeverity.Information, OperationOutcome.IssueType.Informational,
                $"The audit trail is intact: {report.Checked} AuditEvents verified {scope}, {report.PendingSeal} awaiting their place in the chain. (監査ログは改ざんされていません)");
        await FhirResponse.ResourceAsync(ctx, outcome, 200);
    }
}
