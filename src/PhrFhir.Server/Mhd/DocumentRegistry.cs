using System.Net;
using System.Text;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Mhd;

/// <summary>
/// The MHDS Document Registry rules that hold for every version of a DocumentReference or a List
/// written, whichever way it arrives: REST create, update, patch and their conditional forms, batch and
/// transaction entries, ITI-65, ITI-105, ITI-106. <see cref="ResourceWrites"/> calls <see cref="CheckAsync"/>
/// from its one staging point, after the access rule and before the version is queued, so a new write path
/// cannot skip them. Refusals carry the XDS error code (ITI TF-3 4.2.4.1) in issue.details, as MHD's
/// mapping does. Which rule applies where, and why: docs/mhd.md "Registry rules".
/// A rule is checked when what it looks at is new or changed in this version, so updating an old
/// document's other metadata never trips over a rule it met when it was registered.
/// </summary>
public sealed class DocumentRegistry(FhirStore store, IOptions<MhdOptions> options)
{
    public const string ListTypes = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";

    public static FhirError Error(string xdsCode, string message, string? expression, HttpStatusCode status = HttpStatusCode.UnprocessableEntity) =>
        new(status, OperationOutcome.IssueType.Processing, message, expression) { DetailCode = xdsCode };

    /// <summary>A SubmissionSet or a Folder: the Lists the registry owns (MHD 2:3.65.4.1.2.2).</summary>
    static bool IsRegistryList(List list) =>
        list.Code?.Coding.Any(c => c.System == ListTypes && c.Code is "submissionset" or "folder") == true;

    /// <summary><paramref name="current"/>: the version being replaced (null for a create).</summary>
    public async Task CheckAsync(WriteTransaction tx, ResourceWrites writes, Resource resource, StoredResource? current, CancellationToken ct)
    {
        if (resource is DocumentReference doc)
            await DocumentAsync(tx, writes, doc, Previous<DocumentReference>(current), ct);
        else if (resource is List list)
            await ListAsync(tx, list, Previous<List>(current), ct);
    }

    static T? Previous<T>(StoredResource? current) where T : Resource =>
        current is { Deleted: false } ? FhirFormat.ParseStored(current.Json) as T : null;

    async Task DocumentAsync(WriteTransaction tx, ResourceWrites writes, DocumentReference doc, DocumentReference? previous, CancellationToken ct)
    {
        if (doc.Subject is { } subject && (subject.Reference is null || subject.Reference != previous?.Subject?.Reference))
            await CheckPatientAsync(tx, subject, "DocumentReference.subject", ct);

        // MHDS: a document's uniqueId is unique in the registry, across everyone's documents.
        if (doc.MasterIdentifier is { Value: { } uid } master
            && (previous?.MasterIdentifier is not { } before || before.Value != uid || before.System != master.System))
        {
            // Serialise writers of the same uniqueId, then look: two racing copies cannot both pass
            // (the lock lasts until the transaction ends, by when the winner's row is committed).
            if (await OthersWithIdentifierAsync(tx, "mhd-uniqueid:" + uid, "DocumentReference", doc.Id, master.System, uid, [], ct))
                throw Error("XDSDuplicateUniqueIdInRegistry", $"A document with masterIdentifier '{uid}' is already registered. (同じ文書 ID が登録済みです)",
                    "DocumentReference.masterIdentifier", HttpStatusCode.Conflict);
        }

        for (var r = 0; r < doc.RelatesTo.Count; r++)
        {
            var relation = doc.RelatesTo[r];
            if (previous?.RelatesTo.Any(p => p.Code == relation.Code && p.Target?.Reference == relation.Target?.Reference) == true) continue;
            await RelatesToAsync(tx, writes, doc, relation, $"DocumentReference.relatesTo[{r}]", ct);
        }

        for (var c = 0; c < doc.Content.Count; c++)
        {
            var attachment = doc.Content[c].Attachment;
            if (attachment?.Url is not { } url || (attachment.SizeUnsignedInt is null && attachment.Hash is null)) continue;
            if (previous?.Content.Any(p => p.Attachment?.Url == url && p.Attachment.SizeUnsignedInt == attachment.SizeUnsignedInt
                    && (p.Attachment.Hash ?? []).AsSpan().SequenceEqual(attachment.Hash ?? [])) == true) continue;
            if (Local(url, tx.BaseUrl) is not { Type: "Binary" } binary) continue; // bytes elsewhere: nothing here to compare
            var at = $"DocumentReference.content[{c}].attachment";
            // A Binary this transaction is yet to write (a later entry) is compared once it is written.
            if (tx.Planned.Contains("Binary/" + binary.Id)) tx.Defer(t => CheckBytesAsync(tx, attachment, binary.Id, at, t));
            else await CheckBytesAsync(tx, attachment, binary.Id, at, ct);
        }
    }

