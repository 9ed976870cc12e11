using System.Net;
using System.Security.Cryptography;
using System.Text;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Mhd;

/// <summary>
/// IHE MHD ITI-65 Provide Document Bundle, Document Recipient with the MHDS Document Registry rules:
/// a transaction Bundle declaring an MHD ProvideBundle profile is checked as MHD 4.2 (2:3.65.4.1.3)
/// and the MHDS registry require, then stored as one database transaction — all or nothing. Errors
/// carry the XDS error code (ITI TF-3 4.2.4.1) in issue.details, as MHD's mapping does.
/// </summary>
public static class ProvideDocumentBundle
{
    const string Profiles = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    static readonly string[] BundleProfiles =
        [Profiles + "IHE.MHD.Minimal.ProvideBundle", Profiles + "IHE.MHD.Comprehensive.ProvideBundle", Profiles + "IHE.MHD.UnContained.Comprehensive.ProvideBundle"];
    const string ListTypes = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes";

    public static bool Declares(Bundle bundle) =>
        bundle.Meta?.Profile?.Any(p => p is not null && BundleProfiles.Contains(p.Split('|')[0])) == true;

    /// <summary>
    /// A transaction carrying a SubmissionSet is an ITI-65 submission whatever it declares: one that
    /// does not declare a ProvideBundle profile is refused, not stored as a plain transaction.
    /// </summary>
    public static bool IsSubmission(Bundle bundle) =>
        Declares(bundle) || bundle.Entry.Any(e => e.Resource is List l && IsSubmissionSet(l));

    static bool IsSubmissionSet(List l) => l.Code?.Coding.Any(c => c.System == ListTypes && c.Code == "submissionset") == true;

    public static async Task HandleAsync(HttpContext ctx, Bundle bundle, FhirStore store, ResourceWrites writes)
    {
        if (!Declares(bundle))
            throw Error("XDSRegistryMetadataError",
                $"An ITI-65 Provide Document Bundle declares its option in Bundle.meta.profile: one of {string.Join(", ", BundleProfiles)}. (Bundle.meta.profile に MHD のプロファイルがありません)",
                "Bundle.meta.profile", HttpStatusCode.BadRequest);
        // Its AuditEvent is MHD's ITI-65 Recipient event: the patient and this SubmissionSet.
        if (bundle.Entry.Select(e => e.Resource).OfType<List>().FirstOrDefault(IsSubmissionSet) is { } set)
            Audit.AuditTrail.SubmitsDocuments(ctx, set);
        var response = await SubmitAsync(ctx, bundle, store, writes);
        await FhirResponse.ResourceAsync(ctx, response, 200);
    }

    /// <summary>
    /// Checks and registers a submission (SubmissionSet, DocumentReferences, Binaries, Folders) in one
    /// transaction; returns the transaction-response. ITI-105 and ITI-106 build such a Bundle and submit
    /// it here, so every way a document arrives meets the same registry rules.
    /// </summary>
    public static async Task<Bundle> SubmitAsync(HttpContext ctx, Bundle bundle, FhirStore store, ResourceWrites writes, bool documentsValidated = false)
    {
        var options = ctx.RequestServices.GetRequiredService<IOptions<MhdOptions>>().Value;
        var submission = CheckShape(bundle);
        // A document's bytes belong to the document's patient (SearchIndexer.PersonOf reads securityContext).
        foreach (var (_, doc) in submission.Documents)
            foreach (var content in doc.Content)
                if (bundle.Entry.FirstOrDefault(e => e.FullUrl == content.Attachment?.Url)?.Resource is Binary { SecurityContext: null } binary && doc.Subject?.Reference is { } subject)
                    binary.SecurityContext = new ResourceReference(subject);
        var enforcement = ctx.RequestServices.GetRequiredService<Validation.ProfileEnforcement>();
        // The whole submission against its declared ProvideBundle profile: the profile slices the entries
        // by their own MHD profiles (SubmissionSet uniqueId, Comprehensive metadata, …).
        if (Declares(bundle))
        {
            await enforcement.CheckAsync(bundle, "Bundle", ctx.RequestAborted);
            // The ProvideBundle profile's slices validated the MHD metadata (SubmissionSet, Folders,
            // DocumentReferences) against their MHD profiles; documents (Bundles, Binaries) still get their own.
            foreach (var entry in bundle.Entry)
                if (entry.Resource is List or DocumentReference && entry.Resource.Meta?.Profile?.All(p => p?.StartsWith(Profiles, StringComparison.Ordinal) == true) != false)
                    Validation.ProfileEnforcement.MarkValidated(entry.Resource);
        }
        if (!documentsValidated)
            await CheckFhirDocumentsAsync(bundle, enforcement, ctx.RequestAborted);
        var response = await BundleTransactions.TransactionAsync(ctx, bundle, store, writes,
            (tx, created) => RegistryRulesAsync(tx, writes, submission, created, options, FhirResponse.BaseUrl(ctx.Request), ctx.RequestAborted));
        // MHD's response examples name the resource, not a version ("DocumentReference/1"), and Document
        // Sources (the NIST toolkit among them) read the location back expecting the current document:
        // an unversioned location keeps it current after a later replace.
        foreach (var entry in response.Entry)
            if (entry.Response?.Location is { } location && location.IndexOf("/_history/", StringComparison.Ordinal) is var h and > 0)
                entry.Response.Location = location[..h];
        return response;
    }

