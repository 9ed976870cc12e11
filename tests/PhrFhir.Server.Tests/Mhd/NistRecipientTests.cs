using System.Net;
using System.Numerics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Xunit.Abstractions;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>
/// The NIST FHIR Toolkit (Asbestos, the IHE Connectathon tool) MHD 4.2.0 Document Recipient test
/// collections, read as a catalogue from ../shared/ref/ihe/nist-fhirtoolkit-mhd-testcollections
/// (MHDv420_DocumentRecipient_comprehensive and _minimal): one row per NIST test folder.
///
/// Each row builds the submission the NIST script sends — the official MHD 4.2.3 example Bundle, made
/// unique, referring to the NIST test Patient, with the NIST case's fault applied — and asserts what the
/// script asserts:
///   refused     Library/MHDv4/PDBFailsMain.xml: response "bad" (the descriptions say 400; any 4xx is
///               accepted here), an OperationOutcome, and neither the SubmissionSet (List?identifier) nor
///               the DocumentReference (DocumentReference?identifier) found afterwards.
///   registered  Library/MHDv4/PDBSuccessMain(2).xml: 200 transaction-response with one 201 entry per
///               request entry, each with a location and no outcome (PDBVal/TR_TransactionResponse.xml);
///               each DocumentReference read back with every element it was sent with and its subject as
///               sent (ReadValidateDocRef.xml, ReadDocRef.xml); the SubmissionSet and each document found by
///               identifier, status=current and patient.identifier (MHDv4SearchSsList.xml, SDR_SearchResponse.xml).
///   replaces, appends, transforms
///               Library/Document{Replace,Addendum,Transforms}Main.xml: an original, then a second
///               submission whose DocumentReference relatesTo the original's response.location; both read
///               back by a GET of their response.location exactly as returned (as Asbestos does): the new
///               one current, the original superseded (replaces) or still current (appends, transforms).
/// The TestScripts' DependsOn (1_Prerequisite…) only hands the negative cases a base address to search; this
/// server's is known, so every row stands alone. The fixtures the scripts load (baseTestCollection=
/// MHD_DocumentRecipient_*) are not in the catalogue; their faults are the ones each description.md states.
/// </summary>
[Collection("server")]
public sealed class NistRecipientTests(ServerFixture server, ITestOutputHelper output)
{
    readonly HttpClient _http = server.Http;

    const string Comprehensive = "comprehensive";
    const string Minimal = "minimal";
    const string Refused = "refused";
    const string Registered = "registered";
    const string Replaces = "replaces";
    const string Appends = "appends";
    const string Transforms = "transforms";

    const string Mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/";
    const string BadPatientLink = "http://example.com/fhir/Patient/1"; // the NIST fixtures' "URL that does not resolve"