    async Task ListAsync(WriteTransaction tx, List list, List? previous, CancellationToken ct)
    {
        // A List that contains itself describes nothing (and would make a SubmissionSet submit itself).
        for (var e = 0; e < list.Entry.Count; e++)
            if (Local(list.Entry[e].Item?.Reference, tx.BaseUrl) is { Type: "List" } item && item.Id == list.Id)
                throw Error("XDSRegistryMetadataError", "A List cannot list itself. (リストが自分自身を含んでいます)", $"List.entry[{e}].item");
        if (!IsRegistryList(list)) return;

        if (list.Subject is { } subject && (subject.Reference is null || subject.Reference != previous?.Subject?.Reference))
            await CheckPatientAsync(tx, subject, "List.subject", ct);

        // MHDS: a SubmissionSet's (and a Folder's) uniqueId, the identifier of use "usual", is unique in the registry.
        for (var i = 0; i < list.Identifier.Count; i++)
        {
            var id = list.Identifier[i];
            if (id.Use != Identifier.IdentifierUse.Usual || id.Value is null) continue;
            if (previous?.Identifier.Any(p => p.Use == Identifier.IdentifierUse.Usual && p.Value == id.Value && p.System == id.System) == true) continue;
            if (await OthersWithIdentifierAsync(tx, "mhd-list-uniqueid:" + id.Value, "List", list.Id, id.System, id.Value, [new("code", $"{ListTypes}|submissionset,{ListTypes}|folder")], ct))
                throw Error("XDSDuplicateUniqueIdInRegistry", $"A SubmissionSet or Folder with uniqueId '{id.Value}' is already registered. (同じ ID のリストが登録済みです)",
                    $"List.identifier[{i}]", HttpStatusCode.Conflict);
        }
    }

    /// <summary>
    /// True when a resource other than <paramref name="id"/> carries the identifier (and matches
    /// <paramref name="more"/>). Searched across everyone's resources (the rule spans them); the refusal names
    /// none of them. Writers of the same identifier are serialised first (<paramref name="lockKey"/>, held until
    /// the transaction ends): two racing copies cannot both pass, since the winner's row is committed when the
    /// other's search runs.
    /// </summary>
    /// <remarks>
    /// The identifier alone is looked up first, and <paramref name="more"/> only when something carries it. A new
    /// uniqueId (the usual case) is then one probe of the identifier's index entries, whatever PostgreSQL's
    /// statistics say: searched together, and with the tables not yet analysed after a burst of writes, the
    /// planner guessed one row for <c>code=submissionset</c> and walked every SubmissionSet instead (22 ms and
    /// 4,400 buffers per ITI-65, growing with each one; docs/performance.md, "Session 9").
    /// </remarks>
    async Task<bool> OthersWithIdentifierAsync(WriteTransaction tx, string lockKey, string type, string? id, string? system, string value,
        List<KeyValuePair<string, string>> more, CancellationToken ct)
    {
        static string Escape(string s) => s.Replace("\\", "\\\\").Replace(",", "\\,").Replace("|", "\\|").Replace("$", "\\$");
        var identifier = new KeyValuePair<string, string>("identifier", (system is null ? "" : Escape(system) + "|") + Escape(value));
        SearchQuery Query(List<KeyValuePair<string, string>> criteria) => new(store.SearchParameters, type, criteria, lenient: false, AccessFilter.Everything);
        var carriers = await tx.LockAndSearchAsync(lockKey, Query([identifier]), 2, ct);
        if (!carriers.Any(found => found.Id != id)) return false;
        return more.Count == 0 || (await tx.SearchAsync(Query([identifier, .. more]), 2, ct)).Any(found => found.Id != id);
    }