    /// <summary>An OID made from a UUID under arc 2.25 (ITU-T X.667): a uniqueId no one else can mint.</summary>
    public static string UuidOid(Guid uuid) =>
        "urn:oid:2.25." + new System.Numerics.BigInteger(uuid.ToByteArray(bigEndian: true), isUnsigned: true, isBigEndian: true);

    /// <summary>A SubmissionSet for a submission the server assembles itself (ITI-105, ITI-106).</summary>
    public static List NewSubmissionSet(ResourceReference? subject, IEnumerable<string> entryFullUrls, MhdOptions options, string baseUrl) => new()
    {
        Meta = new Meta { Profile = [Profiles + "IHE.MHD.Minimal.SubmissionSet"] },
        Status = List.ListStatus.Current,
        Mode = ListMode.Working,
        Code = new CodeableConcept(ListTypes, "submissionset"),
        Subject = subject,
        Date = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssK"),
        Identifier =
        [
            new Identifier("urn:ietf:rfc:3986", UuidOid(Guid.NewGuid())) { Use = Identifier.IdentifierUse.Usual },      // uniqueId: an OID
            new Identifier("urn:ietf:rfc:3986", "urn:uuid:" + Guid.NewGuid()) { Use = Identifier.IdentifierUse.Official }, // entryUUID
        ],
        Extension = [new Extension("https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
            new Identifier("urn:ietf:rfc:3986", options.SourceId ?? baseUrl))],
        Entry = entryFullUrls.Select(u => new List.EntryComponent { Item = new ResourceReference(u) }).ToList(),
    };

    /// <summary>What the registry rules need of the Bundle, found before any id is assigned.</summary>
    sealed record Submission(int SubmissionSetIndex, List<(int Index, DocumentReference Doc)> Documents);

    static FhirError Error(string xdsCode, string message, string? expression, HttpStatusCode status = HttpStatusCode.UnprocessableEntity) =>
        new(status, OperationOutcome.IssueType.Processing, message, expression) { DetailCode = xdsCode };

