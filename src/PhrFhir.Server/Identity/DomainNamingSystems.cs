using System.Net;
using System.Security.Cryptography;
using System.Text;
using Hl7.Fhir.Model;
using Hl7.Fhir.Utility;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Server.Validation;
using PhrFhir.Storage;
using PhrFhir.Validation;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Identity;

/// <summary>
/// Identifier domains as FHIR R4 NamingSystems (docs/identity.md, "Identifier domains"). The record is the
/// table fhir.identifier_domain, which every Patient write reads and the first assigner claims inside its
/// own transaction; a NamingSystem is generated from each row on every read, so there is one source of truth
/// and no second copy to keep in step. The operator corrects a domain by PUT of its NamingSystem: the row is
/// replaced in one statement (origin "registered"), and the next Patient write follows it.
///
/// Shape: kind identifier, status active, uniqueId uri = the system (preferred) and, for urn:oid:, oid =
/// the bare OID; the institutions allowed to assign are extension <see cref="AssignerExtension"/>, each a
/// logical Reference (type Organization, identifier = the institution's actor identifier) — R4's
/// NamingSystem.responsible is one free-text string, which also lists them for a human reader.
///
/// Who sees which (as PIXm, "Who sees which identifiers"): the operator every domain; an institution (every
/// role but the person) the domains it assigns in; the person none. The NamingSystems of the conformance
/// packages (JP Core's…) are public, as the other conformance resources (Validation/ConformanceEndpoints).
/// </summary>
public static class DomainNamingSystems
{
    public const string AssignerExtension = "http://phrfhir.example/fhir/StructureDefinition/identifier-domain-assigner";

    /// <summary>R4 NamingSystem search parameters served here (string: starts with, case-insensitive; token: exact).</summary>
    public static readonly IReadOnlyList<(string Name, SearchParamType Type, string Documentation)> SearchParameters =
    [
        ("value", SearchParamType.String, "NamingSystem.uniqueId.value: the identifier system (uri) or its OID"),
        ("kind", SearchParamType.Token, "codesystem | identifier | root"),
        ("status", SearchParamType.Token, "draft | active | retired | unknown"),
        ("name", SearchParamType.String, "NamingSystem.name"),
        ("_id", SearchParamType.Token, "the logical id"),
    ];

    public static void Map(IEndpointRouteBuilder app)
    {
        // Anonymous: the packages' NamingSystems are public; the domains are added for a token that may search them.
        app.MapGet("/NamingSystem", (HttpContext ctx, FhirStore store, DocumentValidator validator) =>
            SearchAsync(ctx, store, validator, ctx.Request.Query.ToDictionary(q => q.Key, q => q.Value.ToString()))).AllowAnonymous();
        app.MapPost("/NamingSystem/_search", async (HttpContext ctx, FhirStore store, DocumentValidator validator) =>
        {
            var form = ctx.Request.HasFormContentType ? await ctx.Request.ReadFormAsync(ctx.RequestAborted) : null;
            var query = ctx.Request.Query.ToDictionary(q => q.Key, q => q.Value.ToString());
            foreach (var (k, v) in form ?? (IEnumerable<KeyValuePair<string, Microsoft.Extensions.Primitives.StringValues>>)[]) query[k] = v.ToString();
            await SearchAsync(ctx, store, validator, query);
        }).AllowAnonymous();
        app.MapGet("/NamingSystem/{id}", ReadAsync).AllowAnonymous();
        app.MapPost("/NamingSystem", (HttpContext ctx, FhirStore store, IOptions<ServerLimits> limits) => RegisterAsync(ctx, store, limits.Value, null))
            .WithMetadata(new FhirAccess(Interaction.Create, "NamingSystem"));
        app.MapPut("/NamingSystem/{id}", (HttpContext ctx, FhirStore store, IOptions<ServerLimits> limits, string id) => RegisterAsync(ctx, store, limits.Value, id))
            .WithMetadata(new FhirAccess(Interaction.Update, "NamingSystem"));
        app.MapMethods("/NamingSystem/{id}", ["DELETE", "PATCH"], () => Task.FromException(new FhirError(HttpStatusCode.MethodNotAllowed,
            OperationOutcome.IssueType.NotSupported, "An identifier domain is corrected by PUT of its NamingSystem, not deleted or patched. (発番元は PUT で訂正します)")))
            .AllowAnonymous();
    }