    /// <summary>
    /// NIST test (collection/folder), the metadata the script sends, what the script expects, and the case as
    /// its description.md states it. Metadata is the collection's, except where the script sends Comprehensive
    /// Metadata in the minimal collection (isComprehensiveMetadataExpected 'true', a Comprehensive SubmissionSet).
    /// </summary>
    public static TheoryData<string, string, string, string> Catalogue => new()
    {
        { "comprehensive/1_Prerequisite_Single_Document_with_Binary", Comprehensive, Registered, "List, DocumentReference and Binary with the minimum Comprehensive Metadata" },
        { "comprehensive/Bad_Patient_Link", Comprehensive, Refused, "DocumentReference.subject.reference is a bad link" },
        { "comprehensive/Bad_Patient_Link_SubmissionSetTypeList", Comprehensive, Refused, "List.subject.reference is a URL that does not resolve" },
        { "comprehensive/Bad_Profile", Comprehensive, Refused, "Bundle.meta.profile contains an invalid value" },
        { "comprehensive/Bad_SourcePatientInfo_Link", Comprehensive, Refused, "context.sourcePatientInfo points to a contained Patient that is not present" },
        { "comprehensive/Document_Addendum", Comprehensive, Appends, "a second DocumentReference relatesTo the first as appends" },
        { "comprehensive/Document_Replace", Comprehensive, Replaces, "a second DocumentReference relatesTo the first as replaces" },
        { "comprehensive/Document_Transforms", Comprehensive, Transforms, "a second DocumentReference relatesTo the first as transforms" },
        { "comprehensive/Missing_ContentTypeCode", Comprehensive, Refused, "List ihe-designationType extension is missing" },
        { "comprehensive/Missing_Document", Comprehensive, Refused, "DocumentReference.content.attachment.url is missing" },
        { "comprehensive/Missing_Format_Code", Comprehensive, Refused, "DocumentReference.content.format is missing" },
        { "comprehensive/Missing_HealthcareFacilityTypeCode", Comprehensive, Refused, "DocumentReference.context.facilityType is missing" },
        { "comprehensive/Missing_LanguageCode", Comprehensive, Refused, "DocumentReference.content.attachment.language is missing" },
        { "comprehensive/Missing_MimeType", Comprehensive, Refused, "DocumentReference.content.attachment.contentType is missing" },
        // description.md says "will succeed with status 200", but its TestScript runs MHDPDBFails.xml (CMPMETA4_1): the script rules.
        { "comprehensive/Missing_PatientID", Comprehensive, Refused, "DocumentReference.subject is missing" },
        { "comprehensive/Missing_PatientID_Reference", Comprehensive, Refused, "DocumentReference.subject.reference is missing" },
        { "comprehensive/Missing_PatientID_SubmissionSetTypeList", Comprehensive, Refused, "List.subject is missing" },
        { "comprehensive/Missing_PracticeSettingCode", Comprehensive, Refused, "DocumentReference.context.practiceSetting is missing" },
        { "comprehensive/Missing_Profile", Comprehensive, Refused, "Bundle.meta.profile is missing" },
        { "comprehensive/Missing_SourceId", Comprehensive, Refused, "List ihe-sourceId extension is missing" },
        { "comprehensive/Missing_SourcePatientId", Comprehensive, Refused, "DocumentReference.context.sourcePatientInfo is missing" },
        { "comprehensive/Missing_SubmissionTime", Comprehensive, Refused, "List.date is missing" },
        { "comprehensive/Missing_TypeCode", Comprehensive, Refused, "DocumentReference.type is missing" },
        { "comprehensive/Missing_UniqueId_Reference", Comprehensive, Refused, "DocumentReference.masterIdentifier is missing" },
        { "comprehensive/Missing_UniqueId_SubmissionSetTypeList", Comprehensive, Refused, "List.identifier is missing" },
        { "comprehensive/Two_Documents_Submit", Comprehensive, Registered, "a List, two DocumentReferences and two Binaries" },

        { "minimal/1_Prerequisite_Single_Document_with_Binary", Minimal, Registered, "List, DocumentReference and Binary with the minimum Minimal Metadata" },
        { "minimal/Bad_Patient_Link", Comprehensive, Refused, "DocumentReference.subject.reference is a bad link" },
        { "minimal/Bad_Patient_Link_List", Comprehensive, Refused, "List.subject.reference is a URL that does not resolve" },
        { "minimal/Bad_Profile", Comprehensive, Refused, "Bundle.meta.profile contains an invalid value" },
        { "minimal/DocumentAddendum", Minimal, Appends, "a second DocumentReference relatesTo the first as appends" },
        { "minimal/DocumentReplace", Minimal, Replaces, "a second DocumentReference relatesTo the first as replaces" },
        { "minimal/DocumentTransforms", Minimal, Transforms, "a second DocumentReference relatesTo the first as transforms" },
        { "minimal/Missing_DocumentReference_with_reference", Minimal, Refused, "no DocumentReference; the List still lists it" },
        { "minimal/Missing_DocumentReference_without_reference", Minimal, Refused, "no DocumentReference; the List lists nothing" },
        { "minimal/Missing_MimeType", Minimal, Refused, "DocumentReference.content.attachment.contentType is missing" },
        { "minimal/Missing_Profile", Minimal, Refused, "Bundle.meta.profile is missing" },
        { "minimal/Missing_SourceId", Minimal, Refused, "List ihe-sourceId extension is missing" },
        { "minimal/Missing_SubmissionSetTypeList", Minimal, Refused, "no SubmissionSet List: a DocumentReference and a Binary only" },
        { "minimal/Missing_SubmissionTime", Minimal, Refused, "List.date is missing" },
        { "minimal/Missing_UniqueId_Reference", Minimal, Refused, "DocumentReference.masterIdentifier is missing" },
        { "minimal/Missing_UniqueId_SubmissionSetTypeList", Minimal, Refused, "List.identifier (usual) is missing" },
        { "minimal/Two_Documents_Submit", Minimal, Registered, "a List, two DocumentReferences and two Binaries" },
    };

