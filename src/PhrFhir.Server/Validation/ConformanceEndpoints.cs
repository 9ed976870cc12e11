using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Validation;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Validation;

/// <summary>
/// The conformance resources the validator enforces (JP Core, eCheckup, CLINS, IHE MHD
/// StructureDefinitions, ValueSets, CodeSystems…), served read-only so a client can see exactly which
/// profiles are checked: GET [base]/StructureDefinition?url=…, GET [base]/StructureDefinition/[id].
/// They come from the packages restored into the FHIR package cache at start (profiles/packages.json); writes are refused.
/// </summary>
public static class ConformanceEndpoints
{
    public static readonly IReadOnlyList<string> Types =
        ["StructureDefinition", "ValueSet", "CodeSystem", "NamingSystem", "ImplementationGuide", "SearchParameter", "OperationDefinition", "ConceptMap"];

    public static readonly IReadOnlyList<string> SearchParameters = ["url", "version", "name", "status", "_id"];

    public static void Map(IEndpointRouteBuilder app)
    {
        // NamingSystem: Identity/DomainNamingSystems serves the packages' beside the identifier domains.
        foreach (var type in Types.Where(t => t != "NamingSystem"))
        {
            // Published conformance material, like /metadata: readable without a token.
            app.MapGet("/" + type, (HttpContext ctx, DocumentValidator v) => SearchAsync(ctx, v, type)).AllowAnonymous();
            app.MapGet("/" + type + "/{id}", (HttpContext ctx, DocumentValidator v, string id) => ReadAsync(ctx, v, type, id)).AllowAnonymous();
            app.MapMethods("/" + type, ["POST", "PUT", "DELETE"], () => ReadOnly(type)).AllowAnonymous();
            app.MapMethods("/" + type + "/{id}", ["PUT", "DELETE", "PATCH"], () => ReadOnly(type)).AllowAnonymous();
        }
    }

    static Task ReadOnly(string type) => throw new FhirError(HttpStatusCode.MethodNotAllowed, OperationOutcome.IssueType.NotSupported,
        $"{type} resources are read-only here: they come from the conformance packages the server loads. (読み取り専用です)");

    // Built once per validator (a test process may host several servers).
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<DocumentValidator, List<Resource>> Served = new();

    /// <summary>
    /// Copies of the loaded resources with ids unique per type: packages reuse ids across versions
    /// (eCheckup 1.1.3 and 1.5.0 both have JP-Bundle-eCheckupGeneral), so a later one with a taken id
    /// is served as "{id}-{version}". The canonical URL (and version) is what identifies a profile.
    /// </summary>
    static IEnumerable<Resource> OfType(DocumentValidator validator, string type)
    {
        return Served.GetValue(validator, v => Distinct(v.ConformanceResources)).Where(r => r.TypeName == type);
    }

    /// <summary>The loaded conformance resources of a type, once the packages are loaded.</summary>
    internal static async Task<IEnumerable<Resource>> LoadedAsync(DocumentValidator validator, string type, CancellationToken ct)
    {
        await validator.WhenReadyAsync(ct);
        return OfType(validator, type);
    }

    static List<Resource> Distinct(IEnumerable<Resource> loaded)
    {
        var taken = new HashSet<string>(StringComparer.Ordinal);
        var list = new List<Resource>();
        foreach (var original in loaded)
        {
            var copy = (Resource)original.DeepCopy();
            var id = copy.Id ?? "r";
            if (!taken.Add(copy.TypeName + "/" + id))
            {
                var version = copy is IVersionableConformanceResource v ? v.Version : null;
                id = $"{id}-{(version ?? "v").Replace('|', '-')}";
                for (var n = 2; !taken.Add(copy.TypeName + "/" + id); n++) id = $"{copy.Id}-{n}";
                copy.Id = ResourceWrites.IdPattern().IsMatch(id) ? id : Guid.NewGuid().ToString();
            }
            list.Add(copy);
        }
        return list;
    }

    static async Task ReadAsync(HttpContext ctx, DocumentValidator validator, string type, string id)
    {
        await validator.WhenReadyAsync(ctx.RequestAborted); // families still loading at start: wait, never answer "not found" too early
        var found = OfType(validator, type).FirstOrDefault(r => r.Id == id)
            ?? throw FhirError.NotFound($"{type}/{id} is not among the loaded conformance resources. (リソースがありません)");
        await FhirResponse.ResourceAsync(ctx, found, 200);
    }

    static async Task SearchAsync(HttpContext ctx, DocumentValidator validator, string type)
    {
        await validator.WhenReadyAsync(ctx.RequestAborted);
        var q = ctx.Request.Query;
        foreach (var key in q.Keys.Where(k => !SearchParameters.Contains(k) && k is not ("_count" or "_summary" or "_elements" or "_format" or "_pretty")))
            throw FhirError.BadRequest($"Unknown search parameter '{key}' for {type}: the loaded conformance resources are searched by {string.Join(", ", SearchParameters)}. (検索パラメータが使えません)", key);
        var count = int.TryParse(q["_count"], out var c) ? Math.Clamp(c, 0, 1000) : 100;
        IEnumerable<Resource> matches = OfType(validator, type);
        if (q["url"].FirstOrDefault() is { } url)
        {
            var (canonical, version) = url.Contains('|') ? (url.Split('|')[0], url.Split('|')[1]) : (url, null);
            matches = matches.Where(r => r is IVersionableConformanceResource v && v.Url == canonical && (version is null || v.Version == version));
        }
        if (q["version"].FirstOrDefault() is { } ver) matches = matches.Where(r => r is IVersionableConformanceResource v && v.Version == ver);
        if (q["name"].FirstOrDefault() is { } name)
            matches = matches.Where(r => r is IVersionableConformanceResource v && (v.Name ?? "").StartsWith(name, StringComparison.OrdinalIgnoreCase));
        if (q["status"].FirstOrDefault() is { } status)
            matches = matches.Where(r => r is IVersionableConformanceResource v && v.Status?.ToString().Equals(status, StringComparison.OrdinalIgnoreCase) == true);
        if (q["_id"].FirstOrDefault() is { } id) matches = matches.Where(r => r.Id == id);
        await FhirResponse.ResourceAsync(ctx, Searchset(ctx.Request, type, [.. matches], count), 200);
    }

    /// <summary>A searchset of in-memory matches (conformance resources, identifier domains): all counted, the first <paramref name="count"/> given.</summary>
    internal static Bundle Searchset(HttpRequest request, string type, List<Resource> all, int count)
    {
        var baseUrl = FhirResponse.BaseUrl(request);
        return new Bundle
        {
            Id = Guid.NewGuid().ToString(),
            Type = Bundle.BundleType.Searchset,
            Total = all.Count,
            Link = [new Bundle.LinkComponent { Relation = "self", Url = $"{baseUrl}{request.Path}{request.QueryString}" }],
            Entry = [.. all.Take(count).Select(r => new Bundle.EntryComponent
            {
                FullUrl = $"{baseUrl}/{type}/{r.Id}",
                Resource = r,
                Search = new Bundle.SearchComponent { Mode = Bundle.SearchEntryMode.Match },
            })],
        };
    }
}
