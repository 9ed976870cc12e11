using System.Net;
using System.Security.Cryptography;
using Hl7.Fhir.Model;
using Microsoft.Extensions.Options;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Mhd;

/// <summary>
/// IHE MHD ITI-106 Generate Metadata: POST [base]/DocumentReference/$generate-metadata with a FHIR
/// document (a document Bundle, or a Binary holding one) in the `document` parameter — how the mobile
/// apps push a checkup report (HS037) or a referral (HS038). The document is validated against its
/// own profile, its Patient is matched to a registered Patient by identifier, and the DocumentReference
/// is generated from its Composition; then document, metadata and a SubmissionSet are registered as one
/// ITI-65 submission. The answer is Parameters with a reference to the new DocumentReference.
/// </summary>
public static class GenerateMetadata
{
    public const string Url = "https://profiles.ihe.net/ITI/MHD/OperationDefinition/generate-metadata";

    /// <summary>As GET /metadata declares it on DocumentReference.</summary>
    public static CapabilityStatement.OperationComponent Operation => new()
    {
        Name = "generate-metadata",
        Definition = Url,
        Documentation = "IHE MHD ITI-106 Generate Metadata: POST DocumentReference/$generate-metadata with a FHIR document Bundle (docs/mhd.md).",
    };

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/DocumentReference/$generate-metadata", HandleAsync).WithMetadata(new Security.FhirAccess(null)); // entries checked as they are written

