using System.Globalization;
using System.Text;
using System.Text.Json;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;

namespace PhrFhir.Server.Rest;

/// <summary>Search and history Bundles. JSON without _summary/_elements is written straight from the
/// stored bytes; everything else goes through the SDK's POCOs.</summary>
public static class BundleResponses
{
    public static Task SearchsetAsync(HttpContext ctx, SearchQuery q, SearchResult result) =>
        SearchsetAsync(ctx, q.ResourceType, q.Applied, q.Offset, q.Count, result);

    /// <summary>A searchset page with its self/previous/next links (also for searches not made by SearchQuery: the access log).</summary>
    public static Task SearchsetAsync(HttpContext ctx, string type, List<KeyValuePair<string, string>> applied, int offset, int count, SearchResult result)
    {
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var self = Link(baseUrl, type, applied, offset, count);
        var links = new List<(string Rel, string Url)> { ("self", self) };
        if (offset > 0) links.Add(("previous", Link(baseUrl, type, applied, Math.Max(0, offset - count), count)));
        if (result.HasMore) links.Add(("next", Link(baseUrl, type, applied, offset + count, count)));
        var entries = result.Matches.Select(m => (m, "match"))
            .Concat(result.Included.Select(i => (i, "include"))).ToList();
        return WriteAsync(ctx, Bundle.BundleType.Searchset, result.Total, links, entries, history: false);
    }

    public static Task HistoryAsync(HttpContext ctx, string path, List<StoredResource> page, int total, int offset, int count)
    {
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var q = ctx.Request.Query.Where(kv => kv.Key != "_offset")
            .Select(kv => new KeyValuePair<string, string>(kv.Key, kv.Value.ToString())).ToList();
        string Url(int off) => $"{baseUrl}/{path}?" + string.Join("&", q.Select(kv => Uri.EscapeDataString(kv.Key) + "=" + Uri.EscapeDataString(kv.Value))
            .Append("_offset=" + off.ToString(CultureInfo.InvariantCulture)));
        var links = new List<(string, string)> { ("self", Url(offset)) };
        if (offset > 0) links.Add(("previous", Url(Math.Max(0, offset - count))));
        if (count > 0 && offset + page.Count < total) links.Add(("next", Url(offset + count))); // a page of none has no next one
        return WriteAsync(ctx, Bundle.BundleType.History, total, links, page.Select(p => (p, "")).ToList(), history: true);
    }

    static string Link(string baseUrl, string type, List<KeyValuePair<string, string>> applied, int offset, int count)
    {
        var parts = applied.Where(a => a.Key is not "_count")
            .Select(a => Uri.EscapeDataString(a.Key) + "=" + Uri.EscapeDataString(a.Value))
            .Append("_count=" + count.ToString(CultureInfo.InvariantCulture));
        if (offset > 0) parts = parts.Append("_offset=" + offset.ToString(CultureInfo.InvariantCulture));
        return $"{baseUrl}/{type}?{string.Join("&", parts)}";
    }

    static async Task WriteAsync(HttpContext ctx, Bundle.BundleType type, int? total, List<(string Rel, string Url)> links,
        List<(StoredResource R, string Mode)> entries, bool history)
    {
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var format = FhirFormat.Negotiate(ctx.Request);
        var summaryCount = ctx.Request.Query["_summary"] == "count";
        var shaped = ctx.Request.Query.ContainsKey("_summary") || ctx.Request.Query.ContainsKey("_elements");
        if (format == WireFormat.Json && !shaped)
        {
            await FhirResponse.WriteBytes(ctx, 200, FhirFormat.JsonMime, RawJson(type, total, links, entries, history, baseUrl));
            return;
        }
        var bundle = new Bundle
        {
            Id = Guid.NewGuid().ToString(),
            Type = type,
            Total = total,
            Meta = new Meta { LastUpdated = DateTimeOffset.UtcNow },
            Link = links.Select(l => new Bundle.LinkComponent { Relation = l.Rel, Url = l.Url }).ToList(),
        };
        if (!summaryCount)
            foreach (var (r, mode) in entries)
            {
                var e = new Bundle.EntryComponent { FullUrl = $"{baseUrl}/{r.Type}/{r.Id}" };
                if (!r.Deleted) e.Resource = FhirFormat.ParseStored(r.Json);
                if (history) e.Request = new Bundle.RequestComponent { Method = HistoryMethod(r), Url = HistoryUrl(r) };
                if (history) e.Response = new Bundle.ResponseComponent { Status = r.Deleted ? "204" : r.Version == 1 ? "201" : "200", Etag = $"W/\"{r.Version}\"", LastModified = r.LastUpdated };
                if (!history) e.Search = new Bundle.SearchComponent { Mode = mode == "match" ? Bundle.SearchEntryMode.Match : Bundle.SearchEntryMode.Include };
                bundle.Entry.Add(e);
            }
        await FhirResponse.ResourceAsync(ctx, bundle, 200);
    }

    static Bundle.HTTPVerb HistoryMethod(StoredResource r) =>
        r.Deleted ? Bundle.HTTPVerb.DELETE : r.Version == 1 ? Bundle.HTTPVerb.POST : Bundle.HTTPVerb.PUT;

    static string HistoryUrl(StoredResource r) => r.Version == 1 && !r.Deleted ? r.Type : $"{r.Type}/{r.Id}";

    static byte[] RawJson(Bundle.BundleType type, int? total, List<(string Rel, string Url)> links,
        List<(StoredResource R, string Mode)> entries, bool history, string baseUrl)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("resourceType", "Bundle");
            w.WriteString("id", Guid.NewGuid().ToString());
            w.WriteStartObject("meta");
            w.WriteString("lastUpdated", DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            w.WriteEndObject();
            w.WriteString("type", type == Bundle.BundleType.History ? "history" : "searchset");
            if (total is { } t) w.WriteNumber("total", t);
            w.WriteStartArray("link");
            foreach (var (rel, url) in links)
            {
                w.WriteStartObject();
                w.WriteString("relation", rel);
                w.WriteString("url", url);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (entries.Count > 0)
            {
                w.WriteStartArray("entry");
                foreach (var (r, mode) in entries)
                {
                    w.WriteStartObject();
                    w.WriteString("fullUrl", $"{baseUrl}/{r.Type}/{r.Id}");
                    if (!r.Deleted)
                    {
                        w.WritePropertyName("resource");
                        w.WriteRawValue(r.Json, skipInputValidation: true);
                    }
                    if (history)
                    {
                        w.WriteStartObject("request");
                        w.WriteString("method", HistoryMethod(r).ToString());
                        w.WriteString("url", HistoryUrl(r));
                        w.WriteEndObject();
                        w.WriteStartObject("response");
                        w.WriteString("status", r.Deleted ? "204" : r.Version == 1 ? "201" : "200");
                        w.WriteString("etag", $"W/\"{r.Version}\"");
                        w.WriteString("lastModified", r.LastUpdated.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
                        w.WriteEndObject();
                    }
                    else
                    {
                        w.WriteStartObject("search");
                        w.WriteString("mode", mode);
                        w.WriteEndObject();
                    }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        return ms.ToArray();
    }
}
