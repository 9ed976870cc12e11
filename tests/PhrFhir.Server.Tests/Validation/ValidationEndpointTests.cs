using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Validation;

/// <summary>$validate and validation on write, against the official HS037 sample (read from ../shared/ref).</summary>
[Collection("server")]
public sealed class ValidationEndpointTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static string? Hs037Path => SharedRef.Find() is { } root
        ? Path.Combine(root, "jp-documents", "echeckup", "package", "Bundle-Bundle-eCheckupReport-Sample-01.json") : null;

    /// <summary>The official sample with a fresh Bundle.identifier, so each test can store its own copy.</summary>
    static JsonObject Hs037()
    {
        Skip.If(Hs037Path is null || !File.Exists(Hs037Path), "../shared/ref/jp-documents/echeckup is not present");
        var doc = JsonNode.Parse(File.ReadAllText(Hs037Path!))!.AsObject();
        doc["identifier"]!["value"] = Fhir.Unique("hs037-");
        doc["meta"]!["tag"] = new JsonArray(new JsonObject { ["system"] = "urn:phrfhir:test", ["code"] = Fhir.Unique("doc") });
        return doc;
    }

    static StringContent Json(JsonNode node) => new(node.ToJsonString(), Encoding.UTF8, "application/fhir+json");

    static JsonObject Composition(JsonObject doc) =>
        doc["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == "Composition");

    async Task<int> StoredCopiesAsync(JsonObject doc) =>
        (await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(
            $"Bundle?_tag=urn:phrfhir:test|{(string)doc["meta"]!["tag"]![0]!["code"]!}"), HttpStatusCode.OK)).Total ?? -1;

    /// <summary>A fault only the HS037 profile sees: R4 allows a Bundle without identifier, JP_Bundle_eCheckupGeneral does not.</summary>
    static void BreakProfile(JsonObject doc) => doc.Remove("identifier");

    [SkippableFact]
    public async System.Threading.Tasks.Task Validate_of_the_official_HS037_sample_reports_no_errors()
    {
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Bundle/$validate", Json(Hs037())), HttpStatusCode.OK);
        Assert.DoesNotContain(oo.Issue, i => i.Severity is OperationOutcome.IssueSeverity.Error or OperationOutcome.IssueSeverity.Fatal);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Validate_names_the_broken_element_and_answers_200()
    {
        var doc = Hs037();
        BreakProfile(doc);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("$validate", Json(doc)), HttpStatusCode.OK);
        var errors = oo.Issue.Where(i => i.Severity == OperationOutcome.IssueSeverity.Error).ToList();
        Assert.NotEmpty(errors);
        Assert.Contains(errors, i => i.Expression.Any(e => e.Contains("identifier", StringComparison.Ordinal))
                                     || (i.Diagnostics ?? "").Contains("identifier", StringComparison.Ordinal)); // bdl-9 / the profile's Bundle.identifier 1..1
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Validate_accepts_Parameters_with_a_resource()
    {
        var doc = Hs037();
        var parameters = new JsonObject
        {
            ["resourceType"] = "Parameters",
            ["parameter"] = new JsonArray(new JsonObject { ["name"] = "resource", ["resource"] = doc }, new JsonObject { ["name"] = "mode", ["valueCode"] = "create" }),
        };
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("$validate", Json(parameters)), HttpStatusCode.OK);
        Assert.DoesNotContain(oo.Issue, i => i.Severity == OperationOutcome.IssueSeverity.Error);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Validate_of_a_body_the_parser_rejects_still_reports_every_problem()
    {
        var doc = Hs037();
        doc["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == "Patient")["gender"] = "otoko";
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("$validate", Json(doc)), HttpStatusCode.OK);
        Assert.Contains(oo.Issue, i => i.Severity == OperationOutcome.IssueSeverity.Error && (i.Diagnostics ?? "").Contains("otoko", StringComparison.Ordinal));
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_valid_HS037_document_is_stored_and_an_invalid_one_is_refused_with_nothing_stored()
    {
        var good = Hs037();
        await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("Bundle", Json(good)), HttpStatusCode.Created);
        Assert.Equal(1, await StoredCopiesAsync(good));

        var bad = Hs037();
        BreakProfile(bad);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Bundle", Json(bad)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("profile", oo.Issue[0].Diagnostics);
        Assert.True(oo.Issue.Count > 1, "the validation issues follow the summary");
        Assert.Equal(0, await StoredCopiesAsync(bad));
    }

    /// <summary>
    /// Issue #14: the eCheckup 1.5.0 sample declares its Practitioner/Organization/Encounter as `…|x.x.x-instance`
    /// (an IG build placeholder); they are validated against the loaded version, so the document is stored.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task An_HS037_1_5_0_document_with_placeholder_profile_versions_is_stored()
    {
        var doc = MissingPackageTests.Official("jp-documents/echeckup/sushi-compiled-1.5.0/Bundle-Bundle-eCheckupReport-Sample-01.json");
        // 1.5.0 constrains the identifier (invariant valid-value-bundleIdenfifier: 医療機関番号^西暦^id); keep the form, make it new.
        doc["identifier"]!["value"] = "1318814790^2024^" + Fhir.Unique("hs037-");
        await Fhir.ExpectAsync<Bundle>(await _http.PostAsync("Bundle", Json(doc)), HttpStatusCode.Created);
        Assert.Equal(1, await StoredCopiesAsync(doc));
    }

    /// <summary>
    /// Issue #14: the official CLINS referral declaring the Bundle profile of the superseded eReferral IG 1.1.x is
    /// refused with one issue that names the CLINS profile to declare (not dozens of CLINS errors), nothing stored.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_legacy_eReferral_document_is_refused_with_one_issue_naming_the_CLINS_profile()
    {
        var doc = MissingPackageTests.Official("jp-documents/clins/examples-json/Bundle-Bundle-CLINS-Referral-Example-01.json");
        doc["meta"]!["profile"] = new JsonArray("http://jpfhir.jp/fhir/eReferral/StructureDefinition/JP_Bundle_eReferral");

        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Bundle", Json(doc)), HttpStatusCode.UnprocessableEntity);

        var superseded = Assert.Single(oo.Issue, i => i.Code == OperationOutcome.IssueType.NotSupported);
        Assert.Contains("Declare http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral", superseded.Diagnostics);
        Assert.Contains("置き換えられ", superseded.Details.Text);
        Assert.Equal(2, oo.Issue.Count); // the refusal's summary, then that one issue
        Assert.Equal(0, await StoredCopiesAsync(doc));
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task An_invalid_document_inside_a_transaction_is_located_by_its_entry()
    {
        var bad = Hs037();
        BreakProfile(bad);
        var transaction = new JsonObject
        {
            ["resourceType"] = "Bundle",
            ["type"] = "transaction",
            ["entry"] = new JsonArray(new JsonObject { ["resource"] = bad, ["request"] = new JsonObject { ["method"] = "POST", ["url"] = "Bundle" } }),
        };
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Json(transaction)), HttpStatusCode.UnprocessableEntity);
        Assert.Equal("Bundle.entry[0].resource", oo.Issue[0].Expression.Single());
        Assert.Equal(0, await StoredCopiesAsync(bad));
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task An_invalid_HS037_pushed_through_ITI_65_is_refused_with_nothing_stored()
    {
        Mhd.MhdExamples.SkipIfAbsent();
        var bad = Hs037();
        BreakProfile(bad);
        var bytes = Encoding.UTF8.GetBytes(bad.ToJsonString());

        // The official Minimal ITI-65 example, carrying the broken HS037 as its document.
        var bundle = Mhd.MhdExamples.Load<Bundle>("Bundle-ex-minimalProvideDocumentBundleSimple.json");
        Mhd.MhdExamples.MakeUniqueIds(bundle);
        var doc = bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>().Single();
        var binary = (Binary)bundle.Entry.Single(e => e.FullUrl == doc.Content[0].Attachment.Url).Resource;
        binary.ContentType = doc.Content[0].Attachment.ContentType = "application/fhir+json";
        binary.Data = bytes;
        doc.Content[0].Attachment.SizeUnsignedInt = bytes.Length;
        doc.Content[0].Attachment.Hash = System.Security.Cryptography.SHA1.HashData(bytes);
        var uid = doc.MasterIdentifier.Value;
        var binaryIndex = bundle.Entry.FindIndex(e => e.Resource == binary);
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.UnprocessableEntity);
        Assert.True($"Bundle.entry[{binaryIndex}].resource.data" == oo.Issue[0].Expression.Single(),
            string.Join("\n", oo.Issue.Select(i => $"{i.Severity} {string.Join(",", i.Expression)} {i.Diagnostics}")));
        var docs = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?identifier={Uri.EscapeDataString(uid)}"), HttpStatusCode.OK);
        Assert.Equal(0, docs.Total);
    }
}