    [SkippableTheory]
    [MemberData(nameof(Catalogue))]
    public async Task Each_NIST_Document_Recipient_test_gets_the_answer_its_TestScript_expects(string nist, string metadata, string expected, string nistCase)
    {
        SkipIfAbsent();
        output.WriteLine($"NIST {nist}: {nistCase}");
        var patient = await NistPatientAsync();
        var problems = expected switch
        {
            Refused => await RefusedAsync(nist, metadata, patient),
            Registered => await RegisteredAsync(nist, metadata, patient),
            _ => await RelatedAsync(metadata, expected, patient),
        };
        Assert.True(problems.Count == 0, $"NIST {nist} ({nistCase}) expects {expected}:\n  - {string.Join("\n  - ", problems)}");
    }

    /// <summary>The table above covers the catalogue exactly, and each row expects what its TestScript's module asserts.</summary>
    [SkippableFact]
    public void Every_NIST_Document_Recipient_test_has_a_row_that_expects_what_its_TestScript_runs()
    {
        Skip.If(NistFolder is null, "../shared/ref/ihe/nist-fhirtoolkit-mhd-testcollections is not present");
        var folders = new[] { Comprehensive, Minimal }
            .SelectMany(c => Directory.EnumerateDirectories(Path.Combine(NistFolder!, "MHDv420_DocumentRecipient_" + c))
                .Where(d => File.Exists(Path.Combine(d, "TestScript.xml"))).Select(d => c + "/" + Path.GetFileName(d)))
            .ToHashSet();
        var rows = Catalogue.Select(r => ((string)r[0], (string)r[2])).ToList();
        var problems = new List<string>();
        problems.AddRange(folders.Except(rows.Select(r => r.Item1)).Select(f => $"{f}: NIST test without a row"));
        problems.AddRange(rows.Select(r => r.Item1).Except(folders).Select(r => $"{r}: row without a NIST test folder"));
        foreach (var (nist, expected) in rows.Where(r => folders.Contains(r.Item1)))
        {
            var script = File.ReadAllText(Path.Combine(NistFolder!, "MHDv420_DocumentRecipient_" + nist, "TestScript.xml"));
            var module = Regex.Match(script, @"AggregateModule/(\w+)\.xml").Groups[1].Value;
            var scripted = module switch
            {
                "MHDPDBFails" => Refused,
                "MHDPDBSuccess" or "MHDPDBSuccess2" => Registered,
                "DocumentReplace" => Replaces,
                "DocumentAddendum" => Appends,
                "DocumentTransforms" => Transforms,
                _ => "an unknown module '" + module + "'",
            };
            if (scripted != expected) problems.Add($"{nist}: the row expects {expected}, its TestScript runs {module} ({scripted})");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    // ---- the three kinds of NIST test ----

    async Task<List<string>> RefusedAsync(string nist, string metadata, NistPatient patient)
    {
        var bundle = Submission(metadata, patient, documents: 1);
        ApplyFault(nist[(nist.IndexOf('/') + 1)..], bundle);
        var response = await _http.PostAsync("", Fhir.Json(bundle));
        var text = await response.Content.ReadAsStringAsync();
        var status = (int)response.StatusCode;
        output.WriteLine($"the submission: {status} {Summary(text)}");

        var problems = new List<string>();
        if (status is < 400 or > 499) problems.Add($"the server answered {status}, not a 4xx refusal: {Summary(text)}");
        else if (Parse(text) is not OperationOutcome) problems.Add($"the {status} answer is not an OperationOutcome: {Summary(text)}");
        problems.AddRange(await StoredAsync(bundle));
        return problems;
    }

    async Task<List<string>> RegisteredAsync(string nist, string metadata, NistPatient patient)
    {
        var bundle = Submission(metadata, patient, documents: nist.EndsWith("Two_Documents_Submit", StringComparison.Ordinal) ? 2 : 1);
        var problems = new List<string>();
        var result = await SubmitAsync(bundle, "the submission", problems);
        if (result is null) return problems;

        foreach (var (index, doc) in Documents(bundle))
            await ReadBackAsync(result.Entry[index].Response?.Location, doc, $"DocumentReference of entry {index}", expectedStatus: null, problems);

        var setId = SubmissionSet(bundle)!.Identifier.First(i => i.Use == Identifier.IdentifierUse.Usual).Value;
        await ExpectFoundAsync($"List?code=submissionset&identifier={E(setId!)}&status=current&patient.identifier={E(patient.IdentifierParameter)}", problems);
        foreach (var (_, doc) in Documents(bundle))
            await ExpectFoundAsync($"DocumentReference?identifier={E(doc.MasterIdentifier!.Value!)}&status=current&patient.identifier={E(patient.IdentifierParameter)}", problems);
        return problems;
    }

    /// <summary>
    /// Document relationships (ITI TF-3 4.2.2.2, as the NIST descriptions cite): replaces (RPLC) supersedes
    /// the original; appends (APND) and transforms (XFRM) leave it current. relatesTo.target is the original's
    /// response.location as returned, which is what NIST puts there (${original}).
    /// </summary>
    async Task<List<string>> RelatedAsync(string metadata, string relation, NistPatient patient)
    {
        var problems = new List<string>();
        var original = Submission(metadata, patient, documents: 1);
        var (originalIndex, originalDoc) = Documents(original).Single();
        var first = await SubmitAsync(original, "the original", problems);
        if (first?.Entry[originalIndex].Response?.Location is not { } originalLocation) return problems;
        // Asbestos GETs response.location as it is (FhirClient.readResource): a relative one cannot be read.
        if (!Uri.IsWellFormedUriString(originalLocation, UriKind.Absolute))
            problems.Add($"the original's response.location '{originalLocation}' is relative: the NIST Document_* scripts read it back as is and " +
                "assume an absolute location (minimal Document* description.md, 'Assumption(s)')");
        await ReadBackAsync(originalLocation, originalDoc, "the original before the " + relation, DocumentReferenceStatus.Current, problems);

        var second = Submission(metadata, patient, documents: 1);
        var (newIndex, newDoc) = Documents(second).Single();
        newDoc.RelatesTo =
        [
            new DocumentReference.RelatesToComponent
            {
                Code = relation switch { Replaces => DocumentRelationshipType.Replaces, Appends => DocumentRelationshipType.Appends, _ => DocumentRelationshipType.Transforms },
                Target = new ResourceReference(originalLocation),
            },
        ];
        var answer = await SubmitAsync(second, $"the {relation} submission", problems);
        if (answer is null) return problems;
        await ReadBackAsync(answer.Entry[newIndex].Response?.Location, newDoc, $"the {relation} document", DocumentReferenceStatus.Current, problems);
        await ReadBackAsync(originalLocation, originalDoc, $"the original after the {relation}",
            relation == Replaces ? DocumentReferenceStatus.Superseded : DocumentReferenceStatus.Current, problems);
        return problems;
    }

    // ---- the submissions ----

    /// <summary>
    /// The official MHD 4.2.3 example for the metadata NIST sends, with a fresh SubmissionSet uniqueId and
    /// document uniqueIds (NIST allocates new ones for every submission), whose List and DocumentReferences
    /// refer to the NIST test Patient as the NIST fixtures do (${patientResourceId}); the minimal example's
    /// own in-Bundle Patient is dropped. The reference is relative: NIST puts the cached Patient's fullUrl
    /// there, an absolute URL on whichever server Test_Patients was loaded on, which is a deployment matter
    /// (this server, or one listed in Mhd:PatientIdentitySources), not part of any NIST case.
    /// Two documents: the official Multiple example (Comprehensive); the minimal example's document and Binary
    /// twice (there is no minimal multi-document example).
    /// </summary>
    static Bundle Submission(string metadata, NistPatient patient, int documents)
    {
        Bundle bundle;
        if (metadata == Comprehensive)
            bundle = MhdExamples.Load<Bundle>(documents == 1 ? "Bundle-ex-comprehensiveProvideDocumentBundleSimple.json" : "Bundle-ex-comprehensiveProvideDocumentBundleMultiple.json");
        else
        {
            bundle = MhdExamples.Load<Bundle>("Bundle-ex-minimalProvideDocumentBundleSimple.json");
            bundle.Entry.RemoveAll(e => e.Resource is Patient);
            if (documents == 2) AddSecondDocument(bundle);
        }
        foreach (var resource in bundle.Entry.Select(e => e.Resource))
        {
            if (resource is List set)
            {
                set.Subject = new ResourceReference(patient.Reference);
                foreach (var id in set.Identifier.Where(i => i.Use == Identifier.IdentifierUse.Usual)) id.Value = NewOid();
            }
            else if (resource is DocumentReference doc)
            {
                doc.Subject = new ResourceReference(patient.Reference);
                doc.MasterIdentifier!.Value = NewOid();
            }
        }
        Assert.Equal(documents, Documents(bundle).Count());
        return bundle;
    }

    static void AddSecondDocument(Bundle bundle)
    {
        var docEntry = bundle.Entry.Single(e => e.Resource is DocumentReference);
        var doc = (DocumentReference)docEntry.Resource!;
        var binaryEntry = bundle.Entry.Single(e => e.FullUrl == doc.Content[0].Attachment.Url);
        var docCopy = (Bundle.EntryComponent)docEntry.DeepCopy();
        var binaryCopy = (Bundle.EntryComponent)binaryEntry.DeepCopy();
        docCopy.FullUrl = "urn:uuid:" + Guid.NewGuid();
        binaryCopy.FullUrl = "urn:uuid:" + Guid.NewGuid();
        ((DocumentReference)docCopy.Resource!).Content[0].Attachment.Url = binaryCopy.FullUrl;
        bundle.Entry.Add(docCopy);
        bundle.Entry.Add(binaryCopy);
        SubmissionSet(bundle)!.Entry.Add(new List.EntryComponent { Item = new ResourceReference(docCopy.FullUrl) });
    }

    /// <summary>Each NIST negative case's fault, as its description.md (and the fixture it names) states it.</summary>
    static void ApplyFault(string test, Bundle bundle)
    {
        var set = SubmissionSet(bundle)!;
        var (docIndex, doc) = Documents(bundle).Single();
        switch (test)
        {
            case "Bad_Patient_Link": doc.Subject = new ResourceReference(BadPatientLink); break;
            case "Bad_Patient_Link_SubmissionSetTypeList" or "Bad_Patient_Link_List": set.Subject = new ResourceReference(BadPatientLink); break;
            case "Bad_Profile": bundle.Meta!.Profile = ["http://ihe.net/fhir/StructureDefinition/IHE_MHD"]; break; // the NIST fixture's value
            case "Bad_SourcePatientInfo_Link": doc.Contained.Clear(); break; // sourcePatientInfo still says "#…"
            case "Missing_ContentTypeCode": set.Extension.RemoveAll(x => x.Url == Mhd + "ihe-designationType"); break;
            case "Missing_Document": doc.Content[0].Attachment.Url = null; break;
            case "Missing_Format_Code": doc.Content[0].Format = null; break;
            case "Missing_HealthcareFacilityTypeCode": doc.Context!.FacilityType = null; break;
            case "Missing_LanguageCode": doc.Content[0].Attachment.Language = null; break;
            case "Missing_MimeType": doc.Content[0].Attachment.ContentType = null; break;
            case "Missing_PatientID": doc.Subject = null; break;
            // The NIST fixture has an empty <subject/>, which is no element at all in FHIR: the nearest valid
            // "subject without .reference" is a subject that only names the patient.
            case "Missing_PatientID_Reference": doc.Subject = new ResourceReference { Display = "William EXTRA-ONE" }; break;
            case "Missing_PatientID_SubmissionSetTypeList": set.Subject = null; break;
            case "Missing_PracticeSettingCode": doc.Context!.PracticeSetting = null; break;
            case "Missing_Profile": bundle.Meta!.Profile = []; break;
            case "Missing_SourceId": set.Extension.RemoveAll(x => x.Url == Mhd + "ihe-sourceId"); break;
            case "Missing_SourcePatientId": doc.Context!.SourcePatientInfo = null; break; // the contained Patient stays, as in the NIST fixture
            case "Missing_SubmissionTime": set.Date = null; break;
            case "Missing_TypeCode": doc.Type = null; break;
            case "Missing_UniqueId_Reference": doc.MasterIdentifier = null; break;
            case "Missing_UniqueId_SubmissionSetTypeList": set.Identifier.Clear(); break;
            case "Missing_DocumentReference_with_reference": bundle.Entry.RemoveAt(docIndex); break;
            case "Missing_DocumentReference_without_reference": bundle.Entry.RemoveAt(docIndex); set.Entry.Clear(); break;
            case "Missing_SubmissionSetTypeList": bundle.Entry.RemoveAll(e => e.Resource == set); break;
            default: throw new ArgumentException($"no fault is defined for NIST test {test}");
        }
    }

    // ---- the checks the NIST library modules make ----

    /// <summary>PDBVal/TR_TransactionResponse.xml: 200, a transaction-response, one 201 entry with a location and no outcome per request entry.</summary>
    async Task<Bundle?> SubmitAsync(Bundle bundle, string what, List<string> problems)
    {
        var response = await _http.PostAsync("", Fhir.Json(bundle));
        var text = await response.Content.ReadAsStringAsync();
        output.WriteLine($"{what}: {(int)response.StatusCode} {Summary(text)}");
        if (response.StatusCode != HttpStatusCode.OK || Parse(text) is not Bundle result)
        {
            problems.Add($"{what} was answered {(int)response.StatusCode}, not 200 with a transaction-response: {Summary(text)}");
            return null;
        }
        if (result.Type != Bundle.BundleType.TransactionResponse) problems.Add($"{what}: the answer is a {result.Type} Bundle, not a transaction-response");
        if (result.Entry.Count != bundle.Entry.Count)
        {
            problems.Add($"{what}: the response has {result.Entry.Count} entries for {bundle.Entry.Count} in the request");
            return null;
        }
        for (var i = 0; i < result.Entry.Count; i++)
        {
            var r = result.Entry[i].Response;
            if (r?.Status?.StartsWith("201", StringComparison.Ordinal) != true) problems.Add($"{what}: entry {i} status is '{r?.Status}', not 201");
            if (string.IsNullOrEmpty(r?.Location)) problems.Add($"{what}: entry {i} has no response.location");
            if (r?.Outcome is not null) problems.Add($"{what}: entry {i} carries an outcome");
        }
        return result;
    }

    /// <summary>
    /// ReadDocRef.xml / ReadValidateDocRef.xml: GET response.location exactly as returned (Asbestos
    /// SetupActionRead → FhirClient.readResource does not touch it): a DocumentReference with its subject
    /// as sent, (minimumId) every element it was sent with, and the status the script asserts. Where that
    /// status differs, the resource's current version is read too, so the message says whether the registry
    /// or the location is at fault (a location naming version 1 reads version 1).
    /// </summary>
    async Task ReadBackAsync(string? location, DocumentReference sent, string what, DocumentReferenceStatus? expectedStatus, List<string> problems)
    {
        if (location is null) return; // reported by SubmitAsync
        var url = new Uri(server.BaseUrl, location).ToString();
        var read = await ReadDocumentAsync(url, what, problems);
        if (read is null) return;
        if (read.Subject?.Reference != sent.Subject?.Reference)
            problems.Add($"{what}: subject.reference read back is '{read.Subject?.Reference}', sent '{sent.Subject?.Reference}'");
        var missing = ElementPaths(Serializer.SerializeToString(sent)).Except(ElementPaths(Serializer.SerializeToString(read))).Order(StringComparer.Ordinal).ToList();
        if (missing.Count > 0) problems.Add($"{what}: the server's copy lacks elements that were sent (minimumId): {string.Join(", ", missing)}");
        if (expectedStatus is not { } status || read.Status == status) return;
        var current = Regex.Replace(url, "/_history/[^/?]+$", "");
        var now = current == url ? read : await ReadDocumentAsync(current, what, problems);
        problems.Add($"{what}: GET {url} (response.location, as NIST reads it) gives status {Code(read.Status)}, NIST expects {Code(status)}" +
            (now is null || now == read ? "" : $"; the current version (GET {current}) is {Code(now.Status)}"));
    }

    async Task<DocumentReference?> ReadDocumentAsync(string url, string what, List<string> problems)
    {
        var response = await _http.GetAsync(url);
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode == HttpStatusCode.OK && Parse(text) is DocumentReference read) return read;
        problems.Add($"{what}: GET {url} answered {(int)response.StatusCode}, not a DocumentReference: {Summary(text)}");
        return null;
    }

    static string? Code(DocumentReferenceStatus? status) => status?.ToString().ToLowerInvariant();

    /// <summary>MHDv4SearchSsList.xml / SDR_SearchResponse.xml: exactly one match; fullUrl ends with the id and names no version.</summary>
    async Task ExpectFoundAsync(string query, List<string> problems)
    {
        var response = await _http.GetAsync(query);
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.OK || Parse(text) is not Bundle found)
        {
            problems.Add($"GET {query} answered {(int)response.StatusCode}: {Summary(text)}");
            return;
        }
        if (found.Total != 1) problems.Add($"GET {query} found {found.Total}, NIST expects 1");
        foreach (var e in found.Entry.Where(e => e.Search?.Mode != Bundle.SearchEntryMode.Outcome))
            if (e.FullUrl is null || !e.FullUrl.EndsWith("/" + e.Resource?.Id, StringComparison.Ordinal) || e.FullUrl.Contains("/_history/", StringComparison.Ordinal))
                problems.Add($"GET {query}: entry fullUrl '{e.FullUrl}' does not end with the resource id {e.Resource?.Id} (or names a version)");
    }

