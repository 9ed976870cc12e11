using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Sharing;

/// <summary>
/// The same link as an IHE VHL (Verifiable Health Link, ITI-YY5 Retrieve Manifest): an ITI-66-style
/// `POST [base]/List/_search` with `_id` = the link's folder id, `code=folder`, `status=current`,
/// `_include=List:item`, plus `recipient` and `passcode` as for the SHL manifest. The receiver
/// authenticates with its own token (VHL: the Sharer authenticates the Receiver); what it may read is
/// decided by the link alone, under the manifest's rules (passcode attempts, expiry, revocation, audit).
/// The DocumentReferences' attachment URLs are rewritten to `location` URLs (≤ 1 hour) where ITI-68
/// Retrieve Document serves the bytes.
/// </summary>
public static class VhlSearch
{
    /// <summary>A List search naming a `recipient` is a VHL request (recipient is no List search parameter).</summary>
    public static bool Applies(string type, List<KeyValuePair<string, string>> pairs) =>
        type == "List" && pairs.Any(p => p.Key == "recipient");

    public static async Task HandleAsync(HttpContext ctx, FhirStore store, SharingOptions options, List<KeyValuePair<string, string>> pairs)
    {
        string? One(string name) => pairs.Where(p => p.Key == name).Select(p => p.Value).ToList() switch
        {
            [] => null,
            [var v] => v,
            _ => throw FhirError.BadRequest($"A VHL search takes one '{name}'. ({name} は 1 つだけ指定します)", name),
        };
        foreach (var (name, _) in pairs)
            if (name is not ("_id" or "code" or "status" or "_include" or "recipient" or "passcode" or "_format"))
                throw FhirError.BadRequest($"A VHL folder search takes _id, code, status, _include, recipient and passcode only, not '{name}'. (VHL 検索で使えないパラメータです)", name);
        var id = One("_id") ?? throw FhirError.BadRequest("A VHL search names its folder in _id. (_id が必要です)", "_id");
        var recipient = One("recipient");
        if (string.IsNullOrWhiteSpace(recipient) || recipient.Length > 500)
            throw FhirError.BadRequest("'recipient' (who opens the link, at most 500 characters) is required. (recipient が必要です)", "recipient");
        if (One("code") is { } code && code is not ("folder" or Mhd.DocumentRegistry.ListTypes + "|folder"))
            throw FhirError.BadRequest("A VHL search is for code=folder. (code は folder です)", "code");
        if (One("status") is { } status && status != "current")
            throw FhirError.BadRequest("A VHL search is for status=current. (status は current です)", "status");
        var include = One("_include") switch
        {
            null => false,
            "List:item" => true,
            _ => throw FhirError.BadRequest("A VHL search includes with _include=List:item only. (_include は List:item のみです)", "_include"),
        };

        var ct = ctx.RequestAborted;
        if (await LinkAccess.LiveAsync(store, id, ct) is { PreEncrypted: true } sealedLink)
        {
            // ITI-68 serves a document's own bytes; a pre-encrypted link's server holds only JWEs it cannot
            // decrypt (docs/sharing.md, "Pre-encryption"), so the VHL form cannot serve it. Refused before the
            // passcode is checked: no attempt is spent on an answer that could never be given.
            var refused = new FhirError(System.Net.HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.NotSupported,
                "This link was pre-encrypted at issue: its documents are served only as encrypted SHL files through its manifest (POST to the link's url), not as a VHL folder. (事前暗号化されたリンクは VHL では取得できません。SHL マニフェストを使用してください)", "_id");
            await LinkAudit.RecordAsync(ctx, store, "vhl-search", sealedLink, recipient, 422, refused.Message, []);
            throw refused;
        }
        if (await LinkAccess.OpenAsync(ctx, store, options, id, recipient, One("passcode"), "vhl-search") is not { } link) return;
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var bundle = new Bundle { Type = Bundle.BundleType.Searchset, Timestamp = DateTimeOffset.UtcNow, Total = 1 };
        if (await store.ReadAsync("List", link.Id, ct) is { Deleted: false } folder)
            bundle.Entry.Add(new Bundle.EntryComponent
            {
                FullUrl = $"{baseUrl}/List/{link.Id}",
                Resource = FhirFormat.ParseStored(folder.Json),
                Search = new Bundle.SearchComponent { Mode = Bundle.SearchEntryMode.Match },
            });
        var served = new List<string>();
        var locations = new List<(string Token, string Resource)>();
        if (include)
            foreach (var docId in link.Documents)
            {
                if (await LinkAccess.DocumentAsync(store, link, docId, ct) is not { } doc) continue;
                var reference = (DocumentReference)FhirFormat.ParseStored(doc.Json);
                foreach (var (attachment, binary) in await LinkAccess.ContentAsync(store, doc, reference, ct))
                {
                    var token = LinkSecrets.NewId();
                    locations.Add((token, binary.Key));
                    attachment.Url = $"{baseUrl}/shl/file/{token}";
                }
                served.Add(doc.Key);
                bundle.Entry.Add(new Bundle.EntryComponent
                {
                    FullUrl = $"{baseUrl}/DocumentReference/{doc.Id}",
                    Resource = reference,
                    Search = new Bundle.SearchComponent { Mode = Bundle.SearchEntryMode.Include },
                });
            }
        await store.AddShareFilesAsync(locations, link.Id, recipient, DateTimeOffset.UtcNow.AddMinutes(Math.Clamp(options.LocationMinutes, 1, 60)), ct);
        await LinkAudit.RecordAsync(ctx, store, "vhl-search", link, recipient, 200, null, served);
        await FhirResponse.ResourceAsync(ctx, bundle, 200);
    }
}
