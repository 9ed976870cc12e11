using System.Globalization;
using System.Net;
using System.Text.Json;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Subscriptions;

/// <summary>
/// ITI-114 topic search (`GET /Basic?code=SubscriptionTopic`, the R4 form of SubscriptionTopic), and the
/// backport operations `Subscription/{id}/$status` and `$events` (ITI-113's neighbours in DSUBm).
/// Subscriptions themselves are created, changed (`status=off`) and deleted through the REST API;
/// <see cref="SubscriptionRules"/> checks every version written.
/// </summary>
public static class SubscriptionEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        // Topics are the server's own definitions, the same for every client: any token may list them.
        app.MapGet("/Basic", TopicSearchAsync).WithMetadata(new FhirAccess(null));
        app.MapGet("/Basic/{id}", TopicReadAsync).WithMetadata(new FhirAccess(null));
        app.MapGet("/Subscription/{id}/$status", StatusAsync).WithMetadata(new FhirAccess(Interaction.Read, "Subscription"));
        app.MapGet("/Subscription/{id}/$events", EventsAsync).WithMetadata(new FhirAccess(Interaction.Read, "Subscription"));
        // The type-level forms name the Subscription with `id` (query string, or a Parameters body when POSTed).
        foreach (var (name, handler) in new (string, Func<HttpContext, FhirStore, SubscriptionStore, string, Task>)[] { ("$status", StatusAsync), ("$events", EventsAsync) })
        {
            app.MapGet("/Subscription/" + name, async (HttpContext ctx, FhirStore store, SubscriptionStore subs, Microsoft.Extensions.Options.IOptions<ServerLimits> limits) => await handler(ctx, store, subs, await IdAsync(ctx, limits.Value)))
                .WithMetadata(new FhirAccess(Interaction.Read, "Subscription"));
            app.MapPost("/Subscription/" + name, async (HttpContext ctx, FhirStore store, SubscriptionStore subs, Microsoft.Extensions.Options.IOptions<ServerLimits> limits) => await handler(ctx, store, subs, await IdAsync(ctx, limits.Value)))
                .WithMetadata(new FhirAccess(Interaction.Read, "Subscription"));
        }
    }

    static Task TopicSearchAsync(HttpContext ctx, SubscriptionTopics topics)
    {
        var found = topics.Search(ctx.Request.Query.SelectMany(kv => kv.Value.Select(v => new KeyValuePair<string, string>(kv.Key, v ?? "")))).ToList();
        var bundle = new Bundle { Id = Guid.NewGuid().ToString(), Type = Bundle.BundleType.Searchset, Total = found.Count, Timestamp = DateTimeOffset.UtcNow };
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        bundle.Link.Add(new Bundle.LinkComponent { Relation = "self", Url = baseUrl + ctx.Request.Path + ctx.Request.QueryString });
        foreach (var topic in found)
            bundle.Entry.Add(new Bundle.EntryComponent
            {
                FullUrl = baseUrl + "/Basic/" + topic.Id,
                Resource = SubscriptionTopics.ToBasic(topic),
                Search = new Bundle.SearchComponent { Mode = Bundle.SearchEntryMode.Match },
            });
        return FhirResponse.ResourceAsync(ctx, bundle, 200);
    }

    static Task TopicReadAsync(HttpContext ctx, SubscriptionTopics topics, string id)
    {
        var topic = topics.All.FirstOrDefault(t => t.Id == id)
            ?? throw FhirError.NotFound($"Basic/{id} is not known: this server serves Basic only as SubscriptionTopics. (リソースがありません)");
        return FhirResponse.ResourceAsync(ctx, SubscriptionTopics.ToBasic(topic), 200);
    }

    /// <summary>The Subscription the requester may read, and its delivery record; 404 for one it may not (as for a read).</summary>
    static async Task<(SubscriptionRow Row, SubscriptionDefinition Definition)> SubscriptionAsync(HttpContext ctx, FhirStore store, SubscriptionStore subscriptions, string id)
    {
        var stored = await store.ReadAsync("Subscription", id, ctx.RequestAborted) ?? throw FhirError.NotFound($"Subscription/{id} is not known. (リソースがありません)");
        await (await AccessPolicy.OfAsync(ctx, store)).CheckReadAsync(stored);
        if (stored.Deleted) throw new FhirError(HttpStatusCode.Gone, OperationOutcome.IssueType.Deleted, $"Subscription/{id} was deleted. (削除済みです)");
        var row = await subscriptions.OneAsync(id, ctx.RequestAborted) ?? throw FhirError.NotFound($"Subscription/{id} is not known. (リソースがありません)");
        return (row, JsonSerializer.Deserialize<SubscriptionDefinition>(row.Definition, SubscriptionRules.Json)!);
    }

    /// <summary>$status (backport IG OperationDefinition backport-subscription-status): a searchset with the SubscriptionStatus, type query-status.</summary>
    static async Task StatusAsync(HttpContext ctx, FhirStore store, SubscriptionStore subscriptions, string id)
    {
        var (row, definition) = await SubscriptionAsync(ctx, store, subscriptions, id);
        var status = (Parameters)Notifications.Build(row.Id, row.Topic, row.Status, "query-status", row.EventsSinceStart, definition, definition.Payload, []).Entry[0].Resource!;
        if (row.LastError is { } error) status.Add("error", new CodeableConcept { Text = error });
        var bundle = new Bundle { Id = Guid.NewGuid().ToString(), Type = Bundle.BundleType.Searchset, Total = 1, Timestamp = DateTimeOffset.UtcNow };
        bundle.Entry.Add(new Bundle.EntryComponent { FullUrl = "urn:uuid:" + status.Id, Resource = status, Search = new Bundle.SearchComponent { Mode = Bundle.SearchEntryMode.Match } });
        await FhirResponse.ResourceAsync(ctx, bundle, 200);
    }

    /// <summary>
    /// $events (backport-subscription-events): the events kept for the Subscription between
    /// `eventsSinceNumber` and `eventsUntilNumber` (inclusive; at most 1000), as a notification Bundle of
    /// type query-event; `content` may ask for less than the Subscription's payload, never more.
    /// </summary>
    static async Task EventsAsync(HttpContext ctx, FhirStore store, SubscriptionStore subscriptions, string id)
    {
        var (row, definition) = await SubscriptionAsync(ctx, store, subscriptions, id);
        var q = ctx.Request.Query;
        var since = Number(q["eventsSinceNumber"], 1, "eventsSinceNumber");
        var until = Number(q["eventsUntilNumber"], row.EventsSinceStart, "eventsUntilNumber");
        string[] levels = ["empty", "id-only", "full-resource"];
        var content = q["content"].ToString() is { Length: > 0 } asked ? asked : definition.Payload;
        if (!levels.Contains(content))
            throw FhirError.BadRequest($"content '{content}' is not empty, id-only or full-resource.", "content");
        if (Array.IndexOf(levels, content) > Array.IndexOf(levels, definition.Payload)) content = definition.Payload;
        var events = await subscriptions.EventsAsync(id, Math.Max(1, since), until, 1000, ctx.RequestAborted);
        var bundle = Notifications.Build(row.Id, row.Topic, row.Status, "query-event", row.EventsSinceStart, definition, content, events);
        await FhirResponse.ResourceAsync(ctx, bundle, 200);
    }

    static async Task<string> IdAsync(HttpContext ctx, ServerLimits limits)
    {
        if (ctx.Request.Query["id"].ToString() is { Length: > 0 } id) return id.Split('/')[^1];
        if (HttpMethods.IsPost(ctx.Request.Method) && ctx.Request.ContentLength is > 0
            && await FhirFormat.ReadResourceAsync(ctx.Request, limits, ctx.RequestAborted) is Parameters p
            && p.Parameter.FirstOrDefault(x => x.Name == "id")?.Value?.ToString() is { Length: > 0 } posted)
            return posted.Split('/')[^1];
        throw FhirError.BadRequest("Name the Subscription: /Subscription/{id}/$status, or the parameter id. (購読の id を指定してください)", "id");
    }

    static long Number(string? value, long fallback, string name) =>
        string.IsNullOrEmpty(value) ? fallback
        : long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n
        : throw FhirError.BadRequest($"{name} '{value}' is not a non-negative integer. (数値が不正です)", name);
}
