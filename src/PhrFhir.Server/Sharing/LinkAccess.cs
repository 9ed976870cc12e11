using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Sharing;

/// <summary>Configuration section `Sharing` (docs/sharing.md).</summary>
public sealed class SharingOptions
{
    /// <summary>Wrong passcodes allowed over a link's whole life; then the link is dead (404).</summary>
    public int PasscodeAttempts { get; set; } = 5;
    /// <summary>How long a manifest's `location` URLs live (SHL: at most one hour).</summary>
    public int LocationMinutes { get; set; } = 60;
    /// <summary>L links: the least time between two manifest requests; sooner is 429 with Retry-After.</summary>
    public int LongTermPollSeconds { get; set; } = 10;
    /// <summary>Links that are not long-term are pre-encrypted at issue unless `$share` says preEncrypt=false.</summary>
    public bool PreEncrypt { get; set; }
}

/// <summary>
/// The gate every use of a link passes (manifest, U file, VHL search): the link exists, is not revoked,
/// expired or locked, its Consent is still active, the passcode is right — else the same 404 whatever the
/// reason (SHL: "no longer valid"), or 401 with the attempts left. Each refusal is audited here.
/// </summary>
public static class LinkAccess
{
    public static FhirError Gone() => FhirError.NotFound("This link is not known, has expired or was revoked. (このリンクは無効です)");

    /// <summary>The link when it may be used now, its Consent included; null otherwise.</summary>
    public static async Task<ShareLink?> LiveAsync(FhirStore store, string id, CancellationToken ct)
    {
        if (id.Length != 43 || await store.ShareLinkAsync(id, ct) is not { } link || !link.Live(DateTimeOffset.UtcNow)) return null;
        return await ConsentActiveAsync(store, link, ct) ? link : null;
    }

    /// <summary>
    /// The link is its Consent (IHE PCF): the person revoking it (status no longer active, deleted, or its
    /// period over) stops the link at once, as it stops every other access it grants.
    /// </summary>
    static async Task<bool> ConsentActiveAsync(FhirStore store, ShareLink link, CancellationToken ct)
    {
        if (await store.ReadAsync("Consent", link.Consent, ct) is not { Deleted: false } stored) return false;
        var consent = (Consent)FhirFormat.ParseStored(stored.Json);
        return consent.Status == Consent.ConsentState.Active
            && (consent.Provision?.Period?.EndElement?.ToDateTimeOffset(TimeSpan.Zero) is not { } end || end > DateTimeOffset.UtcNow);
    }

    /// <summary>
    /// Opens the link for one request: the link when allowed; null when the answer (401) is already written.
    /// Throws the 404 and 429 after recording them.
    /// </summary>
    public static async Task<ShareLink?> OpenAsync(HttpContext ctx, FhirStore store, SharingOptions options, string id, string recipient, string? passcode, string eventCode)
    {
        var ct = ctx.RequestAborted;
        var link = await LiveAsync(store, id, ct);
        if (link is null)
        {
            var gone = Gone();
            await LinkAudit.RecordAsync(ctx, store, eventCode, id.Length == 43 ? await store.ShareLinkAsync(id, ct) : null, recipient, 404, gone.Message, []);
            throw gone;
        }
        if (link.PasscodeHash is { } hash && !LinkSecrets.PasscodeMatches(hash, passcode))
        {
            // One attempt fewer, atomically (several guesses in parallel each take their own).
            var left = await store.ShareLinkFailedAttemptAsync(id, ct);
            var failure = left is null ? Gone() : null;
            await LinkAudit.RecordAsync(ctx, store, eventCode, link, recipient, left is null ? 404 : 401,
                left is null ? failure!.Message : $"Wrong passcode; {left} attempts left. (パスコードが違います)", []);
            if (failure is not null) throw failure;
            // SHL STU1: 401 with a JSON body {"remainingAttempts": n}.
            ctx.Response.StatusCode = 401;
            await ctx.Response.WriteAsJsonAsync(new { remainingAttempts = left }, ct);
            return null;
        }
        if (!await store.ShareLinkOpenedAsync(id, link.Flags.Contains('L') ? TimeSpan.FromSeconds(options.LongTermPollSeconds) : null, ct))
        {
            // SHL: a long-term link's manifest may be polled for updates, but not too often.
            var tooSoon = new FhirError((HttpStatusCode)429, OperationOutcome.IssueType.Throttled,
                $"This link was polled less than {options.LongTermPollSeconds} seconds ago; retry later. (アクセスが頻繁すぎます)")
            { RetryAfterSeconds = options.LongTermPollSeconds };
            await LinkAudit.RecordAsync(ctx, store, eventCode, link, recipient, 429, tooSoon.Message, []);
            throw tooSoon;
        }
        return link;
    }

    /// <summary>
    /// A shared DocumentReference as it is now, if it is still the patient's and not deleted (a document
    /// deleted or moved since the link was issued is no longer served).
    /// </summary>
    public static async Task<StoredResource?> DocumentAsync(FhirStore store, ShareLink link, string id, CancellationToken ct) =>
        await store.ReadAsync("DocumentReference", id, ct) is { Deleted: false } doc && doc.Person == link.Patient ? doc : null;

    /// <summary>
    /// The Binaries a shared document's attachments point at, when they are the same patient's and were
    /// written by the document's writer (the rule that lets a Binary be seen through its document:
    /// a forged attachment.url reaches nobody else's bytes).
    /// </summary>
    public static async Task<List<(Attachment Attachment, StoredResource Binary)>> ContentAsync(FhirStore store, StoredResource doc, DocumentReference reference, CancellationToken ct)
    {
        var found = new List<(Attachment, StoredResource)>();
        foreach (var attachment in reference.Content.Select(c => c.Attachment).OfType<Attachment>())
            if (attachment.Url is { } url && ReferenceTarget.Parse(url) is { Type: "Binary" } target
                && await store.ReadAsync("Binary", target.Id, ct) is { Deleted: false } binary
                && binary.Person == doc.Person && binary.Writer == doc.Writer)
                found.Add((attachment, binary));
        return found;
    }
}
