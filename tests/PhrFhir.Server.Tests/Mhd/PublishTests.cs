using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>ITI-105 Simplified Publish and ITI-106 Generate Metadata (the path mobile apps push checkup reports by).</summary>
[Collection("server")]
public sealed class PublishTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    async Task<Patient> PatientAsync(Identifier? id = null) => await PatientAsync(_http, id);

    internal static async Task<Patient> PatientAsync(HttpClient http, Identifier? id) =>
        await Fhir.ExpectAsync<Patient>(await http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Name = [new HumanName { Family = Fhir.Unique("鈴木"), Given = ["花子"] }],
            Identifier = id is null ? [] : [id],
        })), HttpStatusCode.Created);

    async Task<byte[]> RawAsync(string url)
    {
        var get = new HttpRequestMessage(HttpMethod.Get, url);
        get.Headers.TryAddWithoutValidation("Accept", "*/*");
        return await (await _http.SendAsync(get)).Content.ReadAsByteArrayAsync();
    }

    static DocumentReference Inline(string patientId, byte[] data, string uid) => new()
    {
        Status = DocumentReferenceStatus.Current,
        MasterIdentifier = new Identifier("urn:ietf:rfc:3986", uid),
        Subject = new ResourceReference($"Patient/{patientId}"),
        Type = new CodeableConcept("http://jpfhir.jp/fhir/Common/CodeSystem/doc-typecodes", "53576-5", "検診・健診報告書"),
        Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "application/pdf", Data = data, Title = "健診結果.pdf" } }],
    };

    static string Uid() => "urn:oid:1.2.392.200119.6.999." + Random.Shared.NextInt64(1, long.MaxValue);

    [Fact]
    public async System.Threading.Tasks.Task Simplified_publish_stores_the_document_as_a_Binary_with_a_SubmissionSet()
    {
        var patient = await PatientAsync();
        var pdf = Encoding.UTF8.GetBytes("%PDF-1.7 健康診断結果 " + Guid.NewGuid());
        var response = await _http.PostAsync("DocumentReference", Fhir.Json(Inline(patient.Id, pdf, Uid())));
        var doc = await Fhir.ExpectAsync<DocumentReference>(response, HttpStatusCode.Created);
        Assert.NotNull(response.Headers.Location);

        var attachment = doc.Content[0].Attachment;
        Assert.Null(attachment.Data);
        Assert.Equal(pdf.Length, attachment.SizeUnsignedInt);
        Assert.Equal(SHA1.HashData(pdf), attachment.Hash);
        Assert.Equal(pdf, await RawAsync(attachment.Url));

        var sets = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"List?code=submissionset&patient={patient.Id}"), HttpStatusCode.OK);
        var set = (List)Assert.Single(sets.Entry).Resource;
        Assert.Equal($"DocumentReference/{doc.Id}", set.Entry.Single().Item.Reference);
    }

    [Fact]
    public async System.Threading.Tasks.Task Simplified_publish_with_a_wrong_hash_or_an_unknown_patient_stores_nothing()
    {
        var patient = await PatientAsync();
        var pdf = Encoding.UTF8.GetBytes("%PDF-1.7 " + Guid.NewGuid());
        var wrongHash = Inline(patient.Id, pdf, Uid());
        wrongHash.Content[0].Attachment.Hash = SHA1.HashData("other"u8.ToArray());
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("DocumentReference", Fhir.Json(wrongHash)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSNonIdenticalHash", oo.Issue[0].Details.Text);

        var unknown = Inline("nobody-" + Guid.NewGuid().ToString("N")[..8], pdf, Uid());
        oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("DocumentReference", Fhir.Json(unknown)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSUnknownPatientId", oo.Issue[0].Details.Text);

        foreach (var d in new[] { wrongHash, unknown })
        {
            var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?identifier={Uri.EscapeDataString(d.MasterIdentifier.Value)}"), HttpStatusCode.OK);
            Assert.Equal(0, found.Total);
        }
    }

    // ---- ITI-106 with the official HS037 sample -------------------------------------------------

    internal static JsonObject Hs037(out Identifier patientId, out string uid)
    {
        var path = SharedRef.Find() is { } root ? Path.Combine(root, "jp-documents", "echeckup", "package", "Bundle-Bundle-eCheckupReport-Sample-01.json") : null;
        Skip.If(path is null || !File.Exists(path), "../shared/ref/jp-documents/echeckup is not present");
        return Registrable(JsonNode.Parse(File.ReadAllText(path!))!.AsObject(), out patientId, out uid);
    }

    /// <summary>A document made registrable again: its own document identifier and a new patient number (each test registers its own copy).</summary>
    internal static JsonObject Registrable(JsonObject doc, out Identifier patientId, out string uid)
    {
        uid = Fhir.Unique("doc-");
        doc["identifier"]!["value"] = uid;
        var patient = doc["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == "Patient");
        var value = Fhir.Unique("p");
        patient["identifier"]![0]!["value"] = value;
        patientId = new Identifier((string)patient["identifier"]![0]!["system"]!, value);
        return doc;
    }

    internal static StringContent Parameters(JsonNode document) => new(new JsonObject
    {
        ["resourceType"] = "Parameters",
        ["parameter"] = new JsonArray(new JsonObject { ["name"] = "document", ["resource"] = document }),
    }.ToJsonString(), Encoding.UTF8, "application/fhir+json");

    [SkippableFact]
    public async System.Threading.Tasks.Task Generate_metadata_registers_an_HS037_report_with_metadata_from_its_Composition()
    {
        var document = Hs037(out var patientId, out var uid);
        var patient = await PatientAsync(patientId);

        var response = await _http.PostAsync("DocumentReference/$generate-metadata", Parameters(document));
        var output = await Fhir.ExpectAsync<Parameters>(response, HttpStatusCode.OK);
        var reference = ((ResourceReference)output.Parameter.Single(p => p.Name == "DocumentReference").Value).Reference;
        var doc = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync(reference), HttpStatusCode.OK);

        Assert.Equal($"Patient/{patient.Id}", doc.Subject.Reference);
        Assert.Equal(uid, doc.MasterIdentifier.Value);
        Assert.Equal("53576-5", doc.Type.Coding[0].Code);             // Composition.type
        Assert.Equal("10", doc.Category[0].Coding[0].Code);           // 特定健診
        Assert.Equal("健康診断結果のお知らせ", doc.Description);         // Composition.title
        Assert.Equal("010", doc.Context.Event[0].Coding[0].Code);     // Composition.event.code
        Assert.Equal("2024-04-05", doc.Context.Period.Start);
        Assert.Equal(2, doc.Author.Count);
        Assert.All(doc.Author, a => Assert.StartsWith("#", a.Reference));
        Assert.Equal("http://jpfhir.jp/fhir/eCheckup/StructureDefinition/JP_Bundle_eCheckupGeneral", doc.Content[0].Format.Code);
        Assert.Equal("application/fhir+json", doc.Content[0].Attachment.ContentType);

        var stored = JsonNode.Parse(await RawAsync(doc.Content[0].Attachment.Url))!;
        Assert.Equal(uid, (string?)stored["identifier"]!["value"]);
        var byType = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?patient={patient.Id}&type=53576-5&status=current"), HttpStatusCode.OK);
        Assert.Equal(1, byType.Total);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Generate_metadata_refuses_an_invalid_report_and_stores_nothing()
    {
        var document = Hs037(out var patientId, out var uid);
        await PatientAsync(patientId);
        var copy = document["entry"]![0]!.DeepClone(); // a second Composition: the profile allows one
        copy["fullUrl"] = "urn:uuid:0f6c8a52-2b7e-4d39-9d0e-" + Random.Shared.Next(100000, 999999) + "000000";
        document["entry"]!.AsArray().Add(copy);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("DocumentReference/$generate-metadata", Parameters(document)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("Parameters.parameter[0].resource", oo.Issue[0].Expression.Single());
        var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?identifier={Uri.EscapeDataString(uid)}"), HttpStatusCode.OK);
        Assert.Equal(0, found.Total);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Generate_metadata_for_an_unregistered_person_is_refused()
    {
        var document = Hs037(out _, out var uid);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("DocumentReference/$generate-metadata", Parameters(document)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("XDSUnknownPatientId", oo.Issue[0].Details.Text);
    }

    [Fact]
    public async System.Threading.Tasks.Task Generate_metadata_from_a_PDF_says_it_needs_a_FHIR_document()
    {
        var body = new Parameters { Parameter = [new() { Name = "document", Resource = new Binary { ContentType = "application/pdf", Data = "%PDF"u8.ToArray() } }] };
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("DocumentReference/$generate-metadata", Fhir.Json(body)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("FHIRDocumentNotSupported", oo.Issue[0].Details.Text);
    }
}
