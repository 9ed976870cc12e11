using System.Net;
using System.Security.Cryptography;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
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
    const string ListTypes = DocumentRegistry.ListTypes;

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
            throw DocumentRegistry.Error("XDSRegistryMetadataError",
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
        var submission = CheckShape(bundle);
        // A document's bytes belong to the document's patient (SearchIndexer.PersonOf reads securityContext). A
        // subject named by identifier is copied as it is: the write resolves both to the person's Patient alike.
        foreach (var (_, doc) in submission.Documents)
            foreach (var content in doc.Content)
                if (bundle.Entry.FirstOrDefault(e => e.FullUrl == content.Attachment?.Url)?.Resource is Binary { SecurityContext: null } binary && doc.Subject is { } subject)
                    binary.SecurityContext = (ResourceReference)subject.DeepCopy();
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
        // The rules that read the registry (uniqueIds, the patient, relatesTo, bytes already stored) hold for
        // every write of a DocumentReference or List: ResourceWrites applies them to each entry (DocumentRegistry).
        var response = await BundleTransactions.TransactionAsync(ctx, bundle, store, writes);
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
    sealed record Submission(List<(int Index, DocumentReference Doc)> Documents);

    /// <summary>Rules that need only the Bundle: one SubmissionSet, every document listed, bytes that match their metadata.</summary>
    static Submission CheckShape(Bundle bundle)
    {
        var byFullUrl = bundle.Entry.Where(e => e.FullUrl is not null).GroupBy(e => e.FullUrl!).ToDictionary(g => g.Key, g => g.First());
        var sets = bundle.Entry.Select((e, i) => (e, i))
            .Where(x => x.e.Resource is List l && IsSubmissionSet(l)).ToList();
        if (sets.Count != 1)
            throw DocumentRegistry.Error("XDSRegistryMetadataError",
                $"An ITI-65 Provide Document Bundle carries exactly one SubmissionSet (a List with code {ListTypes}#submissionset); this one has {sets.Count}. (SubmissionSet は一つ必要です)",
                "Bundle.entry", HttpStatusCode.BadRequest);
        var (setEntry, setIndex) = sets[0];
        var set = (List)setEntry.Resource!;

        // The SubmissionSet's uniqueId: an identifier of use "usual" holding an OID (MHD SubmissionSetUniqueIdIdentifier).
        if (!set.Identifier.Any(i => i.Use == Identifier.IdentifierUse.Usual && i.Value?.StartsWith("urn:oid:", StringComparison.Ordinal) == true))
            throw DocumentRegistry.Error("XDSRegistryMetadataError", "The SubmissionSet has no uniqueId: an identifier with use 'usual' whose value is an OID (urn:oid:…). (SubmissionSet の uniqueId がありません)",
                $"Bundle.entry[{setIndex}].resource.identifier", HttpStatusCode.BadRequest);
        if (set.Entry.Count == 0)
            throw DocumentRegistry.Error("XDSRegistryMetadataError", "The SubmissionSet lists no DocumentReference or Folder: there is nothing to register. (登録する文書がありません)",
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
                throw DocumentRegistry.Error("XDSRegistryMetadataError", "The DocumentReference has no masterIdentifier: the document's uniqueId is required. (文書の uniqueId がありません)", at + ".masterIdentifier", HttpStatusCode.BadRequest);
            if (fullUrl is null || !listed.Contains(fullUrl))
                throw DocumentRegistry.Error("XDSRegistryMetadataError", $"The DocumentReference in entry {index} is not listed in the SubmissionSet's entries. (SubmissionSet に含まれていない文書です)", at, HttpStatusCode.BadRequest);
            if (set.Subject?.Reference is { } setSubject && doc.Subject?.Reference is { } docSubject && setSubject != docSubject)
                throw DocumentRegistry.Error("XDSPatientIdDoesNotMatch", $"The DocumentReference's subject '{docSubject}' differs from the SubmissionSet's '{setSubject}'. (患者が一致しません)", at + ".subject");
            if (doc.MasterIdentifier?.Value is { } uid && !masterIds.Add((doc.MasterIdentifier.System ?? "") + "|" + uid))
                throw DocumentRegistry.Error("XDSRegistryDuplicateUniqueIdInMessage", $"Two DocumentReferences in this Bundle share masterIdentifier '{uid}'. (文書 ID が重複しています)", at + ".masterIdentifier");
            for (var c = 0; c < doc.Content.Count; c++)
                CheckContent(doc.Content[c].Attachment, byFullUrl, $"{at}.content[{c}].attachment");
        }
        foreach (var item in listed)
            if (item.StartsWith("urn:", StringComparison.Ordinal) && !byFullUrl.ContainsKey(item))
                throw DocumentRegistry.Error("UnresolvedReferenceException", $"The SubmissionSet lists '{item}', which is not in the Bundle. (参照先がバンドル内にありません)", $"Bundle.entry[{setIndex}].resource.entry", HttpStatusCode.BadRequest);
        return new Submission(documents);
    }

    static void CheckContent(Attachment? attachment, Dictionary<string, Bundle.EntryComponent> byFullUrl, string at)
    {
        if (attachment is null) throw DocumentRegistry.Error("XDSMissingDocument", "content.attachment is missing. (文書本体がありません)", at);
        if (attachment.Url is null && attachment.Data is null)
            throw DocumentRegistry.Error("XDSMissingDocument", "The attachment has neither a url nor data: the document itself is missing. (文書本体がありません)", at);
        var bytes = attachment.Data;
        if (attachment.Url is { } url && url.StartsWith("urn:", StringComparison.Ordinal))
        {
            if (!byFullUrl.TryGetValue(url, out var target))
                throw DocumentRegistry.Error("XDSMissingDocument", $"attachment.url '{url}' names no entry of the Bundle. (文書本体がバンドル内にありません)", at + ".url");
            bytes = target.Resource is Binary b ? b.Data ?? [] : null; // a FHIR document Bundle (FHIR Documents option) has no bytes to compare
        }
        if (bytes is not null) DocumentRegistry.CheckBytes(attachment, bytes.LongLength, SHA1.HashData(bytes), at);
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
}

/// <summary>Configuration section "Mhd".</summary>
public sealed class MhdOptions
{
    /// <summary>Base URLs of Patient Identity Sources (an MPI) whose Patient references a submission may use as is.</summary>
    public string[] PatientIdentitySources { get; set; } = [];

    /// <summary>This server's sourceId (a URI) on the SubmissionSets it assembles for ITI-105/106; default: its base URL.</summary>
    public string? SourceId { get; set; }
}