    /// <summary>Rules that need only the Bundle: one SubmissionSet, every document listed, bytes that match their metadata.</summary>
    static Submission CheckShape(Bundle bundle)
    {
        var byFullUrl = bundle.Entry.Where(e => e.FullUrl is not null).GroupBy(e => e.FullUrl!).ToDictionary(g => g.Key, g => g.First());
        var sets = bundle.Entry.Select((e, i) => (e, i))
            .Where(x => x.e.Resource is List l && IsSubmissionSet(l)).ToList();
        if (sets.Count != 1)
            throw Error("XDSRegistryMetadataError",
                $"An ITI-65 Provide Document Bundle carries exactly one SubmissionSet (a List with code {ListTypes}#submissionset); this one has {sets.Count}. (SubmissionSet は一つ必要です)",
                "Bundle.entry", HttpStatusCode.BadRequest);
        var (setEntry, setIndex) = sets[0];
        var set = (List)setEntry.Resource!;

        // The SubmissionSet's uniqueId: an identifier of use "usual" holding an OID (MHD SubmissionSetUniqueIdIdentifier).
        if (!set.Identifier.Any(i => i.Use == Identifier.IdentifierUse.Usual && i.Value?.StartsWith("urn:oid:", StringComparison.Ordinal) == true))
            throw Error("XDSRegistryMetadataError", "The SubmissionSet has no uniqueId: an identifier with use 'usual' whose value is an OID (urn:oid:…). (SubmissionSet の uniqueId がありません)",
                $"Bundle.entry[{setIndex}].resource.identifier", HttpStatusCode.BadRequest);
        if (set.Entry.Count == 0)
            throw Error("XDSRegistryMetadataError", "The SubmissionSet lists no DocumentReference or Folder: there is nothing to register. (登録する文書がありません)",
                $"Bundle.entry[{setIndex}].resource.entry", HttpStatusCode.BadRequest);

        var documents = bundle.Entry.Select((e, i) => (e, i)).Where(x => x.e.Resource is DocumentReference)
            .Select(x => (x.i, (DocumentReference)x.e.Resource!)).ToList();
        var listed = set.Entry.Select(e => e.Item?.Reference).OfType<string>().ToHashSet();
        var masterIds = new HashSet<string>();
        foreach (var (index, doc) in documents)
        {
            var at = $"Bundle.entry[{index}].resource";
            var fullUrl = bundle.Entry[index].FullUrl;
            if (doc.MasterIdentifier?.Value is null)
                throw Error("XDSRegistryMetadataError", "The DocumentReference has no masterIdentifier: the document's uniqueId is required. (文書の uniqueId がありません)", at + ".masterIdentifier", HttpStatusCode.BadRequest);
            if (fullUrl is null || !listed.Contains(fullUrl))
                throw Error("XDSRegistryMetadataError", $"The DocumentReference in entry {index} is not listed in the SubmissionSet's entries. (SubmissionSet に含まれていない文書です)", at, HttpStatusCode.BadRequest);
            if (set.Subject?.Reference is { } setSubject && doc.Subject?.Reference is { } docSubject && setSubject != docSubject)
                throw Error("XDSPatientIdDoesNotMatch", $"The DocumentReference's subject '{docSubject}' differs from the SubmissionSet's '{setSubject}'. (患者が一致しません)", at + ".subject");
            if (doc.MasterIdentifier?.Value is { } uid && !masterIds.Add((doc.MasterIdentifier.System ?? "") + "|" + uid))
                throw Error("XDSRegistryDuplicateUniqueIdInMessage", $"Two DocumentReferences in this Bundle share masterIdentifier '{uid}'. (文書 ID が重複しています)", at + ".masterIdentifier");
            for (var c = 0; c < doc.Content.Count; c++)
                CheckContent(doc.Content[c].Attachment, byFullUrl, $"{at}.content[{c}].attachment");
        }
        foreach (var item in listed)
            if (item.StartsWith("urn:", StringComparison.Ordinal) && !byFullUrl.ContainsKey(item))
                throw Error("UnresolvedReferenceException", $"The SubmissionSet lists '{item}', which is not in the Bundle. (参照先がバンドル内にありません)", $"Bundle.entry[{setIndex}].resource.entry", HttpStatusCode.BadRequest);
        return new Submission(setIndex, documents);
    }