    /// <summary>PDBFailsMain.xml: neither the SubmissionSet nor the document is found after a refusal.</summary>
    async Task<IEnumerable<string>> StoredAsync(Bundle bundle)
    {
        var stored = new List<string>();
        var queries = bundle.Entry.Select(e => e.Resource).OfType<List>().SelectMany(l => l.Identifier).Where(i => i.Value is not null).Select(i => "List?identifier=" + E(i.Value!))
            .Concat(Documents(bundle).Where(d => d.Doc.MasterIdentifier?.Value is not null).Select(d => "DocumentReference?identifier=" + E(d.Doc.MasterIdentifier!.Value!)));
        foreach (var query in queries)
        {
            var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(query), HttpStatusCode.OK);
            if (found.Total != 0) stored.Add($"GET {query} finds {found.Total}: the refused submission was stored");
        }
        return stored;
    }

    // ---- the NIST test Patient ----

    sealed record NistPatient(string Reference, string IdentifierParameter);

    static Task<NistPatient>? _patient;
    static readonly Lock Gate = new();

    Task<NistPatient> NistPatientAsync()
    {
        lock (Gate) return _patient ??= LoadPatientAsync(_http);
    }

    /// <summary>
    /// The Patient every NIST Document Recipient script uses (PDBFailsMain.xml: Patient/William_EXTRA-ONE from
    /// the Test_Patients collection), loaded as Test_Patients/TestScript.xml does: searched by given, family and
    /// birthdate, posted (the NIST XML as it is) only when absent. NIST searches by its first identifier.
    /// </summary>
    static async Task<NistPatient> LoadPatientAsync(HttpClient http)
    {
        var xml = File.ReadAllText(Path.Combine(NistFolder!, "Test_Patients", "William_EXTRA-ONE", "Patient", "patient.xml"));
        var patient = (Patient)new FhirXmlDeserializer(new DeserializerSettings()).DeserializeResource(xml);
        var name = patient.Name[0];
        var search = await Fhir.ExpectAsync<Bundle>(await http.GetAsync(
            $"Patient?given={E(name.Given.First()!)}&family={E(name.Family!)}&birthdate={patient.BirthDate}"), HttpStatusCode.OK);
        var id = search.Entry.Select(e => e.Resource?.Id).FirstOrDefault();
        if (id is null)
        {
            var response = await http.PostAsync("Patient", new StringContent(xml, Encoding.UTF8, "application/fhir+xml"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.Created, $"the NIST test Patient William_EXTRA-ONE could not be loaded: {(int)response.StatusCode} {text}");
            id = Parse(text)!.Id;
        }
        return new NistPatient("Patient/" + id, patient.Identifier[0].System + "|" + patient.Identifier[0].Value);
    }

    // ---- small helpers ----

    static string? NistFolder =>
        SharedRef.Find() is { } root && Directory.Exists(Path.Combine(root, "ihe", "nist-fhirtoolkit-mhd-testcollections"))
            ? Path.Combine(root, "ihe", "nist-fhirtoolkit-mhd-testcollections") : null;

    static void SkipIfAbsent()
    {
        Skip.If(NistFolder is null, "../shared/ref/ihe/nist-fhirtoolkit-mhd-testcollections is not present: the NIST catalogue and its test Patient cannot be read");
        MhdExamples.SkipIfAbsent();
    }

    static readonly FhirJsonSerializer Serializer = new();
    static readonly FhirJsonDeserializer Parser = new(new DeserializerSettings());

    static Resource? Parse(string json)
    {
        try { return Parser.DeserializeResource(json); }
        catch (Exception e) when (e is DeserializationFailedException or FormatException or JsonException) { return null; }
    }

    static List? SubmissionSet(Bundle bundle) =>
        bundle.Entry.Select(e => e.Resource).OfType<List>().SingleOrDefault(l => l.Code?.Coding.Any(c => c.Code == "submissionset") == true);

    static IEnumerable<(int Index, DocumentReference Doc)> Documents(Bundle bundle) =>
        bundle.Entry.Select((e, i) => (i, e.Resource as DocumentReference)).Where(x => x.Item2 is not null).Select(x => (x.i, x.Item2!));

    /// <summary>A UUID-derived OID (ITU-T X.667, arc 2.25): a uniqueId no other submission has.</summary>
    static string NewOid() => "urn:oid:2.25." + new BigInteger(Guid.NewGuid().ToByteArray(), isUnsigned: true);

    static string E(string value) => Uri.EscapeDataString(value);

    /// <summary>Every element path in a resource's JSON (array items share their array's path), less those the server owns.</summary>
    static HashSet<string> ElementPaths(string json)
    {
        var paths = new HashSet<string>(StringComparer.Ordinal);
        void Walk(JsonElement e, string path)
        {
            if (e.ValueKind == JsonValueKind.Array) { foreach (var item in e.EnumerateArray()) Walk(item, path); return; }
            if (e.ValueKind != JsonValueKind.Object) return;
            foreach (var p in e.EnumerateObject())
            {
                var child = path.Length == 0 ? p.Name : path + "." + p.Name;
                if (child is "id" or "meta.versionId" or "meta.lastUpdated") continue;
                paths.Add(child);
                Walk(p.Value, child);
            }
        }
        using var doc = JsonDocument.Parse(json);
        Walk(doc.RootElement, "");
        return paths;
    }

    /// <summary>An answer in one line: the OperationOutcome's errors (XDS code, text, where), or the Bundle's shape.</summary>
    static string Summary(string text) => Parse(text) switch
    {
        OperationOutcome oo => string.Join(" | ", oo.Issue
            .Where(i => i.Severity is OperationOutcome.IssueSeverity.Error or OperationOutcome.IssueSeverity.Fatal)
            .Select(i => $"{i.Code?.ToString().ToLowerInvariant()}{(i.Details?.Text is { } d && !d.Contains(' ', StringComparison.Ordinal) ? " " + d : "")}: " +
                $"{Shorten(i.Diagnostics ?? i.Details?.Text ?? "", 220)} @ {string.Join(",", i.Expression)}")),
        Bundle b => $"{b.Type} Bundle, {b.Entry.Count} entries ({string.Join(", ", b.Entry.Select(e => e.Response?.Status))})",
        { } r => r.TypeName,
        null => Shorten(text, 300),
    };

    static string Shorten(string text, int length) => text.Length > length ? text[..length] + "…" : text;
}
