using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Sharing;

/// <summary>
/// The recipient's side of a SMART Health Link (SHL STU1 "Resolving a SHLink"), no token needed — the URL
/// is the capability: `POST /shl/{id}` (the manifest), `GET /shl/file/{token}` (a file's `location`, at
/// most an hour), `GET /shl/{id}?recipient=` (flag U: the one file directly). Each file is a compact JWE
/// (alg dir, enc A256GCM, cty application/fhir+json; not compressed) of a collection Bundle holding one shared
/// DocumentReference and its content as Binary resources. Every request is audited (LinkAudit).
/// </summary>
public static class ShareManifest
{
    public const string FileType = "application/fhir+json";

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/shl/{id}", ManifestAsync).AllowAnonymous();
        app.MapGet("/shl/{id}", DirectFileAsync).AllowAnonymous();
        app.MapGet("/shl/file/{token}", FileAsync).AllowAnonymous();
        // SHL viewers are web apps on other origins: the manifest and files answer CORS requests.
        app.MapMethods("/shl/{id}", ["OPTIONS"], Preflight).AllowAnonymous();
        app.MapMethods("/shl/file/{token}", ["OPTIONS"], Preflight).AllowAnonymous();
    }

    static IResult Preflight(HttpContext ctx)
    {
        ctx.Response.Headers.AccessControlAllowOrigin = "*";
        ctx.Response.Headers.AccessControlAllowMethods = "GET, POST";
        ctx.Response.Headers.AccessControlAllowHeaders = "Content-Type";
        return Results.NoContent();
    }

    sealed record ManifestRequest(string Recipient, string? Passcode, int? EmbeddedLengthMax);

    static async Task<ManifestRequest> ReadRequestAsync(HttpContext ctx)
    {
        JsonElement body;
        try
        {
            if (ctx.Request.ContentLength > 64 * 1024) throw FhirError.BadRequest("The manifest request is larger than 64 KiB.");
            using var doc = await JsonDocument.ParseAsync(ctx.Request.Body, new JsonDocumentOptions { MaxDepth = 4 }, ctx.RequestAborted);
            body = doc.RootElement.Clone();
            if (body.ValueKind != JsonValueKind.Object) throw new JsonException();
        }
        catch (JsonException)
        {
            throw FhirError.BadRequest("The manifest request is a JSON object {\"recipient\": …, \"passcode\": …, \"embeddedLengthMax\": …} (SHL STU1). (JSON の形式が不正です)");
        }
        string? Text(string name) => body.TryGetProperty(name, out var v)
            ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw FhirError.BadRequest($"'{name}' is a string. ({name} は文字列です)", name)
            : null;
        var recipient = Text("recipient");
        // SHL: recipient is required — who is opening the link, shown to the person in their access log.
        if (string.IsNullOrWhiteSpace(recipient) || recipient.Length > 500 || recipient.Any(char.IsControl))
            throw FhirError.BadRequest("'recipient' (who opens the link, at most 500 characters) is required (SHL STU1). (recipient が必要です)", "recipient");
        int? max = null;
        if (body.TryGetProperty("embeddedLengthMax", out var m))
            max = m.ValueKind == JsonValueKind.Number && m.TryGetInt32(out var n) && n >= 0 ? n
                : throw FhirError.BadRequest("'embeddedLengthMax' is a non-negative integer. (embeddedLengthMax は 0 以上の整数です)", "embeddedLengthMax");
        return new ManifestRequest(recipient, Text("passcode"), max);
    }

    static async Task ManifestAsync(HttpContext ctx, FhirStore store, IOptions<SharingOptions> options, string id)
    {
        ctx.Response.Headers.AccessControlAllowOrigin = "*";
        var request = await ReadRequestAsync(ctx);
        var ct = ctx.RequestAborted;
        if (await LinkAccess.OpenAsync(ctx, store, options.Value, id, request.Recipient, request.Passcode, "shl-manifest") is not { } link) return;

        var files = new List<Dictionary<string, string>>();
        var locations = new List<(string Token, string Resource)>();
        var served = new List<string>();
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        foreach (var docId in link.Documents)
        {
            if (await LinkAccess.DocumentAsync(store, link, docId, ct) is not { } doc) continue;
            served.Add(doc.Key);
            if (request.EmbeddedLengthMax is { } max)
            {
                var jwe = await JweOfAsync(store, link, doc, baseUrl, ct);
                if (jwe.Length <= max)
                {
                    files.Add(new() { ["contentType"] = FileType, ["embedded"] = jwe });
                    continue;
                }
            }
            var token = LinkSecrets.NewId();
            locations.Add((token, doc.Key));
            files.Add(new() { ["contentType"] = FileType, ["location"] = $"{baseUrl}/shl/file/{token}" });
        }
        var minutes = Math.Clamp(options.Value.LocationMinutes, 1, 60); // SHL: location URLs live at most one hour
        await store.AddShareFilesAsync(locations, link.Id, request.Recipient, DateTimeOffset.UtcNow.AddMinutes(minutes), ct);
        await LinkAudit.RecordAsync(ctx, store, "shl-manifest", link, request.Recipient, 200, null, served);
        await ctx.Response.WriteAsJsonAsync(new { files }, ct);
    }

    /// <summary>A `location` URL: the file's JWE (or, for a VHL, the document's bytes), while it and its link live.</summary>
    static async Task FileAsync(HttpContext ctx, FhirStore store, string token)
    {
        ctx.Response.Headers.AccessControlAllowOrigin = "*";
        var ct = ctx.RequestAborted;
        var file = token.Length == 43 ? await store.ShareFileAsync(token, ct) : null;
        var code = file?.Resource.StartsWith("Binary/", StringComparison.Ordinal) == true ? "vhl-document" : "shl-file";
        var link = file is null || file.Expires <= DateTimeOffset.UtcNow ? null : await LinkAccess.LiveAsync(store, file.Link.Id, ct);
        var key = file?.Resource.Split('/');
        StoredResource? served = link is null || key is null ? null
            : key[0] == "DocumentReference" ? await LinkAccess.DocumentAsync(store, link, key[1], ct)
            : await BinaryOfLinkAsync(store, link, key[1], ct);
        if (served is null)
        {
            var gone = FhirError.NotFound("This file link is not known, has expired or its share link was revoked. (このファイルのリンクは無効です)");
            await LinkAudit.RecordAsync(ctx, store, code, file?.Link, file?.Recipient, 404, gone.Message, []);
            throw gone;
        }
        await LinkAudit.RecordAsync(ctx, store, code, link, file!.Recipient, 200, null, [served.Key]);
        if (served.Type == "Binary")
        {
            // VHL: ITI-68 Retrieve Document — the bytes with their own type.
            var info = (await store.ReadBinaryInfoAsync(served.Id, served.Version, ct))!;
            ctx.Response.ContentType = info.ContentType;
            ctx.Response.ContentLength = info.Size;
            if (info.Size > 0) await store.CopyBinaryAsync(served.Id, served.Version, info, 0, info.Size - 1, ctx.Response.Body, ct);
            return;
        }
        await WriteJoseAsync(ctx, await JweOfAsync(store, link!, served, FhirResponse.BaseUrl(ctx.Request), ct));
    }

    /// <summary>Flag U (SHL STU1): `GET {url}?recipient=…` answers the link's one file, no manifest.</summary>
    static async Task DirectFileAsync(HttpContext ctx, FhirStore store, IOptions<SharingOptions> options, string id)
    {
        ctx.Response.Headers.AccessControlAllowOrigin = "*";
        var recipient = ctx.Request.Query["recipient"].ToString();
        if (string.IsNullOrWhiteSpace(recipient) || recipient.Length > 500)
            throw FhirError.BadRequest("'recipient' (who opens the link, at most 500 characters) is required (SHL STU1). (recipient が必要です)", "recipient");
        var live = await LinkAccess.LiveAsync(store, id, ctx.RequestAborted);
        if (live is not null && !live.Flags.Contains('U'))
            throw FhirError.NotSupported("This link has no flag U: POST the manifest request to it. (このリンクは U フラグではありません)");
        if (await LinkAccess.OpenAsync(ctx, store, options.Value, id, recipient, null, "shl-file") is not { } link) return;
        if (await LinkAccess.DocumentAsync(store, link, link.Documents[0], ctx.RequestAborted) is not { } doc)
        {
            await LinkAudit.RecordAsync(ctx, store, "shl-file", link, recipient, 404, "The shared document is gone.", []);
            throw LinkAccess.Gone();
        }
        await LinkAudit.RecordAsync(ctx, store, "shl-file", link, recipient, 200, null, [doc.Key]);
        await WriteJoseAsync(ctx, await JweOfAsync(store, link, doc, FhirResponse.BaseUrl(ctx.Request), ctx.RequestAborted));
    }

    static async Task WriteJoseAsync(HttpContext ctx, string jwe)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/jose";
        await ctx.Response.WriteAsync(jwe, ctx.RequestAborted);
    }

    /// <summary>
    /// One shared document's file: encrypted now with the link's key, or — a pre-encrypted link, whose key the
    /// server does not have — the JWE stored at issue (revocation deletes it; the gate has already checked the
    /// link and that the document is still the person's).
    /// </summary>
    static async Task<string> JweOfAsync(FhirStore store, ShareLink link, StoredResource doc, string baseUrl, CancellationToken ct) =>
        link.ContentKey is { } key ? await EncryptFileAsync(store, doc, key, baseUrl, ct)
        : await store.ShareLinkFileAsync(link.Id, doc.Id, ct) ?? throw LinkAccess.Gone();

    /// <summary>A document's file: its content (<see cref="FileContentAsync"/>) as a compact JWE under <paramref name="key"/>.</summary>
    public static async Task<string> EncryptFileAsync(FhirStore store, StoredResource doc, byte[] key, string baseUrl, CancellationToken ct) =>
        LinkSecrets.Encrypt(await FileContentAsync(store, doc, baseUrl, ct), key, FileType);

    /// <summary>A Binary some shared document of the link points at (VHL location URLs name Binaries).</summary>
    public static async Task<StoredResource?> BinaryOfLinkAsync(FhirStore store, ShareLink link, string binaryId, CancellationToken ct)
    {
        foreach (var docId in link.Documents)
            if (await LinkAccess.DocumentAsync(store, link, docId, ct) is { } doc)
                foreach (var (_, binary) in await LinkAccess.ContentAsync(store, doc, (DocumentReference)FhirFormat.ParseStored(doc.Json), ct))
                    if (binary.Id == binaryId) return binary;
        return null;
    }

    /// <summary>
    /// One file's plaintext: a collection Bundle with the DocumentReference as stored and, for each
    /// attachment that is this server's Binary, a Binary resource holding the document's bytes (fullUrl =
    /// the attachment's url, so the viewer matches them).
    /// </summary>
    static async Task<byte[]> FileContentAsync(FhirStore store, StoredResource doc, string baseUrl, CancellationToken ct)
    {
        var reference = (DocumentReference)FhirFormat.ParseStored(doc.Json);
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Collection,
            Timestamp = DateTimeOffset.UtcNow,
            Entry = [new Bundle.EntryComponent { FullUrl = $"{baseUrl}/DocumentReference/{doc.Id}", Resource = reference }],
        };
        foreach (var (attachment, binary) in await LinkAccess.ContentAsync(store, doc, reference, ct))
        {
            var info = (await store.ReadBinaryInfoAsync(binary.Id, binary.Version, ct))!;
            using var bytes = new MemoryStream();
            if (info.Size > 0) await store.CopyBinaryAsync(binary.Id, binary.Version, info, 0, info.Size - 1, bytes, ct);
            bundle.Entry.Add(new Bundle.EntryComponent
            {
                FullUrl = attachment.Url!.Contains("://", StringComparison.Ordinal) ? attachment.Url : $"{baseUrl}/{attachment.Url}",
                Resource = new Binary { Id = binary.Id, ContentType = info.ContentType, Data = bytes.ToArray() },
            });
        }
        return FhirFormat.Serialize(bundle, WireFormat.Json);
    }
}