    static void CheckContent(Attachment? attachment, Dictionary<string, Bundle.EntryComponent> byFullUrl, string at)
    {
        if (attachment is null) throw Error("XDSMissingDocument", "content.attachment is missing. (文書本体がありません)", at);
        if (attachment.Url is null && attachment.Data is null)
            throw Error("XDSMissingDocument", "The attachment has neither a url nor data: the document itself is missing. (文書本体がありません)", at);
        var bytes = attachment.Data;
        if (attachment.Url is { } url && url.StartsWith("urn:", StringComparison.Ordinal))
        {
            if (!byFullUrl.TryGetValue(url, out var target))
                throw Error("XDSMissingDocument", $"attachment.url '{url}' names no entry of the Bundle. (文書本体がバンドル内にありません)", at + ".url");
            bytes = target.Resource is Binary b ? b.Data ?? [] : null; // a FHIR document Bundle (FHIR Documents option) has no bytes to compare
        }
        if (bytes is null) return;
        if (attachment.SizeUnsignedInt is { } size && size != bytes.LongLength) // R4 size is unsignedInt; the SDK's Size is the R5 integer64
            throw Error("XDSNonIdenticalSize", $"attachment.size is {size} but the document has {bytes.LongLength} bytes. (サイズが一致しません)", at + ".size");
        if (attachment.Hash is { } hash && !HashMatches(hash, bytes))
            throw Error("XDSNonIdenticalHash", "attachment.hash is not the SHA-1 of the document. (ハッシュ値が一致しません)", at + ".hash");
    }

    /// <summary>
    /// FHIR defines attachment.hash as the base64 of the SHA-1 bytes. Every IHE MHD 4.2.3 example instead
    /// carries base64 of the SHA-1's hex text (docs/mhd.md shows the evidence); both are accepted so
    /// that conformant and example-trained senders work, and anything else is a mismatch.
    /// </summary>
    static bool HashMatches(byte[] hash, byte[] data)
    {
        var sha1 = SHA1.HashData(data);
        return hash.AsSpan().SequenceEqual(sha1)
            || hash.AsSpan().SequenceEqual(Encoding.ASCII.GetBytes(Convert.ToHexString(sha1).ToLowerInvariant()));
    }

    /// <summary>
    /// A Binary carrying a FHIR document (an HS037 checkup report pushed by an app, say) is validated
    /// against the document's own profile like a Bundle written directly; the entries themselves are
    /// validated when they are written (ResourceWrites).
    /// </summary>
    static async Task CheckFhirDocumentsAsync(Bundle bundle, Validation.ProfileEnforcement enforcement, CancellationToken ct)
    {
        for (var i = 0; i < bundle.Entry.Count; i++)
        {
            if (bundle.Entry[i].Resource is not Binary { Data: { } data } binary || !BinaryContent.IsFhirContentType(binary.ContentType)) continue;
            var format = binary.ContentType!.Contains("xml", StringComparison.OrdinalIgnoreCase) ? WireFormat.Xml : WireFormat.Json;
            Resource document;
            try { document = FhirFormat.ParseResource(data, format, new ServerLimits()); }
            catch (FhirError e)
            {
                throw new FhirError(e.Status, e.Code, $"Bundle.entry[{i}]: the Binary says it is {binary.ContentType} but is not a FHIR resource: {e.Message}", $"Bundle.entry[{i}].resource.data")
                { MoreIssues = e.MoreIssues };
            }
            await enforcement.CheckAsync(document, $"Bundle.entry[{i}].resource.data", ct);
        }
    }

    /// <summary>Rules that read the registry, inside the transaction and before anything is written.</summary>
    static async Task RegistryRulesAsync(WriteTransaction tx, ResourceWrites writes, Submission submission, IReadOnlySet<string> created, MhdOptions options, string baseUrl, CancellationToken ct)
    {
        foreach (var (index, doc) in submission.Documents)
        {
            var at = $"Bundle.entry[{index}].resource";
            await CheckPatientAsync(tx, doc.Subject, created, options, baseUrl, at + ".subject", ct);

            if (doc.MasterIdentifier?.Value is { } uid)
            {
                // Serialise submitters of the same uniqueId, then look: two racing copies cannot both pass.
                await tx.LockAsync("mhd-uniqueid:" + uid, ct);
                var system = doc.MasterIdentifier.System;
                var query = new SearchQuery(writes.Store.SearchParameters, "DocumentReference",
                    [new("identifier", (system is null ? "" : system.Replace("|", "\\|") + "|") + uid.Replace(",", "\\,").Replace("|", "\\|"))], lenient: false,
                    AccessFilter.Everything); // uniqueIds are unique across everyone's documents; the refusal names no document
                if ((await tx.SearchAsync(query, 1, ct)).Count > 0)
                    throw Error("XDSDuplicateUniqueIdInRegistry", $"A document with masterIdentifier '{uid}' is already registered. (同じ文書 ID が登録済みです)", at + ".masterIdentifier", HttpStatusCode.Conflict);
            }

            for (var r = 0; r < doc.RelatesTo.Count; r++)
                await RelatesToAsync(tx, writes, doc.RelatesTo[r], created, baseUrl, $"{at}.relatesTo[{r}]", ct);
        }
    }

