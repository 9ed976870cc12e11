using System.Net;
using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Audit;
using PhrFhir.Server.Rest;
using PhrFhir.Server.Security;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using QRCoder;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Sharing;

/// <summary>
/// The person's side of sharing (docs/sharing.md): `POST Patient/{id}/$share` issues a SMART Health Link
/// (SHL STU1) for chosen DocumentReferences, recorded in one transaction as an IHE PCF Consent, a folder
/// List and the link row; `GET Patient/{id}/$share` lists the person's links; `DELETE
/// Patient/{id}/$share/{link}` revokes one at once. The recipient's side is <see cref="ShareManifest"/>.
/// </summary>
public static class ShareEndpoints
{
    /// <summary>The Consent's actor: whoever holds the link (no token names it, so it grants no token anything).</summary>
    public const string LinkHolderSystem = "urn:phrfhir:share-link";

    /// <summary>$share as GET /metadata declares it on Patient (OperationDefinition Patient-share in profiles/phrfhir.r4).</summary>
    public static CapabilityStatement.OperationComponent Operation => new()
    {
        Name = "share",
        Definition = "http://phrfhir.example/fhir/OperationDefinition/Patient-share",
        Documentation = "SMART Health Links (docs/sharing.md): POST Patient/{id}/$share issues a link to chosen DocumentReferences (a PCF Consent, " +
                        "a folder List, the shlink:/ URI and its QR code); GET Patient/{id}/$share lists the person's links; " +
                        "DELETE Patient/{id}/$share/{link} revokes one. The recipient opens it at /shl/{link} without a token.",
    };

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/Patient/{id}/$share", ShareAsync).WithMetadata(new FhirAccess(Interaction.Create, "Consent"));
        app.MapGet("/Patient/{id}/$share", ListAsync).WithMetadata(new FhirAccess(Interaction.Read, "Consent"));
        app.MapDelete("/Patient/{id}/$share/{link}", RevokeAsync).WithMetadata(new FhirAccess(Interaction.Update, "Consent"));
        ShareManifest.Map(app);
    }

    /// <summary>Only the person, for their own Patient, or the operator on their behalf (audited as any write).</summary>
    static async Task<AccessPolicy> SharerAsync(HttpContext ctx, FhirStore store, string patient)
    {
        var policy = await AccessPolicy.OfAsync(ctx, store);
        if (policy.Role is not ("person" or "operator") || policy.Role == "person" && policy.Person != patient)
            throw new FhirError(HttpStatusCode.Forbidden, OperationOutcome.IssueType.Forbidden,
                "Only the person shares their own documents (or the operator on their behalf). (本人の文書は本人のみが共有できます)");
        if (await store.ReadAsync("Patient", patient, ctx.RequestAborted) is not { Deleted: false })
            throw FhirError.NotFound($"Patient/{patient} is not known. (リソースがありません)");
        return policy;
    }

    sealed record ShareRequest(List<string> Documents, string? Passcode, DateTimeOffset? Expires, string? Label, bool LongTerm, bool DirectFile, bool? PreEncrypt, string? Link);

    static ShareRequest Parse(Resource body)
    {
        if (body is not Parameters p)
            throw FhirError.BadRequest("$share takes a Parameters resource. ($share の本文は Parameters です)", "resourceType");
        var documents = new List<string>();
        string? passcode = null, label = null;
        DateTimeOffset? expires = null;
        bool longTerm = false, directFile = false;
        bool? preEncrypt = null;
        string? link = null;
        for (var i = 0; i < p.Parameter.Count; i++)
        {
            var at = $"Parameters.parameter[{i}]";
            var parameter = p.Parameter[i];
            switch (parameter.Name)
            {
                case "documentReference":
                    documents.Add(parameter.Value is ResourceReference { Reference: { } r } && ReferenceTarget.Local(r) is { Type: "DocumentReference" } t ? t.Id
                        : throw FhirError.BadRequest("documentReference is a reference to a DocumentReference (\"DocumentReference/{id}\"). (DocumentReference への参照が必要です)", at + ".valueReference"));
                    break;
                case "passcode":
                    passcode = parameter.Value is FhirString { Value: { Length: >= 4 and <= 100 } s } ? s
                        : throw FhirError.BadRequest("passcode is a string of 4 to 100 characters. (パスコードは 4〜100 文字です)", at + ".valueString");
                    break;
                case "expires":
                    expires = parameter.Value switch
                    {
                        Instant { Value: { } v } => v,
                        FhirDateTime d when d.TryToDateTimeOffset(out var v) && d.Value?.Length > 10 => v,
                        _ => throw FhirError.BadRequest("expires is an instant with a time zone (e.g. 2026-12-31T23:59:59+09:00). (有効期限の形式が不正です)", at),
                    };
                    if (expires <= DateTimeOffset.UtcNow)
                        throw FhirError.BadRequest("expires is in the past. (有効期限が過去です)", at);
                    break;
                case "label":
                    // SHL STU1: label is at most 80 characters.
                    label = parameter.Value is FhirString { Value: { Length: >= 1 and <= 80 } l } ? l
                        : throw FhirError.BadRequest("label is a string of at most 80 characters (SHL). (ラベルは 80 文字までです)", at + ".valueString");
                    break;
                case "longTerm":
                    longTerm = parameter.Value is FhirBoolean { Value: { } lt } ? lt : throw FhirError.BadRequest("longTerm is a boolean.", at + ".valueBoolean");
                    break;
                case "directFile":
                    directFile = parameter.Value is FhirBoolean { Value: { } df } ? df : throw FhirError.BadRequest("directFile is a boolean.", at + ".valueBoolean");
                    break;
                case "link":
                    link = parameter.Value is FhirString { Value: { Length: > 0 } li } ? li : throw FhirError.BadRequest("link is the id of one of the person's links.", at + ".valueString");
                    break;
                case "preEncrypt":
                    preEncrypt = parameter.Value is FhirBoolean { Value: { } pe } ? pe : throw FhirError.BadRequest("preEncrypt is a boolean.", at + ".valueBoolean");
                    break;
                default:
                    throw FhirError.BadRequest($"$share has no parameter '{parameter.Name}' (documentReference, passcode, expires, label, longTerm, directFile, preEncrypt, link). (不明なパラメータです)", at + ".name");
            }
        }
        if (documents.Count == 0)
            throw FhirError.BadRequest("$share needs at least one documentReference. (共有する文書を指定してください)", "Parameters.parameter");
        if (documents.Count > 100)
            throw FhirError.BadRequest("$share shares at most 100 documents per link. (1 つのリンクで共有できる文書は 100 件までです)", "Parameters.parameter");
        // Adding to an existing link changes its documents only: its flags, passcode, expiry and label stay as issued.
        if (link is not null && p.Parameter.Any(x => x.Name is not ("documentReference" or "link")))
            throw FhirError.BadRequest("With link (adding documents to a long-term link), $share takes documentReference only. (link 指定時は documentReference のみ指定できます)", "Parameters.parameter");
        // SHL STU1: flag U (a single file fetched directly) cannot be combined with P, nor with L.
        if (directFile && passcode is not null)
            throw FhirError.BadRequest("directFile (flag U) cannot be combined with a passcode (flag P): SHL STU1. (U と P は併用できません)", "Parameters.parameter");
        if (directFile && (longTerm || documents.Distinct().Count() != 1))
            throw FhirError.BadRequest("directFile (flag U) serves exactly one document and is not long-term. (U は 1 文書のみ、長期リンク不可です)", "Parameters.parameter");
        // A long-term link's set and contents follow the documents (SHL: L links may be polled for updates);
        // files encrypted once at issue cannot, and without the key the server cannot encrypt new ones.
        if (preEncrypt == true && longTerm)
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule,
                "preEncrypt cannot be combined with longTerm (flag L): a pre-encrypted link is a snapshot taken at issue and the server keeps no key to encrypt updates. (事前暗号化は長期リンクと併用できません)",
                "Parameters.parameter");
        return new ShareRequest([.. documents.Distinct()], passcode, expires, label, longTerm, directFile, preEncrypt, link);
    }

    static async Task ShareAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, IOptions<SharingOptions> options, string id)
    {
        AccessControl.Demand(ctx.User, Interaction.Create, "List"); // the folder List
        await SharerAsync(ctx, store, id);
        var request = Parse(await FhirFormat.ReadResourceAsync(ctx.Request, limits.Value, ctx.RequestAborted));
        var ct = ctx.RequestAborted;
        foreach (var doc in request.Documents)
            // Only the patient's own documents; anyone else's answers exactly as a missing one.
            if (await store.ReadAsync("DocumentReference", doc, ct) is not { Deleted: false } stored || stored.Person != id)
                throw FhirError.NotFound($"DocumentReference/{doc} is not a document of Patient/{id}. (この患者の文書ではありません)");
        if (request.Link is { } existing)
        {
            await AddToLinkAsync(ctx, store, writes, id, existing, request.Documents);
            return;
        }

        var linkId = LinkSecrets.NewId();
        var key = LinkSecrets.NewKey();
        var now = DateTimeOffset.UtcNow;
        var url = $"{FhirResponse.BaseUrl(ctx.Request)}/shl/{linkId}";
        // Pre-encryption (docs/sharing.md): each file encrypted now, only the ciphertext kept, the key forgotten.
        // Sharing:PreEncrypt makes it the default for links that are not long-term.
        var preEncrypt = request.PreEncrypt ?? (options.Value.PreEncrypt && !request.LongTerm);
        var files = new List<(string Document, string Jwe)>();
        if (preEncrypt)
            foreach (var doc in request.Documents)
                files.Add((doc, await ShareManifest.EncryptFileAsync(store, (await store.ReadAsync("DocumentReference", doc, ct))!, key, FhirResponse.BaseUrl(ctx.Request), ct)));
        var flags = (request.LongTerm ? "L" : "") + (request.Passcode is not null ? "P" : "") + (request.DirectFile ? "U" : "");
        var consent = new Consent
        {
            Status = Consent.ConsentState.Active,
            Scope = new CodeableConcept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
            Category = [new CodeableConcept("http://loinc.org", "59284-0", "Patient Consent")],
            Patient = new ResourceReference("Patient/" + id),
            DateTime = now.ToString("yyyy-MM-ddTHH:mm:ssK", System.Globalization.CultureInfo.InvariantCulture),
            Policy = [new Consent.PolicyComponent { Uri = "https://hl7.org/fhir/uv/smart-health-cards-and-links/links-specification.html" }],
            Provision = new Consent.provisionComponent
            {
                Type = Consent.ConsentProvisionType.Permit,
                Period = new Period { StartElement = new FhirDateTime(now), EndElement = request.Expires is { } e ? new FhirDateTime(e) : null },
                Actor =
                [
                    new Consent.provisionActorComponent
                    {
                        Role = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient"),
                        Reference = new ResourceReference { Identifier = new Identifier(LinkHolderSystem, linkId), Display = "holder of this link (リンクの保持者)" },
                    },
                ],
                Action = [new CodeableConcept("http://terminology.hl7.org/CodeSystem/consentaction", "access")],
                Data = [.. request.Documents.Select(d => new Consent.provisionDataComponent { Meaning = Consent.ConsentDataMeaning.Instance, Reference = new ResourceReference("DocumentReference/" + d) })],
            },
        };
        var folder = new List
        {
            Status = List.ListStatus.Current,
            Mode = ListMode.Working,
            Title = request.Label ?? "共有リンク",
            Code = new CodeableConcept(Mhd.DocumentRegistry.ListTypes, "folder"),
            Subject = new ResourceReference("Patient/" + id),
            Date = now.ToString("yyyy-MM-ddTHH:mm:ssK", System.Globalization.CultureInfo.InvariantCulture),
            Identifier = [new Identifier("urn:ietf:rfc:3986", "urn:uuid:" + Guid.NewGuid()) { Use = Identifier.IdentifierUse.Usual }],
            Entry = [.. request.Documents.Select(d => new List.EntryComponent { Item = new ResourceReference("DocumentReference/" + d) })],
        };

        await using var tx = await ctx.BeginAuditedWriteAsync();
        var storedConsent = (await writes.CreateAsync(tx, consent, null, ct)).Stored;
        await writes.CreateAsync(tx, folder, null, ct, assignedId: linkId);
        tx.InsertShareLink(new ShareLink(linkId, id, storedConsent.Id, preEncrypt ? null : key, request.Passcode is { } pc ? LinkSecrets.HashPasscode(pc) : null,
            request.Passcode is null ? null : options.Value.PasscodeAttempts, flags, request.Label, request.Expires, [.. request.Documents], now, null, 0, preEncrypt));
        if (preEncrypt) tx.InsertShareLinkFiles(linkId, files);
        await tx.CommitAsync(ct);

        var shlink = Shlink(url, key, request.Expires, flags, request.Label);
        await FhirResponse.ResourceAsync(ctx, new Parameters
        {
            Parameter =
            [
                new() { Name = "shlink", Value = new FhirString(shlink) },
                new() { Name = "qr", Value = new Attachment { ContentType = "image/png", Data = QrPng(shlink), Title = request.Label } },
                new() { Name = "link", Value = new FhirString(linkId) },
                new() { Name = "url", Value = new FhirUrl(url) },
                new() { Name = "consent", Value = new ResourceReference("Consent/" + storedConsent.Id) },
                new() { Name = "folder", Value = new ResourceReference("List/" + linkId) },
            ],
        }, 201);
    }

    /// <summary>
    /// `$share` with `link`: more documents for a long-term link (SHL flag L: "the SHLink may be updated"), in one
    /// transaction — the link row, its Consent's provision.data and its folder List — so the next manifest request
    /// lists them. Only the person's own active L link (another's, a revoked or unknown one: 404); a link that is not
    /// long-term is a fixed set its recipient was promised (422). The answer repeats the link's shlink.
    /// </summary>
    static async Task AddToLinkAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, string patient, string linkId, List<string> documents)
    {
        var ct = ctx.RequestAborted;
        var link = await LinkAccess.LiveAsync(store, linkId, ct);
        if (link is null || link.Patient != patient)
            throw FhirError.NotFound($"Patient/{patient} has no active link '{linkId}'. (有効な共有リンクがありません)");
        if (!link.Flags.Contains('L') || link.ContentKey is not { } key)
            throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.BusinessRule,
                "Documents are added only to a long-term link (flag L); this link's set was fixed when it was issued: share them with a new link. (文書を追加できるのは長期リンク (L) のみです)", "Parameters.parameter");
        var added = documents.Where(d => !link.Documents.Contains(d)).ToList();
        if (link.Documents.Length + added.Count > 100)
            throw FhirError.BadRequest("A link shares at most 100 documents. (1 つのリンクで共有できる文書は 100 件までです)", "Parameters.parameter");

        await using var tx = await ctx.BeginAuditedWriteAsync();
        if (added.Count > 0)
        {
            if (!await tx.AddShareLinkDocumentsAsync(linkId, patient, [.. added], ct))
                throw FhirError.NotFound($"Patient/{patient} has no active link '{linkId}'. (有効な共有リンクがありません)");
            if (await tx.ReadAsync("Consent", link.Consent, ct) is { Deleted: false } storedConsent)
            {
                var consent = (Consent)FhirFormat.ParseStored(storedConsent.Json);
                (consent.Provision ??= new Consent.provisionComponent()).Data.AddRange(added.Select(d => new Consent.provisionDataComponent { Meaning = Consent.ConsentDataMeaning.Instance, Reference = new ResourceReference("DocumentReference/" + d) }));
                await writes.UpdateAsync(tx, "Consent", link.Consent, consent, null, ct);
            }
            if (await tx.ReadAsync("List", linkId, ct) is { Deleted: false } storedList)
            {
                var folder = (List)FhirFormat.ParseStored(storedList.Json);
                folder.Entry.AddRange(added.Select(d => new List.EntryComponent { Item = new ResourceReference("DocumentReference/" + d) }));
                await writes.UpdateAsync(tx, "List", linkId, folder, null, ct);
            }
        }
        await tx.CommitAsync(ct);
        var url = $"{FhirResponse.BaseUrl(ctx.Request)}/shl/{linkId}";
        await FhirResponse.ResourceAsync(ctx, new Parameters
        {
            Parameter =
            [
                new() { Name = "shlink", Value = new FhirString(Shlink(url, key, link.Expires, link.Flags, link.Label)) },
                new() { Name = "link", Value = new FhirString(linkId) },
                new() { Name = "url", Value = new FhirUrl(url) },
                new() { Name = "consent", Value = new ResourceReference("Consent/" + link.Consent) },
                new() { Name = "folder", Value = new ResourceReference("List/" + linkId) },
                .. link.Documents.Concat(added).Select(d => new Parameters.ParameterComponent { Name = "documentReference", Value = new ResourceReference("DocumentReference/" + d) }),
            ],
        }, 200);
    }

    /// <summary>SHL STU1 "Construct a SHLink Payload": shlink:/ + base64url of {url, key, exp, flag, label, v}.</summary>
    public static string Shlink(string url, byte[] key, DateTimeOffset? expires, string flags, string? label)
    {
        var payload = new Dictionary<string, object> { ["url"] = url, ["key"] = System.Buffers.Text.Base64Url.EncodeToString(key) };
        if (expires is { } e) payload["exp"] = e.ToUnixTimeSeconds();
        if (flags.Length > 0) payload["flag"] = flags; // letters in alphabetical order: L, P, U
        if (label is not null) payload["label"] = label;
        payload["v"] = 1;
        return "shlink:/" + System.Buffers.Text.Base64Url.EncodeToString(JsonSerializer.SerializeToUtf8Bytes(payload));
    }

    /// <summary>The QR code of the link (SHL: error correction level M), as a PNG.</summary>
    static byte[] QrPng(string shlink)
    {
        using var generator = new QRCodeGenerator();
        using var data = generator.CreateQrCode(shlink, QRCodeGenerator.ECCLevel.M);
        return new PngByteQRCode(data).GetGraphic(6);
    }

    /// <summary>The person's links: what each shares, until when, with or without passcode, how often opened, revoked or not.</summary>
    static async Task ListAsync(HttpContext ctx, FhirStore store, string id)
    {
        await SharerAsync(ctx, store, id);
        AuditTrail.Concerns(ctx, [id]);
        var links = await store.ShareLinksOfAsync(id, ctx.RequestAborted);
        var result = new Parameters();
        foreach (var link in links)
        {
            var live = await LinkAccess.LiveAsync(store, link.Id, ctx.RequestAborted) is not null;
            var part = new Parameters.ParameterComponent { Name = "link" };
            part.Part.Add(new() { Name = "id", Value = new FhirString(link.Id) });
            if (link.Label is not null) part.Part.Add(new() { Name = "label", Value = new FhirString(link.Label) });
            foreach (var d in link.Documents) part.Part.Add(new() { Name = "documentReference", Value = new ResourceReference("DocumentReference/" + d) });
            part.Part.Add(new() { Name = "created", Value = new Instant(link.Created) });
            if (link.Expires is { } e) part.Part.Add(new() { Name = "expires", Value = new Instant(e) });
            part.Part.Add(new() { Name = "passcode", Value = new FhirBoolean(link.PasscodeHash is not null) });
            if (link.AttemptsLeft is { } left) part.Part.Add(new() { Name = "attemptsLeft", Value = new Integer(left) });
            if (link.Flags.Length > 0) part.Part.Add(new() { Name = "flag", Value = new FhirString(link.Flags) });
            part.Part.Add(new() { Name = "preEncrypted", Value = new FhirBoolean(link.PreEncrypted) });
            part.Part.Add(new() { Name = "timesOpened", Value = new Integer(link.Opened) });
            part.Part.Add(new() { Name = "revoked", Value = new FhirBoolean(link.Revoked is not null) });
            part.Part.Add(new() { Name = "active", Value = new FhirBoolean(live) });
            part.Part.Add(new() { Name = "consent", Value = new ResourceReference("Consent/" + link.Consent) });
            result.Parameter.Add(part);
        }
        await FhirResponse.ResourceAsync(ctx, result, 200);
    }

    /// <summary>
    /// Revocation at once: the link row, its Consent (inactive) and its folder List (retired) in one
    /// transaction; the next manifest or `location` request answers 404.
    /// </summary>
    static async Task RevokeAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, string id, string link)
    {
        await SharerAsync(ctx, store, id);
        var ct = ctx.RequestAborted;
        await using var tx = await ctx.BeginAuditedWriteAsync();
        if (!await tx.RevokeShareLinkAsync(link, id, ct))
            throw FhirError.NotFound($"Patient/{id} has no active link '{link}'. (有効な共有リンクがありません)");
        var row = await store.ShareLinkAsync(link, ct);
        if (await tx.ReadAsync("Consent", row!.Consent, ct) is { Deleted: false } stored)
        {
            var consent = (Consent)FhirFormat.ParseStored(stored.Json);
            consent.Status = Consent.ConsentState.Inactive;
            await writes.UpdateAsync(tx, "Consent", row.Consent, consent, null, ct);
        }
        if (await tx.ReadAsync("List", link, ct) is { Deleted: false } storedList)
        {
            var folder = (List)FhirFormat.ParseStored(storedList.Json);
            folder.Status = List.ListStatus.Retired;
            await writes.UpdateAsync(tx, "List", link, folder, null, ct);
        }
        await tx.CommitAsync(ct);
        ctx.Response.StatusCode = 204;
    }
}
