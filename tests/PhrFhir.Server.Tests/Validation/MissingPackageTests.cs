using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Validation;

/// <summary>
/// A server started with no package sources at all (a fresh clone, offline): its JP and MHD
/// families are unavailable. HS037 families keep the default policy `reject`, JP-CLINS is set to
/// `warn`, so both answers to a document that cannot be checked are seen (issue #11 finding 14).
/// </summary>
public sealed class ServerWithoutPackagesFixture : ServerFixture
{
    protected override IEnumerable<string> PackageArguments() =>
        ["--Packages:Sources=", "--Validation:Policies:jp-clins=Warn"];
}

[CollectionDefinition("server-without-packages")]
public sealed class ServerWithoutPackagesCollection : ICollectionFixture<ServerWithoutPackagesFixture>;

[Collection("server-without-packages")]
public sealed class MissingPackageTests(ServerWithoutPackagesFixture server)
{
    readonly HttpClient _http = server.Http;

    /// <summary>An official document from ../shared/ref with a fresh identifier and a tag of its own, so each test stores its own copy.</summary>
    internal static JsonObject Official(string relative)
    {
        var root = SharedRef.Find();
        Skip.If(root is null, "../shared/ref is not present: the official documents cannot be read");
        var doc = JsonNode.Parse(File.ReadAllText(Path.Combine(root!, relative)))!.AsObject();
        doc["identifier"]!["value"] = Fhir.Unique("doc-");
        doc["meta"]!["tag"] = new JsonArray(new JsonObject { ["system"] = "urn:phrfhir:test", ["code"] = Fhir.Unique("doc") });
        return doc;
    }

    static JsonObject Hs037() => Official("jp-documents/echeckup/package/Bundle-Bundle-eCheckupReport-Sample-01.json");
    static JsonObject Hs038() => Official("jp-documents/clins/examples-json/Bundle-Bundle-CLINS-Referral-Example-01.json");

    static StringContent Json(JsonNode node) => new(node.ToJsonString(), Encoding.UTF8, "application/fhir+json");

    async Task<int> StoredCopiesAsync(JsonObject doc) =>
        (await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(
            $"Bundle?_tag=urn:phrfhir:test|{(string)doc["meta"]!["tag"]![0]!["code"]!}"), HttpStatusCode.OK)).Total ?? -1;

    [SkippableFact]
    public async System.Threading.Tasks.Task A_document_whose_packages_are_missing_is_refused_under_reject_naming_the_package_and_why()
    {
        var doc = Hs037();
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Bundle", Json(doc)), HttpStatusCode.UnprocessableEntity);
        var issue = oo.Issue[0];
        Assert.Equal(OperationOutcome.IssueType.NotSupported, issue.Code);
        Assert.Contains("JP_Bundle_eCheckupGeneral", issue.Diagnostics);
        Assert.Contains("jp-eCheckupReport.r4#", issue.Diagnostics);
        Assert.Contains("no package sources are configured", issue.Diagnostics);
        Assert.Equal(0, await StoredCopiesAsync(doc));
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_document_whose_packages_are_missing_is_stored_under_warn_with_a_not_supported_warning()
    {
        var doc = Hs038();
        var request = new HttpRequestMessage(HttpMethod.Post, "Bundle") { Content = Json(doc) };
        request.Headers.Add("Prefer", "return=OperationOutcome");
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.SendAsync(request), HttpStatusCode.Created);
        Assert.Contains(oo.Issue, i => i.Severity == OperationOutcome.IssueSeverity.Warning && i.Code == OperationOutcome.IssueType.NotSupported
                                       && i.Diagnostics.Contains("jp-eCSCLINS.r4#1.5.2", StringComparison.Ordinal));
        Assert.Equal(1, await StoredCopiesAsync(doc));
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task Validate_says_the_profile_was_not_checked_and_which_package_is_missing()
    {
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Bundle/$validate", Json(Hs037())), HttpStatusCode.OK);
        Assert.Contains(oo.Issue, i => i.Code == OperationOutcome.IssueType.NotSupported && i.Diagnostics.Contains("jp-eCheckupReport.r4#", StringComparison.Ordinal)
                                       && i.Diagnostics.Contains("not in the package cache", StringComparison.Ordinal));
    }

    [Fact]
    public async System.Threading.Tasks.Task Without_packages_the_CapabilityStatement_claims_no_profile_and_no_IG_search_parameter()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await _http.GetAsync("metadata"), HttpStatusCode.OK);
        Assert.All(cs.Rest[0].Resource, r => Assert.Empty(r.SupportedProfile));
        var dr = cs.Rest[0].Resource.Single(r => r.Type == "DocumentReference");
        Assert.DoesNotContain(dr.SearchParam, p => p.Name == "creation");
    }
}