    /// <summary>"Type/id" of a reference to this server, relative or absolute (our base URL); null for another server's.</summary>
    static (string Type, string Id)? Local(string? reference, string? baseUrl) =>
        reference is null ? null
        : baseUrl is not null && reference.StartsWith(baseUrl + "/", StringComparison.Ordinal) ? ReferenceTarget.Local(reference[(baseUrl.Length + 1)..])
        : ReferenceTarget.Local(reference);

    /// <summary>MHDS: the subject is a Patient the registry knows (here, or at a trusted Patient Identity Source).</summary>
    async Task CheckPatientAsync(WriteTransaction tx, ResourceReference subject, string at, CancellationToken ct)
    {
        var reference = subject.Reference
            ?? throw Error("XDSUnknownPatientId", "The subject has no reference: it must reference a registered Patient (an identifier alone is not resolved here). (患者への参照がありません)", at);
        if (Local(reference, tx.BaseUrl) is null && reference.Contains("://", StringComparison.Ordinal))
        {
            // A Patient held by a Patient Identity Source this server trusts (PIXm/PMIR), referenced as is.
            if (options.Value.PatientIdentitySources.Any(b => reference.StartsWith(b.TrimEnd('/') + "/Patient/", StringComparison.Ordinal))) return;
            throw Error("XDSUnknownPatientId", $"The subject '{reference}' is on a server this registry does not trust for patient identity. (未知の患者です)", at);
        }
        if (Local(reference, tx.BaseUrl) is not { Type: "Patient" } target)
            throw Error("XDSUnknownPatientId", $"The subject '{reference}' is not a Patient reference. (患者への参照ではありません)", at);
        if (tx.Planned.Contains("Patient/" + target.Id)) return; // written by this transaction
        if (tx.ResolvedPatients.Contains("Patient/" + target.Id)) return; // named by identifier, under its own rule (Identity/IdentifierDomains.Subjects)
        if (tx.KnownPatients.Contains("Patient/" + target.Id)) return; // found by this rule for an earlier entry
        var (patient, visible) = await tx.ReadVisibleAsync("Patient", target.Id, ct);
        // A Patient the submitter cannot see is unknown to it, exactly like one that does not exist.
        if (patient is null || patient.Deleted || !visible)
            throw Error("XDSUnknownPatientId", $"Patient/{target.Id} is not known to this server: register the patient first (or resolve it by identifier). (未登録の患者です)", at);
        tx.KnownPatients.Add("Patient/" + target.Id);
    }

