using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests.Validation;

/// <summary>The profiles the server enforces are visible, read-only, at their canonical URLs.</summary>
[Collection("server")]
public sealed class ConformanceEndpointTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    [SkippableFact]
    public async System.Threading.Tasks.Task The_HS037_Bundle_profile_is_served_by_its_url_and_id()
    {
        Skip.If(SharedRef.Find() is null, "../shared/ref is not present: no conformance packages are loaded");
        const string url = "http://jpfhir.jp/fhir/eCheckup/StructureDefinition/JP_Bundle_eCheckupGeneral";
        // Served as published (the JP package has empty markdown comments, which a strict parser refuses): read as JSON.
        var found = await JsonAsync($"StructureDefinition?url={Uri.EscapeDataString(url)}");
        Assert.True((int)found["total"]! >= 1, "JP_Bundle_eCheckupGeneral is not served");
        var sd = found["entry"]![0]!["resource"]!;
        Assert.Equal(url, (string?)sd["url"]);
        var byId = await JsonAsync($"StructureDefinition/{(string?)sd["id"]}");
        Assert.Equal(url, (string?)byId["url"]);

        var mhd = await JsonAsync("StructureDefinition?url=" + Uri.EscapeDataString("https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.DocumentReference"));
        Assert.Equal(1, (int)mhd["total"]!);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task The_CapabilityStatement_lists_the_enforced_profiles_per_resource_type()
    {
        Skip.If(SharedRef.Find() is null, "../shared/ref is not present: no conformance packages are loaded");
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await _http.GetAsync("metadata"), HttpStatusCode.OK);
        string[] Profiles(string type) => cs.Rest[0].Resource.Single(r => r.Type == type).SupportedProfile.ToArray();
        Assert.Contains("http://jpfhir.jp/fhir/eCheckup/StructureDefinition/JP_Bundle_eCheckupGeneral", Profiles("Bundle"));
        Assert.Contains("http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral", Profiles("Bundle"));
        Assert.Contains("https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.DocumentReference", Profiles("DocumentReference"));
        Assert.Contains("http://jpfhir.jp/fhir/core/StructureDefinition/JP_Patient", Profiles("Patient"));
        // Only profiles of the type itself: no extensions, no other resource's profiles.
        Assert.DoesNotContain(Profiles("Patient"), p => p.Contains("Extension", StringComparison.Ordinal) || p.Contains("Bundle", StringComparison.Ordinal));
    }

    async Task<System.Text.Json.Nodes.JsonNode> JsonAsync(string url)
    {
        var response = await _http.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return System.Text.Json.Nodes.JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
    }

    [Fact]
    public async System.Threading.Tasks.Task Conformance_resources_are_read_only_and_unknown_parameters_are_refused()
    {
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("StructureDefinition", Fhir.Json(new StructureDefinition { Url = "http://x" })), HttpStatusCode.MethodNotAllowed);
        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync("StructureDefinition?bogus=1"), HttpStatusCode.BadRequest);
        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync("StructureDefinition/no-such-profile"), HttpStatusCode.NotFound);
    }
}
