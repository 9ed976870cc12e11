using System.Globalization;
using System.Net;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Audit;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using PhrFhir.Server.Security;

namespace PhrFhir.Server.Rest;

/// <summary>
/// The FHIR RESTful API (R4 http.html): each route reads top to bottom — parse, call
/// <see cref="ResourceWrites"/> or the store, answer.
/// </summary>
public static class FhirEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/metadata", (HttpContext ctx, CapabilityStatementBuilder cs) => FhirResponse.ResourceAsync(ctx, cs.Build(FhirResponse.BaseUrl(ctx.Request)), 200))
            .AllowAnonymous(); // the CapabilityStatement is how a client learns where to get a token
        app.MapPost("/", BundleTransactions.HandleAsync).WithMetadata(new FhirAccess(null)); // each entry is checked
        app.MapGet("/_history", (HttpContext ctx, FhirStore store) => HistoryAsync(ctx, store, null, null)).WithMetadata(new FhirAccess(Interaction.Search, "*"));

        app.MapGet("/{type}", SearchAsync).WithMetadata(new FhirAccess(Interaction.Search));
        app.MapPost("/{type}/_search", SearchAsync).WithMetadata(new FhirAccess(Interaction.Search));
        app.MapPost("/{type}", CreateAsync).WithMetadata(new FhirAccess(Interaction.Create));
        app.MapPut("/{type}", ConditionalUpdateAsync).WithMetadata(new FhirAccess(Interaction.Update));
        app.MapDelete("/{type}", ConditionalDeleteAsync).WithMetadata(new FhirAccess(Interaction.Delete));
        app.MapGet("/{type}/_history", (HttpContext ctx, FhirStore store, string type) => HistoryAsync(ctx, store, Served(type), null)).WithMetadata(new FhirAccess(Interaction.Search));

        app.MapGet("/{type}/{id}", ReadAsync).WithMetadata(new FhirAccess(Interaction.Read));
        app.MapPut("/{type}/{id}", UpdateAsync).WithMetadata(new FhirAccess(Interaction.Update));
        app.MapDelete("/{type}/{id}", DeleteAsync).WithMetadata(new FhirAccess(Interaction.Delete));
        app.MapPatch("/{type}/{id}", PatchAsync).WithMetadata(new FhirAccess(Interaction.Update));
        app.MapGet("/{type}/{id}/_history", (HttpContext ctx, FhirStore store, string type, string id) => HistoryAsync(ctx, store, Served(type), id)).WithMetadata(new FhirAccess(Interaction.Read));
        app.MapGet("/{type}/{id}/_history/{vid}", VReadAsync).WithMetadata(new FhirAccess(Interaction.Read));
    }

    static string Served(string type) =>
        ServedResources.IsServed(type) ? type
        : throw new FhirError(HttpStatusCode.NotFound, OperationOutcome.IssueType.NotSupported,
            ReferenceTarget.IsResourceType(type)
                ? $"{type} is not served by this server. (このサーバーは {type} を扱いません)"
                : $"'{type}' is not a FHIR R4 resource type. (FHIR R4 のリソース型ではありません)");

    static async Task ReadAsync(HttpContext ctx, FhirStore store, string type, string id)
    {
        Served(type);
        var s = await store.ReadAsync(type, id, ctx.RequestAborted) ?? throw FhirError.NotFound($"{type}/{id} is not known. (リソースがありません)");
        await (await AccessPolicy.OfAsync(ctx, store)).CheckReadAsync(s);
        AuditTrail.Concerns(ctx, [s.Person]);
        if (s.Deleted)
            throw new FhirError(HttpStatusCode.Gone, OperationOutcome.IssueType.Deleted, $"{type}/{id} was deleted (version {s.Version}). (削除済みです)");
        FhirResponse.VersionHeaders(ctx.Response, s, false, "");
        if (ctx.Request.Headers.IfNoneMatch.ToString() is { Length: > 0 } inm && inm.Contains($"\"{s.Version}\"", StringComparison.Ordinal))
        {
            ctx.Response.StatusCode = 304;
            return;
        }
        if (type == "Binary") await BinaryContent.WriteAsync(ctx, store, s);
        else await FhirResponse.StoredAsync(ctx, s, 200);
    }

    static async Task VReadAsync(HttpContext ctx, FhirStore store, string type, string id, string vid)
    {
        Served(type);
        if (!int.TryParse(vid, NumberStyles.None, CultureInfo.InvariantCulture, out var version))
            throw FhirError.NotFound($"{type}/{id}/_history/{vid}: '{vid}' is not a version of this server.");
        var s = await store.ReadVersionAsync(type, id, version, ctx.RequestAborted)
            ?? throw FhirError.NotFound($"{type}/{id} has no version {vid}. (その版はありません)");
        await (await AccessPolicy.OfAsync(ctx, store)).CheckReadAsync(s);
        AuditTrail.Concerns(ctx, [s.Person]);
        FhirResponse.VersionHeaders(ctx.Response, s, false, "");
        if (s.Deleted) throw new FhirError(HttpStatusCode.Gone, OperationOutcome.IssueType.Deleted, $"Version {vid} of {type}/{id} is its deletion. (削除された版です)");
        if (type == "Binary") await BinaryContent.WriteAsync(ctx, store, s);
        else await FhirResponse.StoredAsync(ctx, s, 200);
    }

    static async Task CreateAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, string type)
    {
        Served(type);
        if (type == "Binary" && !BinaryContent.IsFhirContentType(ctx.Request.ContentType))
        {
            await BinaryContent.CreateRawAsync(ctx, store, writes, limits, null);
            return;
        }
        var resource = await BodyAsync(ctx, type, limits.Value);
        if (Mhd.SimplifiedPublish.Applies(resource))
        {
            await Mhd.SimplifiedPublish.HandleAsync(ctx, (DocumentReference)resource, store, writes); // IHE MHD ITI-105
            return;
        }
        var ifNoneExist = ctx.Request.Headers["If-None-Exist"].ToString();
        await using var tx = await ctx.BeginAuditedWriteAsync();
        var outcome = await writes.CreateAsync(tx, resource, ifNoneExist, ctx.RequestAborted);
        await tx.CommitAsync(ctx.RequestAborted);
        await FhirResponse.WrittenAsync(ctx, outcome.Stored, outcome.Status, location: true);
    }

    static async Task UpdateAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, string type, string id)
    {
        Served(type);
        if (type == "Binary" && !BinaryContent.IsFhirContentType(ctx.Request.ContentType))
        {
            await BinaryContent.CreateRawAsync(ctx, store, writes, limits, id);
            return;
        }
        var resource = await BodyAsync(ctx, type, limits.Value);
        var ifMatch = IfMatch(ctx.Request);
        // Each try writes what the client sent: a try changes the resource it is given (its meta, a Patient's links).
        var sent = ifMatch is null ? (Resource)resource.DeepCopy() : null;
        var outcome = await AgainIfRaceLostAsync(ctx, ifMatch, (tx, attempt) =>
            writes.UpdateAsync(tx, type, id, attempt == 1 ? resource : (Resource)sent!.DeepCopy(), ifMatch, ctx.RequestAborted));
        await FhirResponse.WrittenAsync(ctx, outcome.Stored, outcome.Status, location: outcome.Created);
    }

    /// <summary>
    /// A write in its own audited transaction. Without If-Match the client asked for no version check, so a write that lost
    /// a race with another writer of the same resource (412 at commit: another client, or the server's Subscription
    /// deliverer recording a handshake) is made again on the version that won, up to three tries, instead of answering
    /// 412 to a client that named no version.
    /// </summary>
    static async Task<WriteOutcome> AgainIfRaceLostAsync(HttpContext ctx, int? ifMatch, Func<WriteTransaction, int, Task<WriteOutcome>> write)
    {
        for (var attempt = 1; ; attempt++)
        {
            await using var tx = await ctx.BeginAuditedWriteAsync();
            try
            {
                var outcome = await write(tx, attempt);
                await tx.CommitAsync(ctx.RequestAborted);
                return outcome;
            }
            catch (FhirError e) when (ifMatch is null && e.Status == HttpStatusCode.PreconditionFailed && attempt < 3) { }
        }
    }

    static async Task ConditionalUpdateAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, string type)
    {
        Served(type);
        var resource = await BodyAsync(ctx, type, limits.Value);
        await using var tx = await ctx.BeginAuditedWriteAsync();
        var outcome = await writes.ConditionalUpdateAsync(tx, type, ctx.Request.QueryString.Value ?? "", resource, ctx.RequestAborted);
        await tx.CommitAsync(ctx.RequestAborted);
        await FhirResponse.WrittenAsync(ctx, outcome.Stored, outcome.Status, location: outcome.Created);
    }

    static async Task PatchAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, string type, string id)
    {
        Served(type);
        if (ctx.Request.ContentType?.Contains("json-patch", StringComparison.OrdinalIgnoreCase) == true)
            throw new FhirError(HttpStatusCode.UnsupportedMediaType, OperationOutcome.IssueType.NotSupported,
                "JSON Patch is not supported: send a FHIRPath Patch (a Parameters resource, R4 fhirpatch.html). (JSON Patch は未対応です)");
        if (await FhirFormat.ReadResourceAsync(ctx.Request, limits.Value, ctx.RequestAborted) is not Parameters patch)
            throw FhirError.BadRequest("A PATCH body is a FHIRPath Patch: a Parameters resource (R4 fhirpatch.html).", "resourceType");
        var ifMatch = IfMatch(ctx.Request);
        var outcome = await AgainIfRaceLostAsync(ctx, ifMatch, (tx, _) => writes.PatchAsync(tx, type, id, patch, ifMatch, ctx.RequestAborted));
        await FhirResponse.WrittenAsync(ctx, outcome.Stored, outcome.Status, location: false);
    }

    static async Task DeleteAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, string type, string id)
    {
        Served(type);
        await using var tx = await ctx.BeginAuditedWriteAsync();
        var deleted = await writes.DeleteAsync(tx, type, id, ctx.RequestAborted);
        await tx.CommitAsync(ctx.RequestAborted);
        if (deleted is not null) ctx.Response.Headers.ETag = $"W/\"{deleted.Version}\"";
        ctx.Response.StatusCode = 204;
    }

    static async Task ConditionalDeleteAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, string type)
    {
        Served(type);
        await using var tx = await ctx.BeginAuditedWriteAsync();
        await writes.ConditionalDeleteAsync(tx, type, ctx.Request.QueryString.Value ?? "", ctx.RequestAborted);
        await tx.CommitAsync(ctx.RequestAborted);
        ctx.Response.StatusCode = 204;
    }

    static async Task SearchAsync(HttpContext ctx, FhirStore store, IOptions<Sharing.SharingOptions> sharing, string type)
    {
        Served(type);
        var pairs = await SearchParametersAsync(ctx);
        if (Sharing.VhlSearch.Applies(type, pairs))
        {
            await Sharing.VhlSearch.HandleAsync(ctx, store, sharing.Value, pairs); // IHE VHL: a share link's folder
            return;
        }
        // The filter first: the query confines every set of rows it looks at with it (chains, _has…).
        var policy = await AccessPolicy.OfAsync(ctx, store);
        var filter = await policy.FilterAsync(await policy.SearchedPersonAsync(type, pairs)) ?? AccessFilter.Everything;
        var query = new SearchQuery(store.SearchParameters, type, pairs, Lenient(ctx.Request), filter);
        var result = await store.SearchAsync(query, ctx.RequestAborted);
        AuditTrail.Concerns(ctx, result.Matches.Concat(result.Included).Select(m => m.Person));
        await BundleResponses.SearchsetAsync(ctx, query, result);
    }

    /// <summary>
    /// A search's parameters: the query string and, for POST _search, the form body; `_summary=count` as
    /// a page of none with an accurate total.
    /// </summary>
    public static async Task<List<KeyValuePair<string, string>>> SearchParametersAsync(HttpContext ctx)
    {
        var pairs = ctx.Request.Query.SelectMany(kv => kv.Value.Select(v => new KeyValuePair<string, string>(kv.Key, v ?? ""))).ToList();
        if (HttpMethods.IsPost(ctx.Request.Method) && ctx.Request.HasFormContentType)
        {
            var form = await ctx.Request.ReadFormAsync(ctx.RequestAborted);
            pairs.AddRange(form.SelectMany(kv => kv.Value.Select(v => new KeyValuePair<string, string>(kv.Key, v ?? ""))));
        }
        if (pairs.Any(p => p.Key == "_summary" && p.Value == "count"))
            pairs = [.. pairs.Where(p => p.Key is not ("_count" or "_total")), new("_count", "0"), new("_total", "accurate")];
        return pairs;
    }

    static async Task HistoryAsync(HttpContext ctx, FhirStore store, string? type, string? id)
    {
        var q = ctx.Request.Query;
        // `_summary=count`: the total alone, as for a search.
        var count = q["_summary"] == "count" ? 0 : Math.Clamp(IntParam(q["_count"], SearchQuery.DefaultCount), 0, SearchQuery.MaxCount);
        var offset = Math.Max(0, IntParam(q["_offset"], 0));
        DateTimeOffset? since = null;
        if (q["_since"].ToString() is { Length: > 0 } s)
            since = DateRange.TryParse(s, out var low, out _) ? low
                : throw FhirError.BadRequest($"_since '{s}' is not a FHIR instant. (日時の形式が不正です)", "_since");
        var (page, total) = await store.HistoryAsync(type, id, since, count, offset, ctx.RequestAborted, await (await AccessPolicy.OfAsync(ctx, store)).FilterAsync());
        if (id is not null && total == 0) throw FhirError.NotFound($"{type}/{id} is not known. (リソースがありません)");
        var path = id is not null ? $"{type}/{id}/_history" : type is not null ? $"{type}/_history" : "_history";
        await BundleResponses.HistoryAsync(ctx, path, page, total, offset, count);
    }

    static int IntParam(string? value, int fallback) =>
        string.IsNullOrEmpty(value) ? fallback
        : int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v
        : throw FhirError.BadRequest($"'{value}' is not a non-negative integer.");

    static bool Lenient(HttpRequest r) => r.Headers["Prefer"].ToString().Contains("handling=lenient", StringComparison.OrdinalIgnoreCase);

    static int? IfMatch(HttpRequest r) => FhirResponse.ParseVersionETag(r.Headers.IfMatch.ToString(), "If-Match");

    static async Task<Resource> BodyAsync(HttpContext ctx, string type, ServerLimits limits)
    {
        var resource = await FhirFormat.ReadResourceAsync(ctx.Request, limits, ctx.RequestAborted);
        if (resource.TypeName != type)
            throw FhirError.BadRequest($"The body is a {resource.TypeName} but the URL is for {type}. (URL と本文のリソース型が一致しません)", "resourceType");
        return resource;
    }
}
