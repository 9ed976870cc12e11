using System.Net;
using System.Text;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// Every bad input is answered with an OperationOutcome (never a bare string or a 5xx), and stores
/// nothing: each case carries a unique family name and checks afterwards that no Patient has it.
/// </summary>
[Collection("server")]
public sealed class BadInputTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    public static TheoryData<string, string, string, string, HttpStatusCode, string?> Cases => new()
    {
        // case, method, path, body ({F} = the case's unique family), expected status, expected expression
        { "malformed JSON", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}", HttpStatusCode.BadRequest, null },
        { "not an object", "POST", "Patient", "[\"{F}\"]", HttpStatusCode.BadRequest, null },
        { "wrong resourceType for the URL", "POST", "Patient", "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"{F}\"}}", HttpStatusCode.BadRequest, "resourceType" },
        { "unknown resourceType", "POST", "Patient", "{\"resourceType\":\"Patientx\",\"name\":[{\"family\":\"{F}\"}]}", HttpStatusCode.BadRequest, null },
        { "unknown element", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}],\"nickname\":\"x\"}", HttpStatusCode.BadRequest, "Patient.nickname" },
        { "invalid date", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}],\"birthDate\":\"1980-13-45\"}", HttpStatusCode.BadRequest, "Patient.birthDate" },
        { "invalid code", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}],\"gender\":\"robot\"}", HttpStatusCode.BadRequest, "Patient.gender" },
        { "boolean as string", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}],\"active\":\"yes\"}", HttpStatusCode.BadRequest, "Patient.active" },
        { "id mismatch on update", "PUT", "Patient/abc-1", "{\"resourceType\":\"Patient\",\"id\":\"abc-2\",\"name\":[{\"family\":\"{F}\"}]}", HttpStatusCode.BadRequest, "Patient.id" },
        { "no id on update", "PUT", "Patient/abc-3", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}]}", HttpStatusCode.BadRequest, "Patient.id" },
        { "invalid id on update", "PUT", "Patient/a_b", "{\"resourceType\":\"Patient\",\"id\":\"a_b\",\"name\":[{\"family\":\"{F}\"}]}", HttpStatusCode.BadRequest, "Patient.id" },
        { "malformed XML", "POST", "Patient", "<Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"{F}\"/></name>", HttpStatusCode.BadRequest, null },
        { "XML with a DTD (XXE)", "POST", "Patient", "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"{F}&x;\"/></name></Patient>", HttpStatusCode.BadRequest, null },
        { "empty body", "POST", "Patient", "", HttpStatusCode.BadRequest, null },
        { "unserved type", "POST", "Account", "{\"resourceType\":\"Account\",\"status\":\"active\",\"name\":\"{F}\"}", HttpStatusCode.NotFound, null },
        { "transaction with a bad entry", "POST", "", "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}]},\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}},{\"resource\":{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}]},\"request\":{\"method\":\"POST\"}}]}", HttpStatusCode.BadRequest, "Bundle.entry[1].request.url" },
        { "document Bundle posted to base", "POST", "", "{\"resourceType\":\"Bundle\",\"type\":\"document\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}]}}]}", HttpStatusCode.BadRequest, "Bundle.type" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async System.Threading.Tasks.Task Bad_input_gets_an_OperationOutcome_and_stores_nothing(
        string name, string method, string path, string body, HttpStatusCode status, string? expression)
    {
        var family = Fhir.Unique("不正");
        var contentType = body.TrimStart().StartsWith('<') ? "application/fhir+xml" : "application/fhir+json";
        var request = new HttpRequestMessage(new HttpMethod(method), path)
        {
            Content = new StringContent(body.Replace("{F}", family), Encoding.UTF8, contentType),
        };
        var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"[{name}] expected {(int)status}, got {(int)response.StatusCode}: {text}");
        var oo = await Fhir.ReadAsync<OperationOutcome>(response);
        Assert.NotEmpty(oo.Issue);
        Assert.All(oo.Issue, i => Assert.False(string.IsNullOrEmpty(i.Diagnostics), $"[{name}] issue without text"));
        if (expression is not null)
            Assert.True(oo.Issue.Any(i => i.Expression.Any(e => e.StartsWith(expression, StringComparison.Ordinal))),
                $"[{name}] no issue points at {expression}: {text}");

        var search = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}"), HttpStatusCode.OK);
        Assert.True(search.Total == 0, $"[{name}] something was stored");
    }

    [Fact]
    public async System.Threading.Tasks.Task A_body_over_the_limit_is_413()
    {
        var big = "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"" + new string('あ', 1_200_000) + "\"}]}";
        var response = await _http.PostAsync("Patient", Fhir.Json(big));
        await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.RequestEntityTooLarge);
    }

    [Fact]
    public async System.Threading.Tasks.Task Nesting_deeper_than_the_limit_is_400()
    {
        var deep = new StringBuilder("{\"resourceType\":\"Patient\",\"extension\":[");
        for (var i = 0; i < 100; i++) deep.Append("{\"url\":\"http://x\",\"extension\":[");
        for (var i = 0; i < 100; i++) deep.Append("]}");
        deep.Append("]}");
        var response = await _http.PostAsync("Patient", Fhir.Json(deep.ToString()));
        await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.BadRequest);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_Bundle_with_more_entries_than_allowed_is_413()
    {
        var bundle = new Bundle { Type = Bundle.BundleType.Transaction };
        for (var i = 0; i < 201; i++)
            bundle.Entry.Add(new Bundle.EntryComponent { Resource = new Patient { Active = true }, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" } });
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.RequestEntityTooLarge);
    }

    [Theory]
    [InlineData("text/plain", HttpStatusCode.UnsupportedMediaType)]
    [InlineData("application/x-www-form-urlencoded", HttpStatusCode.UnsupportedMediaType)]
    public async System.Threading.Tasks.Task A_non_FHIR_content_type_is_415(string contentType, HttpStatusCode status)
    {
        var response = await _http.PostAsync("Patient", new StringContent("{\"resourceType\":\"Patient\"}", Encoding.UTF8, contentType));
        await Fhir.ExpectAsync<OperationOutcome>(response, status);
    }

    [Theory]
    [InlineData("Patient?_format=pdf", HttpStatusCode.NotAcceptable)]
    [InlineData("NotAType/1", HttpStatusCode.NotFound)]
    [InlineData("Patient/1/_history/abc", HttpStatusCode.NotFound)]
    [InlineData("Patient?_count=-1", HttpStatusCode.BadRequest)]
    [InlineData("Patient?_summary=maybe", HttpStatusCode.BadRequest)]
    [InlineData("Patient/_history?_since=yesterday", HttpStatusCode.BadRequest)]
    public async System.Threading.Tasks.Task Bad_reads_get_an_OperationOutcome(string path, HttpStatusCode status)
    {
        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync(path), status);
    }

    [Fact]
    public async System.Threading.Tasks.Task An_unknown_route_or_method_is_an_OperationOutcome()
    {
        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync("Patient/1/2/3/4"), HttpStatusCode.NotFound);
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PutAsync("", Fhir.Json("{}")), HttpStatusCode.MethodNotAllowed);
    }
}