    /// <summary>MHDS: replaces supersedes its target atomically; a target that is no longer current cannot be replaced (nor appended to, nor transformed).</summary>
    static async Task RelatesToAsync(WriteTransaction tx, ResourceWrites writes, DocumentReference doc, DocumentReference.RelatesToComponent relation, string at, CancellationToken ct)
    {
        if (Local(relation.Target?.Reference, tx.BaseUrl) is not { Type: "DocumentReference" } target)
            throw Error("XDSRegistryMetadataError", "relatesTo.target must reference a DocumentReference of this registry. (関連文書の参照が不正です)", at + ".target", HttpStatusCode.BadRequest);
        if (target.Id == doc.Id)
            throw Error("XDSRegistryMetadataError", "A document cannot relate to itself. (文書が自分自身を参照しています)", at + ".target");
        if (tx.Planned.Contains("DocumentReference/" + target.Id)) return; // registered by this same transaction: nothing to supersede yet
        var (stored, visible) = await tx.ReadVisibleAsync("DocumentReference", target.Id, ct);
        // A document the requester may not see answers exactly like one that does not exist.
        if (stored is null || stored.Deleted || !visible)
            throw Error("UnresolvedReferenceException", $"relatesTo.target DocumentReference/{target.Id} is not in the registry. (関連文書が登録されていません)", at + ".target");
        var original = (DocumentReference)FhirFormat.ParseStored(stored.Json);
        if (original.Status != DocumentReferenceStatus.Current)
            throw Error("XDSRegistryMetadataError",
                $"DocumentReference/{target.Id} is {original.Status?.ToString().ToLowerInvariant()}: only a current document can be {relation.Code?.ToString().ToLowerInvariant()}d. (現行版ではない文書は置換できません)",
                at + ".target");
        if (relation.Code == DocumentRelationshipType.Replaces)
        {
            original.Status = DocumentReferenceStatus.Superseded;
            await writes.UpdateAsync(tx, "DocumentReference", target.Id, original, stored.Version, ct);
        }
    }

    /// <summary>
    /// attachment.size and attachment.hash equal the bytes, where the bytes are a Binary of this server the
    /// requester may read (one it may not read is not looked at: a refusal would tell its size and hash).
    /// </summary>
    static async Task CheckBytesAsync(WriteTransaction tx, Attachment attachment, string binaryId, string at, CancellationToken ct)
    {
        // Bytes this transaction wrote (the Binary entry of the same ITI-65): compared with what was hashed as they were
        // stored, instead of flushing the transaction and reading them back in two more round trips. They are the
        // requester's own, so the comparison tells nothing an access rule hides.
        if (tx.BinaryWritten(binaryId) is { } written)
        {
            CheckBytes(attachment, written.Size, written.Sha1, at);
            return;
        }
        var (stored, visible) = await tx.ReadVisibleAsync("Binary", binaryId, ct);
        if (stored is null || stored.Deleted || !visible) return;
        if (await tx.ReadBinaryInfoAsync(binaryId, stored.Version, ct) is not { } info) return;
        CheckBytes(attachment, info.Size, info.Sha1, at);
    }

    /// <summary>MHD 2:3.65.4.1.3: size is the byte count; hash is the SHA-1 of the bytes.</summary>
    public static void CheckBytes(Attachment attachment, long size, byte[] sha1, string at)
    {
        if (attachment.SizeUnsignedInt is { } stated && stated != size) // R4 size is unsignedInt; the SDK's Size is the R5 integer64
            throw Error("XDSNonIdenticalSize", $"attachment.size is {stated} but the document has {size} bytes. (サイズが一致しません)", at + ".size");
        if (attachment.Hash is { } hash && !HashMatches(hash, sha1))
            throw Error("XDSNonIdenticalHash", "attachment.hash is not the SHA-1 of the document. (ハッシュ値が一致しません)", at + ".hash");
    }

    /// <summary>
    /// FHIR defines attachment.hash as the base64 of the SHA-1 bytes. Every IHE MHD 4.2.3 example instead
    /// carries base64 of the SHA-1's hex text (docs/mhd.md shows the evidence); both are accepted so
    /// that conformant and example-trained senders work, and anything else is a mismatch.
    /// </summary>
    static bool HashMatches(byte[] hash, byte[] sha1) =>
        hash.AsSpan().SequenceEqual(sha1)
        || hash.AsSpan().SequenceEqual(Encoding.ASCII.GetBytes(Convert.ToHexString(sha1).ToLowerInvariant()));
}
