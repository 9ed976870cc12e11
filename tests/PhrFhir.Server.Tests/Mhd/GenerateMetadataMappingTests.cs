using System.Net;
using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>
/// ITI-106: each DocumentReference element the R4 "FHIR Composition" mapping (documentreference-mappings.html) and MHD's
/// FHIR-document example fill, generated from each document family: HS037 (the official eCheckup 1.1.3 Sample-01), HS038
/// (the official CLINS referral Example-01) and HS039 (our own example: no official HS039 Bundle exists, shared/ref README).
/// One case per element and document; a case fails alone and names its cell.
/// </summary>
[Collection("server")]
public sealed class GenerateMetadataMappingTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static JsonObject Load(string document)
    {
        string? path = document switch
        {
            "HS037" => SharedRef.Find() is { } r37 ? Path.Combine(r37, "jp-documents", "echeckup", "package", "Bundle-Bundle-eCheckupReport-Sample-01.json") : null,
            "HS038" => SharedRef.Find() is { } r38 ? Path.Combine(r38, "jp-documents", "clins", "examples-json", "Bundle-Bundle-CLINS-Referral-Example-01.json") : null,
            _ => Repository.File("examples", "documents", "HS039-discharge-summary.json"),
        };
        Skip.If(path is null || !File.Exists(path), $"{document}: {path ?? "../shared/ref"} is not present");
        return JsonNode.Parse(File.ReadAllText(path!))!.AsObject();
    }

    /// <summary>The case's check on the generated DocumentReference; the document may be transformed first (documented in the case).</summary>
    sealed record Case(string Document, Action<JsonObject>? Transform, Action<DocumentReference> Check);

    static Resource Contained(DocumentReference doc, ResourceReference r) =>
        Assert.Single(doc.Contained, c => "#" + c.Id == r.Reference);

    static readonly Dictionary<string, Case> Cases = new()
    {
        // context.encounter ← Composition.encounter: HS037's Encounter has no identifier, so it is contained; HS038/HS039's are named by identifier (as in MHD's example).
        ["HS037 context.encounter"] = new("HS037", null, d => Assert.Equal("2020-04-04", Assert.IsType<Encounter>(Contained(d, d.Context.Encounter.Single())).Period.Start)),
        ["HS038 context.encounter"] = new("HS038", null, d => Assert.Equal("192844", d.Context.Encounter.Single().Identifier.Value)),
        ["HS039 context.encounter"] = new("HS039", null, d => Assert.Equal("ADM-2025-000311", d.Context.Encounter.Single().Identifier.Value)),
        // context.period ← Composition.event.period
        ["HS037 context.period"] = new("HS037", null, d => Assert.Equal(("2024-04-05", "2024-04-05"), (d.Context.Period.Start, d.Context.Period.End))),
        ["HS038 context.period"] = new("HS038", null, d => Assert.Equal("2020-08-21", d.Context.Period.Start)),
        ["HS039 context.period"] = new("HS039", null, d => Assert.Equal(("2025-03-03T10:20:00+09:00", "2025-03-14T11:00:00+09:00"), (d.Context.Period.Start, d.Context.Period.End))),
        // context.period falls back to the Encounter's period when the Composition has no event.period (HS037 with its event.period removed)
        ["HS037 context.period from the Encounter"] = new("HS037", j => j["entry"]![0]!["resource"]!["event"]![0]!.AsObject().Remove("period"),
            d => Assert.Equal("2020-04-04", d.Context.Period.Start)),
        // context.facilityType ← the care organisation's type (Encounter.serviceProvider, else the custodian)
        ["HS037 context.facilityType"] = new("HS037", null, d => Assert.Equal("http://terminology.hl7.org/CodeSystem/organization-type|prov", Code(d.Context.FacilityType))),
        ["HS038 context.facilityType"] = new("HS038", null, d => Assert.Equal("http://terminology.hl7.org/CodeSystem/organization-type|prov", Code(d.Context.FacilityType))),
        ["HS039 context.facilityType"] = new("HS039", null, d => Assert.Equal("http://terminology.hl7.org/CodeSystem/organization-type|prov", Code(d.Context.FacilityType))),
        // context.practiceSetting ← CLINS: the organisation's JP_eCS_Department (SS-MIX2 診療科); eCheckup: the Encounter's class (健診)
        ["HS037 context.practiceSetting"] = new("HS037", null, d => Assert.Equal("http://jpfhir.jp/fhir/eCheckup/CodeSystem/encounter-category|checkup", Code(d.Context.PracticeSetting))),
        ["HS038 context.practiceSetting"] = new("HS038", null, d => Assert.Equal("http://jami.jp/SS-MIX2/CodeSystem/ClinicalDepartment|26", Code(d.Context.PracticeSetting))),
        ["HS039 context.practiceSetting"] = new("HS039", null, d => Assert.StartsWith("http://jami.jp/SS-MIX2/CodeSystem/ClinicalDepartment|", Code(d.Context.PracticeSetting))),
        // custodian ← Composition.custodian: the same Organization as the authoring one is one contained copy, not two
        ["HS037 custodian"] = new("HS037", null, CustodianIsTheAuthoringOrganization),
        ["HS038 custodian"] = new("HS038", null, CustodianIsTheAuthoringOrganization),
        ["HS039 custodian"] = new("HS039", null, CustodianIsTheAuthoringOrganization),
        // context.related ← Composition.event.detail (HS037: the checkup Encounter, the same contained copy as context.encounter)
        ["HS037 context.related"] = new("HS037", null, d => Assert.Equal(d.Context.Encounter.Single().Reference, d.Context.Related.Single().Reference)),
        // securityLabel ← Composition.confidentiality (HS038 given confidentiality R: the profile allows 0..1)
        ["HS038 securityLabel"] = new("HS038", j => j["entry"]![0]!["resource"]!["confidentiality"] = "R",
            d => Assert.Equal("http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R", Code(d.SecurityLabel.Single()))),
        ["HS038 no securityLabel without confidentiality"] = new("HS038", null, d => Assert.Empty(d.SecurityLabel)),
        // authenticator ← the legal attester (HS039 given one: its author Practitioner, mode legal)
        ["HS039 authenticator"] = new("HS039", j => j["entry"]![0]!["resource"]!["attester"] = new JsonArray(new JsonObject
        {
            ["mode"] = "legal",
            ["time"] = "2025-03-14T12:00:00+09:00",
            ["party"] = new JsonObject { ["reference"] = (string)j["entry"]![0]!["resource"]!["author"]![0]!["reference"]! },
        }), d => Assert.Equal(d.Author[0].Reference, d.Authenticator.Reference)),
        // already mapped before: type, category, event, format — kept in the table so all three families are held to them
        ["HS037 type"] = new("HS037", null, d => Assert.Equal("53576-5", d.Type.Coding[0].Code)),
        ["HS038 type"] = new("HS038", null, d => Assert.Equal("57133-1", d.Type.Coding[0].Code)),
        ["HS039 type"] = new("HS039", null, d => Assert.Equal("18842-5", d.Type.Coding[0].Code)),
        ["HS038 category"] = new("HS038", null, d => Assert.Equal("OUTPATIENT", d.Category.Single().Coding[0].Code)),
        ["HS039 category"] = new("HS039", null, d => Assert.Equal("DISCHARGE", d.Category.Single().Coding[0].Code)),
        ["HS038 content.format"] = new("HS038", null, d => Assert.Equal("http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral", d.Content[0].Format.Code)),
        ["HS039 content.format"] = new("HS039", null, d => Assert.Equal("http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eDischargeSummary", d.Content[0].Format.Code)),
    };

    static string Code(CodeableConcept? c) => c?.Coding.SingleOrDefault() is { } coding ? coding.System + "|" + coding.Code : "(none)";

    static void CustodianIsTheAuthoringOrganization(DocumentReference d)
    {
        Assert.StartsWith("#", d.Custodian.Reference);
        Assert.Contains(d.Author, a => a.Reference == d.Custodian.Reference);
        Assert.IsType<Organization>(Contained(d, d.Custodian));
        Assert.Single(d.Contained.OfType<Organization>());
    }

    public static TheoryData<string> Elements() => [.. Cases.Keys];

    [SkippableTheory]
    [MemberData(nameof(Elements))]
    public async System.Threading.Tasks.Task Generate_metadata_maps_the_element_from_the_document(string element)
    {
        var (document, transform, check) = Cases[element];
        var json = PublishTests.Registrable(Load(document), out var patientId, out _);
        transform?.Invoke(json);
        await PublishTests.PatientAsync(_http, patientId);

        var response = await _http.PostAsync("DocumentReference/$generate-metadata", PublishTests.Parameters(json));
        var output = await Fhir.ExpectAsync<Parameters>(response, HttpStatusCode.OK);
        var reference = ((ResourceReference)output.Parameter.Single(p => p.Name == "DocumentReference").Value).Reference;
        var doc = await Fhir.ExpectAsync<DocumentReference>(await _http.GetAsync(reference), HttpStatusCode.OK);
        check(doc);
    }
}
