using System.Globalization;
using System.Net;
using System.Text;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using Hl7.Fhir.Rest;
using PhrFhir.Storage;

namespace PhrFhir.Server.Rest;

/// <summary>Writes FHIR responses: the negotiated format, _summary/_elements, and the version headers.</summary>
public static class FhirResponse
{
    public static string BaseUrl(HttpRequest r) => $"{r.Scheme}://{r.Host}{r.PathBase}";

    public static void VersionHeaders(HttpResponse response, StoredResource s, bool location, string baseUrl)
    {
        response.Headers.ETag = $"W/\"{s.Version}\"";
        response.Headers.LastModified = s.LastUpdated.ToString("R", CultureInfo.InvariantCulture);
        if (location) response.Headers.Location = $"{baseUrl}/{s.Type}/{s.Id}/_history/{s.Version}";
    }

    static (SummaryType Summary, string[]? Elements) Shaping(HttpRequest request)
    {
        var summary = request.Query["_summary"].ToString() switch
        {
            "" or "false" => SummaryType.False,
            "true" => SummaryType.True,
            "text" => SummaryType.Text,
            "data" => SummaryType.Data,
            "count" => SummaryType.Count,
            var other => throw FhirError.BadRequest($"_summary must be true, false, text, data or count, got '{other}'.", "_summary"),
        };
        var elements = request.Query["_elements"].ToString();
        return (summary, elements.Length == 0 ? null : elements.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    /// <summary>A stored resource: its bytes as stored when nothing needs reshaping (the fast path).</summary>
    public static Task StoredAsync(HttpContext ctx, StoredResource s, int status)
    {
        var format = FhirFormat.Negotiate(ctx.Request);
        var (summary, elements) = Shaping(ctx.Request);
        if (format == WireFormat.Json && summary == SummaryType.False && elements is null)
            return WriteBytes(ctx, status, FhirFormat.JsonMime, Encoding.UTF8.GetBytes(s.Json));
        return ResourceAsync(ctx, FhirFormat.ParseStored(s.Json), status);
    }

    public static Task ResourceAsync(HttpContext ctx, Base resource, int status)
    {
        var format = FhirFormat.Negotiate(ctx.Request);
        var (summary, elements) = Shaping(ctx.Request);
        // The SDK tags _summary output SUBSETTED itself; for _elements we keep id and meta (without them
        // the result cannot be read back or updated) and add the tag (R4 search.html#elements).
        if (elements is not null && resource is Resource r and not Bundle)
        {
            elements = [.. elements.Union(["id", "meta"])];
            resource = r = (Resource)r.DeepCopy(); // the caller's object may be shared (conformance resources)
            MarkSubsetted(r);
        }
        return WriteBytes(ctx, status, FhirFormat.Mime(format), FhirFormat.Serialize(resource, format, summary, elements));
    }

    /// <summary>R4 search.html#summary: a shaped resource carries the SUBSETTED tag.</summary>
    static void MarkSubsetted(Resource r)
    {
        r.Meta ??= new Meta();
        if (!r.Meta.Tag.Any(t => t.Code == "SUBSETTED"))
            r.Meta.Tag.Add(new Coding("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED"));
    }

    public static async Task WriteBytes(HttpContext ctx, int status, string mime, byte[] body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = mime + "; charset=utf-8";
        ctx.Response.ContentLength = body.Length;
        await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted);
    }

    public static OperationOutcome Outcome(OperationOutcome.IssueSeverity severity, OperationOutcome.IssueType code, string text, string? expression = null) =>
        new()
        {
            Issue =
            [
                new OperationOutcome.IssueComponent
                {
                    Severity = severity, Code = code, Diagnostics = text,
                    Expression = expression is null ? null! : [expression],
                },
            ],
        };

    /// <summary>The answer to a write, as the client's Prefer header asks (R4 http.html#ops).</summary>
    public static Task WrittenAsync(HttpContext ctx, StoredResource s, int status, bool location)
    {
        VersionHeaders(ctx.Response, s, location, BaseUrl(ctx.Request));
        var prefer = ctx.Request.Headers["Prefer"].ToString();
        if (prefer.Contains("return=minimal", StringComparison.OrdinalIgnoreCase))
        {
            ctx.Response.StatusCode = status;
            return Task.CompletedTask;
        }
        if (prefer.Contains("return=OperationOutcome", StringComparison.OrdinalIgnoreCase))
        {
            var outcome = Outcome(OperationOutcome.IssueSeverity.Information, OperationOutcome.IssueType.Informational,
                $"{s.Type}/{s.Id} version {s.Version} stored. (保存しました)");
            outcome.Issue.AddRange(Validation.ProfileEnforcement.Warnings(ctx)); // what the 'warn' policy let through
            return ResourceAsync(ctx, outcome, status);
        }
        return StoredAsync(ctx, s, status);
    }

    /// <summary>W/"3" (or "3") → 3; empty → null; anything else is the client's error.</summary>
    public static int? ParseVersionETag(string? value, string what)
    {
        if (string.IsNullOrEmpty(value)) return null;
        var digits = value.Replace("W/", "", StringComparison.Ordinal).Trim('"', ' ');
        return int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n
            : throw FhirError.BadRequest($"{what} '{value}' is not a version ETag like W/\"3\". ({what} の形式が不正です)", what);
    }
}