    /// <summary>The logical id of a domain's NamingSystem: derived from its system, so the table needs no id of its own.</summary>
    public static string IdOf(string system) => "domain-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(system)))[..32];

    static NamingSystem ToNamingSystem(IdentifierDomainRecord domain)
    {
        var id = IdOf(domain.System);
        var ns = new NamingSystem
        {
            Id = id,
            Meta = new Meta { LastUpdated = domain.Recorded },
            Name = "IdentifierDomain_" + id[7..],
            Status = PublicationStatus.Active,
            Kind = NamingSystem.NamingSystemType.Identifier,
            Date = new FhirDateTime(domain.Recorded).Value,
            Responsible = "Assigned by " + string.Join(", ", domain.Assigners),
            Description = domain.Origin == "registered"
                ? "Identifier domain registered by the PHR operator."
                : "Identifier domain recorded from its first assigner; the PHR operator may correct it (PUT).",
            UniqueId = [new NamingSystem.UniqueIdComponent { Type = NamingSystem.NamingSystemIdentifierType.Uri, Value = domain.System, Preferred = true }],
        };
        if (domain.System.StartsWith("urn:oid:", StringComparison.Ordinal))
            ns.UniqueId.Add(new NamingSystem.UniqueIdComponent { Type = NamingSystem.NamingSystemIdentifierType.Oid, Value = domain.System[8..] });
        foreach (var assigner in domain.Assigners)
        {
            var bar = assigner.IndexOf('|');
            ns.Extension.Add(new Extension(AssignerExtension, new ResourceReference
            {
                Type = "Organization",
                Identifier = bar > 0 ? new Identifier(assigner[..bar], assigner[(bar + 1)..]) : new Identifier { Value = assigner },
            }));
        }
        return ns;
    }

    /// <summary>The domains the requester may see (none without a token that may search NamingSystem).</summary>
    static async Task<List<NamingSystem>> VisibleDomainsAsync(HttpContext ctx, FhirStore store, Interaction interaction)
    {
        if (ctx.User.Identity?.IsAuthenticated != true) return [];
        AccessControl.Demand(ctx.User, interaction, "NamingSystem");
        var policy = await AccessPolicy.OfAsync(ctx, store);
        if (policy.Role == "person") return [];
        var domains = await store.IdentifierDomainRecordsAsync(ctx.RequestAborted);
        return [.. domains.Where(d => policy.Role == "operator" || d.Assigners.Contains(policy.WriterKey)).Select(ToNamingSystem)];
    }

    static async Task ReadAsync(HttpContext ctx, FhirStore store, DocumentValidator validator, string id)
    {
        var found = id.StartsWith("domain-", StringComparison.Ordinal)
            ? (await VisibleDomainsAsync(ctx, store, Interaction.Read)).FirstOrDefault(n => n.Id == id)
            : (Resource?)(await ConformanceEndpoints.LoadedAsync(validator, "NamingSystem", ctx.RequestAborted)).FirstOrDefault(r => r.Id == id);
        await FhirResponse.ResourceAsync(ctx, found ?? throw FhirError.NotFound($"NamingSystem/{id} is not known. (NamingSystem がありません)"), 200);
    }

