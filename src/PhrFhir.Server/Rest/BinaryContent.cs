using System.Globalization;
using System.Net;
using System.Text;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Audit;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Rest;

/// <summary>
/// Binary as R4 binary.html#rest defines it: asked for in a FHIR format it is a Binary resource,
/// otherwise it is the document itself, with its own Content-Type. Bytes stream from and to the
/// chunk rows; Range and If-None-Match work (IHE MHD ITI-68 Retrieve Document uses this path).
/// </summary>
public static class BinaryContent
{
    /// <summary>True unless the client named a FHIR format (by _format or a FHIR Accept type).</summary>
    public static bool WantsRaw(HttpRequest request)
    {
        if (request.Query.ContainsKey("_format")) return false;
        var accept = request.Headers.Accept.ToString();
        return !accept.Contains("fhir", StringComparison.OrdinalIgnoreCase);
    }

    public static bool IsFhirContentType(string? contentType)
    {
        var mime = contentType?.Split(';')[0].Trim().ToLowerInvariant();
        return mime is FhirFormat.JsonMime or FhirFormat.XmlMime or "application/json" or "application/xml" or "text/xml" or "application/json+fhir" or "application/xml+fhir";
    }

    public static async Task WriteAsync(HttpContext ctx, FhirStore store, StoredResource s)
    {
        var info = await store.ReadBinaryInfoAsync(s.Id, s.Version, ctx.RequestAborted)
            ?? throw new InvalidOperationException($"Binary/{s.Id} version {s.Version} has no content row");
        if (WantsRaw(ctx.Request)) await RawAsync(ctx, store, s, info);
        else await ResourceAsync(ctx, store, s, info);
    }

    static async Task RawAsync(HttpContext ctx, FhirStore store, StoredResource s, BinaryInfo info)
    {
        var response = ctx.Response;
        response.Headers.AcceptRanges = "bytes";
        response.Headers.ETag = $"W/\"{s.Version}\"";
        response.Headers.LastModified = s.LastUpdated.ToString("R", CultureInfo.InvariantCulture);
        response.ContentType = info.ContentType;
        if (ctx.Request.Headers.IfNoneMatch.ToString() is { Length: > 0 } inm && inm.Contains($"\"{s.Version}\"", StringComparison.Ordinal))
        {
            response.StatusCode = 304;
            return;
        }
        long from = 0, to = info.Size - 1;
        var range = ctx.Request.Headers.Range.ToString();
        if (range.Length > 0 && info.Size > 0)
        {
            if (!TryParseRange(range, info.Size, out from, out to))
            {
                // Answered here, not thrown: the error handler would drop Content-Range (RFC 9110 15.5.17).
                response.StatusCode = 416;
                response.Headers.ContentRange = $"bytes */{info.Size}";
                await FhirResponse.WriteBytes(ctx, 416, FhirFormat.JsonMime, FhirFormat.Serialize(FhirResponse.Outcome(
                    OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Invalid,
                    $"Range '{range}' is not satisfiable for {info.Size} bytes (one range 'bytes=start-end' is supported). (範囲指定が不正です)"), WireFormat.Json));
                return;
            }
            response.StatusCode = 206;
            response.Headers.ContentRange = $"bytes {from}-{to}/{info.Size}";
        }
        else response.StatusCode = 200;
        response.ContentLength = info.Size == 0 ? 0 : to - from + 1;
        if (info.Size > 0) await store.CopyBinaryAsync(s.Id, s.Version, info, from, to, response.Body, ctx.RequestAborted);
    }

    static bool TryParseRange(string header, long size, out long from, out long to)
    {
        from = 0;
        to = size - 1;
        if (!header.StartsWith("bytes=", StringComparison.Ordinal) || header.Contains(',')) return false;
        var parts = header[6..].Split('-');
        if (parts.Length != 2) return false;
        if (parts[0].Length == 0) // suffix: the last N bytes
        {
            if (!long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n == 0) return false;
            from = Math.Max(0, size - n);
            return true;
        }
        if (!long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out from) || from >= size) return false;
        if (parts[1].Length > 0)
        {
            if (!long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out to) || to < from) return false;
            to = Math.Min(to, size - 1);
        }
        return true;
    }

    /// <summary>The Binary resource with its data. JSON is streamed (the base64 never exists whole);
    /// XML goes through the SDK and so holds the document in memory.</summary>
    static async Task ResourceAsync(HttpContext ctx, FhirStore store, StoredResource s, BinaryInfo info)
    {
        FhirResponse.VersionHeaders(ctx.Response, s, false, "");
        var format = FhirFormat.Negotiate(ctx.Request);
        if (format == WireFormat.Xml)
        {
            var binary = (Binary)FhirFormat.ParseStored(s.Json);
            using var ms = new MemoryStream();
            await store.CopyBinaryAsync(s.Id, s.Version, info, 0, Math.Max(0, info.Size - 1), ms, ctx.RequestAborted);
            binary.Data = ms.ToArray();
            await FhirResponse.ResourceAsync(ctx, binary, 200);
            return;
        }
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = FhirFormat.JsonMime + "; charset=utf-8";
        var json = s.Json.TrimEnd();
        var head = Encoding.UTF8.GetBytes(json[..^1] + (info.Size > 0 ? ",\"data\":\"" : ""));
        await ctx.Response.Body.WriteAsync(head, ctx.RequestAborted);
        if (info.Size > 0)
        {
            await using (var base64 = new System.Security.Cryptography.CryptoStream(ctx.Response.Body,
                new System.Security.Cryptography.ToBase64Transform(), System.Security.Cryptography.CryptoStreamMode.Write, leaveOpen: true))
                await store.CopyBinaryAsync(s.Id, s.Version, info, 0, info.Size - 1, base64, ctx.RequestAborted);
            await ctx.Response.Body.WriteAsync("\"}"u8.ToArray(), ctx.RequestAborted);
        }
        else await ctx.Response.Body.WriteAsync("}"u8.ToArray(), ctx.RequestAborted);
    }

    /// <summary>POST /Binary or PUT /Binary/id with the document as the body (not FHIR).</summary>
    public static async Task CreateRawAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, string? id)
    {
        var contentType = ctx.Request.ContentType;
        if (string.IsNullOrWhiteSpace(contentType))
            throw FhirError.BadRequest("A raw Binary upload needs a Content-Type (e.g. application/pdf). (Content-Type がありません)");
        if (ctx.Request.ContentLength > limits.Value.MaxBinaryBytes)
            throw new FhirError(HttpStatusCode.RequestEntityTooLarge, OperationOutcome.IssueType.TooCostly,
                $"The Binary exceeds {limits.Value.MaxBinaryBytes / 1024 / 1024} MB. (バイナリが大きすぎます)");
        if (id is not null && !ResourceWrites.IdPattern().IsMatch(id))
            throw FhirError.BadRequest($"'{id}' is not a valid FHIR id.", "Binary.id");
        await using var tx = await ctx.BeginAuditedWriteAsync();
        var outcome = await writes.CreateRawBinaryAsync(tx, contentType, ctx.Request.Body, id, ctx.RequestAborted);
        await tx.CommitAsync(ctx.RequestAborted);
        await FhirResponse.WrittenAsync(ctx, outcome.Stored, outcome.Status, location: outcome.Created);
    }
}