    static async Task HandleAsync(HttpContext ctx, FhirStore store, ResourceWrites writes, IOptions<ServerLimits> limits, IOptions<MhdOptions> options,
        Validation.ProfileEnforcement enforcement)
    {
        // What the operation will write, authorised before anything (the patient lookup included) is read.
        foreach (var type in (string[])["DocumentReference", "List", "Binary"])
            Security.AccessControl.Demand(ctx.User, Security.Interaction.Create, type);
        var body = await FhirFormat.ReadResourceAsync(ctx.Request, limits.Value, ctx.RequestAborted);
        var input = body is Parameters p
            ? p.Parameter.FirstOrDefault(x => x.Name == "document")?.Resource
                ?? throw FhirError.BadRequest("$generate-metadata needs a 'document' parameter holding a document Bundle or a Binary. (document パラメータがありません)", "Parameters.parameter")
            : body;
        var (document, bytes) = Document(input, limits.Value);
        await enforcement.CheckAsync(document, body is Parameters ? "Parameters.parameter[0].resource" : "Bundle", ctx.RequestAborted);

        var composition = document.Entry.FirstOrDefault()?.Resource as Composition
            ?? throw FhirError.BadRequest("A FHIR document's first entry is its Composition (R4 documents.html). (最初のエントリが Composition ではありません)", "Bundle.entry[0]");
        var patientEntry = Entry(document, composition.Subject?.Reference)?.Resource as Patient
            ?? throw Unprocessable("XDSUnknownPatientId", "The Composition's subject is not a Patient entry of the document. (文書内に患者がありません)", "Bundle.entry[0].resource.subject");
        // Only what the requester may see is found: a Patient or document hidden from it is unknown to it.
        var access = await (await Security.AccessPolicy.OfAsync(ctx, store)).FilterAsync() ?? AccessFilter.Everything;
        var subject = await FindPatientAsync(store, access, patientEntry, ctx.RequestAborted);

        var binaryUrl = "urn:uuid:" + Guid.NewGuid();
        var doc = Describe(document, composition, patientEntry, subject, binaryUrl, bytes);
        if (composition.RelatesTo.FirstOrDefault(r => r.Code == DocumentRelationshipType.Replaces)?.Target is Identifier replaced)
            doc.RelatesTo.Add(new DocumentReference.RelatesToComponent { Code = DocumentRelationshipType.Replaces, Target = await FindReplacedAsync(store, access, replaced, ctx.RequestAborted) });

        var docUrl = "urn:uuid:" + Guid.NewGuid();
        var baseUrl = FhirResponse.BaseUrl(ctx.Request);
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                new() { FullUrl = "urn:uuid:" + Guid.NewGuid(), Resource = ProvideDocumentBundle.NewSubmissionSet(subject.DeepCopy(), [docUrl], options.Value, baseUrl), Request = new() { Method = Bundle.HTTPVerb.POST, Url = "List" } },
                new() { FullUrl = docUrl, Resource = doc, Request = new() { Method = Bundle.HTTPVerb.POST, Url = "DocumentReference" } },
                new() { FullUrl = binaryUrl, Resource = new Binary { ContentType = FhirFormat.JsonMime, Data = bytes }, Request = new() { Method = Bundle.HTTPVerb.POST, Url = "Binary" } },
            ],
        };
        var response = await ProvideDocumentBundle.SubmitAsync(ctx, bundle, store, writes, documentsValidated: true);
        var created = response.Entry[1].Resource!; // the DocumentReference as stored
        var reference = "DocumentReference/" + created.Id;
        ctx.Response.Headers.Location = $"{baseUrl}/{reference}";
        await FhirResponse.ResourceAsync(ctx, new Parameters { Parameter = [new() { Name = "DocumentReference", Value = new ResourceReference(reference) }] }, 200);
    }

    static FhirError Unprocessable(string xds, string message, string expression) =>
        new(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.Processing, message, expression) { DetailCode = xds };

    /// <summary>The document Bundle and the exact bytes that will be stored (and hashed) for it.</summary>
    static (Bundle Document, byte[] Bytes) Document(Resource input, ServerLimits limits)
    {
        switch (input)
        {
            case Bundle { Type: Bundle.BundleType.Document } b:
                return (b, FhirFormat.Serialize(b, WireFormat.Json));
            case Binary { Data: { } data } binary when BinaryContent.IsFhirContentType(binary.ContentType):
                var format = binary.ContentType!.Contains("xml", StringComparison.OrdinalIgnoreCase) ? WireFormat.Xml : WireFormat.Json;
                if (FhirFormat.ParseResource(data, format, limits) is Bundle { Type: Bundle.BundleType.Document } fromBinary)
                    return (fromBinary, format == WireFormat.Json ? data : FhirFormat.Serialize(fromBinary, WireFormat.Json));
                break;
            case Binary binary:
                throw new FhirError(HttpStatusCode.UnprocessableEntity, OperationOutcome.IssueType.NotSupported,
                    $"Metadata can be generated from FHIR documents only; this Binary is {binary.ContentType ?? "untyped"} (CDA is not supported). (FHIR 文書以外からはメタデータを生成できません)", "Parameters.parameter[0].resource.contentType")
                { DetailCode = "FHIRDocumentNotSupported" };
        }
        throw FhirError.BadRequest("The document must be a Bundle of type document, or a Binary holding one. (document 型の Bundle が必要です)", "Parameters.parameter[0].resource");
    }

    static Bundle.EntryComponent? Entry(Bundle document, string? reference) =>
        reference is null ? null : document.Entry.FirstOrDefault(e => e.FullUrl == reference
            || e.Resource is { } r && reference.EndsWith(r.TypeName + "/" + r.Id, StringComparison.Ordinal));

    /// <summary>
    /// The identifier of the document's Patient that names one registered Patient the requester may see (PHR:
    /// register first), as a logical reference: the write files the document under that Patient's person.
    /// </summary>
    static async Task<ResourceReference> FindPatientAsync(FhirStore store, AccessFilter access, Patient patient, CancellationToken ct)
    {
        foreach (var id in patient.Identifier.Where(i => i.System is not null && i.Value is not null))
        {
            var query = new Storage.Search.SearchQuery(store.SearchParameters, "Patient",
                [new("identifier", Escape(id.System) + "|" + Escape(id.Value)), new("_count", "2")], lenient: false, access);
            var found = await store.SearchAsync(query, ct);
            // Named by this identifier, the write resolves it onwards to the person the Patient is linked to, as
            // ITI-65/105 subjects are (Identity/IdentifierDomains.Subjects.cs: who may name whom, the same 422 otherwise).
            if (found.Matches.Count == 1) return new ResourceReference { Identifier = new Identifier(id.System, id.Value) };
            if (found.Matches.Count > 1)
                throw Unprocessable("XDSUnknownPatientId", $"The identifier {id.System}|{id.Value} matches several registered Patients. (識別子が複数の患者に一致します)", "Bundle.entry.resource.identifier");
        }
        throw Unprocessable("XDSUnknownPatientId",
            "None of the document Patient's identifiers belongs to a registered Patient: register the person (or link the identifier) first. (登録済みの患者が見つかりません)",
            "Bundle.entry.resource.identifier");
    }

    static async Task<ResourceReference> FindReplacedAsync(FhirStore store, AccessFilter access, Identifier replaced, CancellationToken ct)
    {
        var query = new Storage.Search.SearchQuery(store.SearchParameters, "DocumentReference",
            [new("identifier", Escape(replaced.System ?? "") + "|" + Escape(replaced.Value ?? "")), new("_count", "2")], lenient: false, access);
        var found = await store.SearchAsync(query, ct);
        return found.Matches.Count == 1 ? new ResourceReference($"DocumentReference/{found.Matches[0].Id}")
            : throw Unprocessable("UnresolvedReferenceException", $"Composition.relatesTo names document {replaced.Value}, which is not registered. (置換対象の文書が登録されていません)", "Bundle.entry[0].resource.relatesTo");
    }

    static string Escape(string? s) => (s ?? "").Replace("\\", "\\\\").Replace("|", "\\|").Replace(",", "\\,").Replace("$", "\\$");

    /// <summary>
    /// The DocumentReference, element by element, by the R4 DocumentReference mapping "FHIR Composition"
    /// (documentreference-mappings.html, the mapping MHD 2:3.106.4.1.3 relies on for a FHIR document):
    /// masterIdentifier the document's Bundle.identifier (the document's identity, R4 documents.html);
    /// docStatus, type, category, author, authenticator (the legal attester), custodian, relatesTo,
    /// securityLabel (confidentiality + meta.security), content.format (the document profile),
    /// context.encounter, context.event, context.period (event.period, else the Encounter's period),
    /// context.related (event.detail) and sourcePatientInfo from the Composition. facilityType and
    /// practiceSetting are "usually from a mapping to a local ValueSet": ours are the codes the JP
    /// documents carry (docs/mhd.md, "ITI-106 metadata"). Authors, authenticator, custodian and the
    /// source patient are contained copies (the document's resources are not registry resources), one
    /// copy per resource however often it is referenced.
    /// </summary>
    static DocumentReference Describe(Bundle document, Composition composition, Patient sourcePatient, ResourceReference subject, string binaryUrl, byte[] bytes)
    {
        var contained = new List<Resource>();
        var containedIds = new Dictionary<Resource, string>(ReferenceEqualityComparer.Instance);
        ResourceReference Contain(ResourceReference? r)
        {
            if (Entry(document, r?.Reference)?.Resource is not { } target) return new ResourceReference { Display = r?.Display };
            if (!containedIds.TryGetValue(target, out var id))
            {
                var copy = (Resource)target.DeepCopy();
                copy.Id = id = containedIds[target] = "c" + (contained.Count + 1);
                copy.Meta = null;
                contained.Add(copy);
                // A contained resource may only point at the container's other contained resources (R4 dom-3):
                // the copy's references to document entries become #refs where that entry is contained, else
                // a logical reference (its identifier) or a display.
                foreach (var inner in ReferencesIn(copy))
                {
                    if (inner.Reference is null || inner.Reference.StartsWith('#')) continue;
                    var entry = Entry(document, inner.Reference)?.Resource;
                    inner.Reference = entry is not null && containedIds.TryGetValue(entry, out var local) ? "#" + local : null;
                    if (inner.Reference is null && entry is not null) inner.Identifier ??= BusinessIdentifier(entry) is { } bid ? new Identifier(bid.System, bid.Value) : null;
                    if (inner.Reference is null && inner.Identifier is null) inner.Display ??= entry?.TypeName ?? "(outside the document)";
                }
            }
            return new ResourceReference("#" + id);
        }
        // A resource with a business identifier is named by it (MHD's FHIR-document example: context.encounter.identifier).
        ResourceReference IdentifyOrContain(ResourceReference r) =>
            Entry(document, r.Reference)?.Resource is { } target && BusinessIdentifier(target) is { } id
                ? new ResourceReference { Identifier = new Identifier(id.System, id.Value), Type = target.TypeName }
                : Contain(r);
        var encounter = Entry(document, composition.Encounter?.Reference)?.Resource as Encounter;
        var facility = Organization(document, encounter?.ServiceProvider) ?? Organization(document, composition.Custodian)
            ?? composition.Author.Select(a => Organization(document, a)).FirstOrDefault(o => o is not null);
        var profile = document.Meta?.Profile?.FirstOrDefault()?.Split('|')[0];
        var doc = new DocumentReference
        {
            MasterIdentifier = document.Identifier is { } bid ? new Identifier(bid.System, bid.Value) : null,
            Identifier = composition.Identifier is { } cid ? [new Identifier(cid.System, cid.Value)] : [],
            Status = DocumentReferenceStatus.Current,
            DocStatus = composition.Status switch
            {
                CompositionStatus.Final => CompositionStatus.Final,
                CompositionStatus.Amended => CompositionStatus.Amended,
                CompositionStatus.Preliminary => CompositionStatus.Preliminary,
                _ => null,
            },
            Type = composition.Type,
            Category = composition.Category,
            Subject = subject,
            Date = DateTimeOffset.UtcNow, // MHD: when the DocumentReference was made; the document's own date is attachment.creation
            Author = composition.Author.Select(Contain).ToList(),
            // XDS legalAuthenticator: the attester in mode legal (R4 Composition.attester.mode).
            Authenticator = composition.Attester.FirstOrDefault(a => a.Mode == Composition.CompositionAttestationMode.Legal)?.Party is { } legal ? Contain(legal) : null,
            Custodian = composition.Custodian is null ? null : Contain(composition.Custodian),
            Description = composition.Title,
            SecurityLabel =
            [
                .. composition.ConfidentialityElement?.JsonValue is string confidentiality
                    ? [new CodeableConcept("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", confidentiality)] : Array.Empty<CodeableConcept>(),
                .. (composition.Meta?.Security ?? []).Select(s => new CodeableConcept { Coding = [(Coding)s.DeepCopy()] }),
            ],
            Content =
            [
                new DocumentReference.ContentComponent
                {
                    Attachment = new Attachment
                    {
                        ContentType = FhirFormat.JsonMime, Language = document.Language ?? composition.Language, Url = binaryUrl,
                        SizeUnsignedInt = bytes.Length, Hash = SHA1.HashData(bytes), Title = composition.Title, CreationElement = composition.DateElement is { } d ? new FhirDateTime(d.Value) : null,
                    },
                    // The document's profile names its format exactly (HS037, HS038, HS039 each have one).
                    Format = profile is null ? null : new Coding("urn:ietf:rfc:3986", profile),
                },
            ],
            Context = new DocumentReference.ContextComponent
            {
                Encounter = composition.Encounter is { Reference: not null } e ? [IdentifyOrContain(e)] : [],
                Event = composition.Event.SelectMany(e => e.Code).ToList(),
                Period = composition.Event.Select(e => e.Period).FirstOrDefault(p => p is not null) ?? encounter?.Period,
                // XDS healthcareFacilityTypeCode: the type of the organisation where the care happened.
                FacilityType = facility?.Type.FirstOrDefault(),
                // XDS practiceSettingCode: the department (JP_eCS_Department on the CLINS Organization), else the
                // Encounter's service type, else its class (eCheckup: encounter-category 健診).
                PracticeSetting = facility?.GetExtensionValue<CodeableConcept>(DepartmentExtension) ?? encounter?.ServiceType
                    ?? (encounter?.Class is { } c ? new CodeableConcept { Coding = [(Coding)c.DeepCopy()] } : null),
                SourcePatientInfo = Contain(new ResourceReference(document.Entry.First(e => e.Resource == sourcePatient).FullUrl)),
                Related = composition.Event.SelectMany(e => e.Detail).Where(r => r.Reference is not null).Select(IdentifyOrContain).ToList(),
            },
        };
        doc.Contained = contained;
        return doc;
    }

    /// <summary>JP-CLINS 診療科 of an Organization (SS-MIX2 診療科コード).</summary>
    const string DepartmentExtension = "http://jpfhir.jp/fhir/eCS/Extension/StructureDefinition/JP_eCS_Department";

    static IEnumerable<ResourceReference> ReferencesIn(Base node)
    {
        foreach (var (_, value) in node.EnumerateElements())
            foreach (var child in value is IEnumerable<Base> list ? list : value is Base one ? [one] : [])
            {
                if (child is ResourceReference r) yield return r;
                else if (child is not Resource)
                    foreach (var inner in ReferencesIn(child)) yield return inner;
            }
    }

    static Identifier? BusinessIdentifier(Resource resource) => resource.EnumerateElements().FirstOrDefault(e => e.Key == "identifier").Value switch
    {
        Identifier one => one,
        IEnumerable<Identifier> many => many.FirstOrDefault(i => i.Value is not null),
        _ => null,
    };

    static Organization? Organization(Bundle document, ResourceReference? reference) => Entry(document, reference?.Reference)?.Resource as Organization;
}