    static async Task SearchAsync(HttpContext ctx, FhirStore store, DocumentValidator validator, Dictionary<string, string> query)
    {
        foreach (var key in query.Keys.Where(k => !SearchParameters.Any(p => p.Name == k) && k is not ("_count" or "_summary" or "_elements" or "_format" or "_pretty")))
            throw FhirError.BadRequest($"Unknown search parameter '{key}' for NamingSystem: searched by {string.Join(", ", SearchParameters.Select(p => p.Name))}. (検索パラメータが使えません)", key);
        var count = int.TryParse(query.GetValueOrDefault("_count"), out var c) ? Math.Clamp(c, 0, 1000) : 100;
        IEnumerable<NamingSystem> matches = [
            .. await VisibleDomainsAsync(ctx, store, Interaction.Search),
            .. (await ConformanceEndpoints.LoadedAsync(validator, "NamingSystem", ctx.RequestAborted)).OfType<NamingSystem>()];
        static bool Starts(string? s, string prefix) => s?.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) == true;
        if (query.GetValueOrDefault("value") is { } value) matches = matches.Where(n => n.UniqueId.Any(u => Starts(u.Value, value)));
        if (query.GetValueOrDefault("name") is { } name) matches = matches.Where(n => Starts(n.Name, name));
        if (query.GetValueOrDefault("kind") is { } kind) matches = matches.Where(n => n.Kind?.GetLiteral() == kind);
        if (query.GetValueOrDefault("status") is { } status) matches = matches.Where(n => n.Status?.GetLiteral() == status);
        if (query.GetValueOrDefault("_id") is { } id) matches = matches.Where(n => n.Id == id);
        await FhirResponse.ResourceAsync(ctx, ConformanceEndpoints.Searchset(ctx.Request, "NamingSystem", [.. matches], count), 200);
    }

    /// <summary>
    /// The operator registers or corrects a domain: the NamingSystem's uri uniqueId is the system, its
    /// assigner extensions who may assign in it. Replaces the recorded row (a first assigner's claim included).
    /// </summary>
    static async Task RegisterAsync(HttpContext ctx, FhirStore store, ServerLimits limits, string? id)
    {
        var policy = await AccessPolicy.OfAsync(ctx, store);
        if (policy.Role != "operator")
            throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
                "Identifier domains are registered and corrected by the PHR operator. (発番元の登録・訂正は運営者が行います)");
        if (await FhirFormat.ReadResourceAsync(ctx.Request, limits, ctx.RequestAborted) is not NamingSystem ns)
            throw FhirError.BadRequest("The body must be a NamingSystem resource. (NamingSystem リソースを送ってください)");
        if (ns.Kind != NamingSystem.NamingSystemType.Identifier)
            throw Invalid("An identifier domain is a NamingSystem of kind 'identifier'. (kind は identifier です)", "NamingSystem.kind");
        if (ns.Status != PublicationStatus.Active)
            throw Invalid("An identifier domain's NamingSystem is 'active' (domains are corrected, not retired). (status は active です)", "NamingSystem.status");
        var uris = ns.UniqueId.Where(u => u.Type == NamingSystem.NamingSystemIdentifierType.Uri).ToList();
        if (uris.Count != 1 || !Uri.TryCreate(uris[0].Value, UriKind.Absolute, out _))
            throw Invalid("The NamingSystem needs exactly one uniqueId of type 'uri' with an absolute URI: the identifier system. (uri の uniqueId を一つ指定します)", "NamingSystem.uniqueId");
        var system = uris[0].Value!;
        foreach (var oid in ns.UniqueId.Where(u => u.Type == NamingSystem.NamingSystemIdentifierType.Oid))
            if ("urn:oid:" + oid.Value != system)
                throw Invalid("A uniqueId of type 'oid' must be the OID of the uri uniqueId (urn:oid:…). (oid と uri が一致しません)", "NamingSystem.uniqueId");
        var assigners = new List<string>();
        foreach (var extension in ns.Extension.Where(e => e.Url == AssignerExtension))
            assigners.Add(extension.Value is ResourceReference { Identifier: { System.Length: > 0, Value.Length: > 0 } who }
                ? who.System + "|" + who.Value
                : throw Invalid($"Each {AssignerExtension} is a valueReference whose identifier (system and value) is an institution's actor identifier. (発番できる機関を identifier で指定します)", "NamingSystem.extension"));
        if (assigners.Count == 0)
            throw Invalid($"Name at least one institution allowed to assign in the domain (extension {AssignerExtension}). (発番できる機関が必要です)", "NamingSystem.extension");
        if (id is not null && id != IdOf(system))
            throw FhirError.BadRequest($"The id of the NamingSystem of {system} is {IdOf(system)} (derived from the system). (id が発番元と一致しません)", "NamingSystem.id");

        var existed = (await store.IdentifierDomainsAsync(ctx.RequestAborted)).ContainsKey(system);
        await store.RegisterDomainAsync(system, [.. assigners.Distinct(StringComparer.Ordinal)], ctx.RequestAborted);
        var stored = (await store.IdentifierDomainRecordsAsync(ctx.RequestAborted)).Single(d => d.System == system);
        if (!existed) ctx.Response.Headers.Location = $"{FhirResponse.BaseUrl(ctx.Request)}/NamingSystem/{IdOf(system)}";
        await FhirResponse.ResourceAsync(ctx, ToNamingSystem(stored), existed ? 200 : 201);
    }

    static FhirError Invalid(string message, string expression) =>
        new(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Invalid, message, expression);
}