    /// <summary>"Type/id" of a reference to this server, relative or absolute (our base URL); null for another server's.</summary>
    static (string Type, string Id)? Local(string? reference, string baseUrl) =>
        reference is null ? null
        : reference.StartsWith(baseUrl + "/", StringComparison.Ordinal) ? ReferenceTarget.Local(reference[(baseUrl.Length + 1)..])
        : ReferenceTarget.Local(reference);

    static async Task CheckPatientAsync(WriteTransaction tx, ResourceReference? subject, IReadOnlySet<string> created, MhdOptions options, string baseUrl, string at, CancellationToken ct)
    {
        if (subject is null) return; // Minimal metadata may leave the subject out
        var reference = subject.Reference
            ?? throw Error("XDSUnknownPatientId", "The subject has no reference: it must reference a registered Patient (an identifier alone is not resolved here). (患者への参照がありません)", at);
        if (Local(reference, baseUrl) is null && reference.Contains("://", StringComparison.Ordinal))
        {
            // A Patient held by a Patient Identity Source this server trusts (PIXm/PMIR), referenced as is.
            if (options.PatientIdentitySources.Any(b => reference.StartsWith(b.TrimEnd('/') + "/Patient/", StringComparison.Ordinal))) return;
            throw Error("XDSUnknownPatientId", $"The subject '{reference}' is on a server this registry does not trust for patient identity. (未知の患者です)", at);
        }
        if (Local(reference, baseUrl) is not { Type: "Patient" } target)
            throw Error("XDSUnknownPatientId", $"The subject '{reference}' is not a Patient reference. (患者への参照ではありません)", at);
        if (created.Contains("Patient/" + target.Id)) return;
        var patient = await tx.ReadAsync("Patient", target.Id, ct);
        // A Patient the submitter cannot see is unknown to it, exactly like one that does not exist.
        if (patient is null || patient.Deleted || !await tx.VisibleAsync(patient.Key, ct))
            throw Error("XDSUnknownPatientId", $"Patient/{target.Id} is not known to this server: register the patient first (or resolve it by identifier). (未登録の患者です)", at);
    }

    /// <summary>MHDS: replaces supersedes its target atomically; a target that is no longer current cannot be replaced.</summary>
    static async Task RelatesToAsync(WriteTransaction tx, ResourceWrites writes, DocumentReference.RelatesToComponent relation, IReadOnlySet<string> created, string baseUrl, string at, CancellationToken ct)
    {
        if (Local(relation.Target?.Reference, baseUrl) is not { Type: "DocumentReference" } target)
            throw Error("XDSRegistryMetadataError", "relatesTo.target must reference a DocumentReference of this registry. (関連文書の参照が不正です)", at + ".target", HttpStatusCode.BadRequest);
        if (created.Contains("DocumentReference/" + target.Id)) return;
        var stored = await tx.ReadAsync("DocumentReference", target.Id, ct);
        if (stored is null || stored.Deleted || !await tx.VisibleAsync(stored.Key, ct))
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
}

/// <summary>Configuration section "Mhd".</summary>
public sealed class MhdOptions
{
    /// <summary>Base URLs of Patient Identity Sources (an MPI) whose Patient references a submission may use as is.</summary>
    public string[] PatientIdentitySources { get; set; } = [];

    /// <summary>This server's sourceId (a URI) on the SubmissionSets it assembles for ITI-105/106; default: its base URL.</summary>
    public string? SourceId { get; set; }
}
