using System.Net;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Server.Security;
using PhrFhir.Validation;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Validation;

/// <summary>
/// $validate (R4 resource-operation-validate): POST [base]/$validate, POST [base]/[type]/$validate,
/// GET|POST [base]/[type]/[id]/$validate. The body is the resource, or Parameters with `resource`,
/// `profile` and `mode`. Always 200 with the OperationOutcome when the request itself is sound; a body
/// the strict parser rejects is still validated as far as it could be read, with the parse errors.
/// </summary>
public static class ValidateOperation
{
    /// <summary>As GET /metadata declares it: on every type, and at system level (rest.operation) for POST [base]/$validate.</summary>
    public static CapabilityStatement.OperationComponent Operation => new()
    {
        Name = "validate",
        Definition = "http://hl7.org/fhir/OperationDefinition/Resource-validate",
        Documentation = "POST [base]/$validate, POST [type]/$validate, GET|POST [type]/{id}/$validate: an OperationOutcome (docs/validation.md).",
    };

    public static void Map(IEndpointRouteBuilder app)
    {
        // Validating a posted resource touches no stored data: any authenticated client may.
        app.MapPost("/$validate", (HttpContext ctx, DocumentValidator v, IOptions<ServerLimits> l) => PostAsync(ctx, v, l.Value, null)).WithMetadata(new FhirAccess(null));
        app.MapPost("/{type}/$validate", (HttpContext ctx, DocumentValidator v, IOptions<ServerLimits> l, string type) => PostAsync(ctx, v, l.Value, type)).WithMetadata(new FhirAccess(null));
        app.MapPost("/{type}/{id}/$validate", (HttpContext ctx, DocumentValidator v, IOptions<ServerLimits> l, string type) => PostAsync(ctx, v, l.Value, type)).WithMetadata(new FhirAccess(null));
        app.MapGet("/{type}/{id}/$validate", StoredAsync).WithMetadata(new FhirAccess(Interaction.Read));
    }

    static async Task PostAsync(HttpContext ctx, DocumentValidator validator, ServerLimits limits, string? type)
    {
        var profile = ctx.Request.Query["profile"].FirstOrDefault();
        var mode = ctx.Request.Query["mode"].FirstOrDefault();
        OperationOutcome outcome;
        try
        {
            var body = await FhirFormat.ReadResourceAsync(ctx.Request, limits, ctx.RequestAborted);
            var resource = body;
            if (body is Parameters p && type != "Parameters")
            {
                resource = p.GetSingle("resource")?.Resource
                    ?? throw FhirError.BadRequest("The Parameters of $validate need a 'resource' part. (resource パラメータがありません)", "Parameters.parameter");
                profile = (p.GetSingleValue<FhirUri>("profile")?.Value ?? p.GetSingleValue<Canonical>("profile")?.Value) ?? profile;
                mode = p.GetSingleValue<Code>("mode")?.Value ?? mode;
            }
            CheckMode(mode);
            if (type is not null && resource.TypeName != type)
                throw FhirError.BadRequest($"The resource is a {resource.TypeName} but the URL validates {type}. (URL と本文のリソース型が一致しません)", "resourceType");
            outcome = await validator.ValidateAsync(resource, profile, ctx.RequestAborted);
        }
        catch (FhirError e) when (e.InnerException is DeserializationFailedException parse)
        {
            outcome = await validator.ValidatePartialAsync(parse, profile, ctx.RequestAborted);
        }
        await RespondAsync(ctx, outcome);
    }

    static async Task StoredAsync(HttpContext ctx, DocumentValidator validator, FhirStore store, string type, string id)
    {
        CheckMode(ctx.Request.Query["mode"].FirstOrDefault());
        var s = await store.ReadAsync(type, id, ctx.RequestAborted);
        if (s is null || s.Deleted) throw FhirError.NotFound($"{type}/{id} is not known. (リソースがありません)");
        await (await AccessPolicy.OfAsync(ctx, store)).CheckReadAsync(s);
        var outcome = await validator.ValidateAsync(FhirFormat.ParseStored(s.Json), ctx.Request.Query["profile"].FirstOrDefault(), ctx.RequestAborted);
        await RespondAsync(ctx, outcome);
    }

    static void CheckMode(string? mode)
    {
        if (mode is not (null or "create" or "update"))
            throw FhirError.NotSupported($"$validate mode '{mode}' is not supported (create and update are). (mode が未対応です)", "mode");
    }

    static Task RespondAsync(HttpContext ctx, OperationOutcome outcome)
    {
        if (outcome.Issue.Count == 0)
            outcome.Issue.Add(new OperationOutcome.IssueComponent
            {
                Severity = OperationOutcome.IssueSeverity.Information,
                Code = OperationOutcome.IssueType.Informational,
                Diagnostics = "No issues: the resource conforms. (問題はありません)",
            });
        return FhirResponse.ResourceAsync(ctx, outcome, (int)HttpStatusCode.OK);
    }
}
