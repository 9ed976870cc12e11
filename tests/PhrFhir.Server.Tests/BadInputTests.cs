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
        // R4 datatypes.html#string: no control characters but tab, CR and LF (PostgreSQL cannot even store U+0000).
        { "NUL in a string", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\",\"given\":[\"a\\u0000b\"]}]}", HttpStatusCode.BadRequest, "Patient.name[0].given[0]" },
        { "ANSI escape in a string", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\",\"text\":\"\\u001b[31mred\"}]}", HttpStatusCode.BadRequest, "Patient.name[0].text" },
        { "backspace escape in a string", "POST", "Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}],\"gender\":\"male\",\"extension\":[{\"url\":\"http://example.org/x\",\"valueString\":\"a\\bb\"}]}", HttpStatusCode.BadRequest, "Patient.extension[0].value" },
        { "control character in XML (character reference)", "POST", "Patient", "<Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"{F}\"/><given value=\"a&#x1b;[31mb\"/></name></Patient>", HttpStatusCode.BadRequest, "Patient.name[0].given[0]" },
        { "control character in a contained resource of a transaction entry", "POST", "", "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}],\"contained\":[{\"resourceType\":\"Organization\",\"name\":\"a\\u0007b\"}]},\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}}]}", HttpStatusCode.BadRequest, "Bundle.entry[0].resource.contained[0].name" },
        { "control character in a transaction entry's conditional URL", "POST", "", "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"{F}\"}]},\"request\":{\"method\":\"POST\",\"url\":\"Patient\",\"ifNoneExist\":\"identifier=\\u0000\"}}]}", HttpStatusCode.BadRequest, "Bundle.entry[0].request.ifNoneExist" },
        // One depth limit for JSON and XML (Limits:MaxDepth, 64): XML used to have none.
        { "XML nested deeper than the limit", "POST", "Patient", DeepXml(100), HttpStatusCode.BadRequest, null },
        { "XML nested far deeper than the limit", "POST", "Patient", DeepXml(5000), HttpStatusCode.BadRequest, null },
    };

    /// <summary>A Patient (family {F}) with extensions nested <paramref name="levels"/> deep, in XML.</summary>
    static string DeepXml(int levels) =>
        "<Patient xmlns=\"http://hl7.org/fhir\">"
        + string.Concat(Enumerable.Repeat("<extension url=\"http://example.org/nested\">", levels))
        + "<valueString value=\"deep\"/>"
        + string.Concat(Enumerable.Repeat("</extension>", levels))
        + "<name><family value=\"{F}\"/></name></Patient>";

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
    public async System.Threading.Tasks.Task An_XML_resource_nested_within_the_limit_reads_back_in_every_format()
    {
        // 40 levels of XML are about 80 of JSON once stored: more than a JSON reader takes by default.
        var family = Fhir.Unique("深い");
        var response = await _http.PostAsync("Patient", new StringContent(DeepXml(40).Replace("{F}", family), Encoding.UTF8, "application/fhir+xml"));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var id = response.Headers.Location!.AbsolutePath.Split('/')[^3]; // …/Patient/{id}/_history/1 (the body nests too deep for this test's own parser)
        foreach (var path in new[]
        {
            $"Patient/{id}?_format=xml", $"Patient/{id}?_format=json", $"Patient/{id}/_history/1?_format=xml",
            $"Patient?family={Uri.EscapeDataString(family)}&_format=xml", $"Patient?family={Uri.EscapeDataString(family)}&_elements=extension",
            $"Patient/{id}/_history?_format=xml",
        })
        {
            var read = await _http.GetAsync(path);
            Assert.True(read.StatusCode == HttpStatusCode.OK, $"{path}: {(int)read.StatusCode} {await read.Content.ReadAsStringAsync()}");
        }
    }

    /// <summary>The URL (path, parameter names and values) and the headers the server keeps hold no control character.</summary>
    public static TheoryData<string, string, string?, string?, string?> ControlCharacterRequests => new()
    {
        // case, method + path, header "name: value", form body, expected expression
        { "NUL in a search value", "GET Patient?name=a%00b", null, null, "name" },
        { "NUL as a token value", "GET Patient?identifier=%00", null, null, "identifier" },
        { "ANSI escape in a search value", "GET Patient?family=%1B%5B31mred", null, null, "family" },
        { "control character in a parameter name", "GET Patient?fam%07ily=x", null, null, null },
        { "control character in an id", "GET Patient/a%1Bb", null, null, null },
        { "control character in a POSTed search", "POST Patient/_search", null, "name=a%1Bb", "name" },
        { "control character in If-None-Exist", "POST Patient", "If-None-Exist: identifier=a\u001bb", null, "If-None-Exist" },
        { "control character in the break-glass reason", "GET Patient?_count=1", "X-Break-Glass: emergency\u001b[2J", null, "X-Break-Glass" },
    };

    [Theory]
    [MemberData(nameof(ControlCharacterRequests))]
    public async System.Threading.Tasks.Task Control_characters_in_the_URL_or_a_kept_header_are_400(string name, string request, string? header, string? form, string? expression)
    {
        var (method, path) = (request.Split(' ')[0], request.Split(' ')[1]);
        var message = new HttpRequestMessage(new HttpMethod(method), path);
        if (form is not null) message.Content = new StringContent(form, Encoding.UTF8, "application/x-www-form-urlencoded");
        else if (method == "POST") message.Content = Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("制御") }] });
        if (header is not null)
        {
            var (headerName, value) = (header[..header.IndexOf(':')], System.Text.RegularExpressions.Regex.Unescape(header[(header.IndexOf(':') + 2)..]));
            Assert.True(message.Headers.TryAddWithoutValidation(headerName, value), $"[{name}] header not accepted by HttpClient");
        }
        var response = await _http.SendAsync(message);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"[{name}] expected 400, got {(int)response.StatusCode}: {text}");
        var oo = await Fhir.ReadAsync<OperationOutcome>(response);
        Assert.Contains("U+00", oo.Issue[0].Diagnostics, StringComparison.Ordinal);
        if (expression is not null) Assert.True(oo.Issue[0].Expression.SequenceEqual([expression]), $"[{name}] expression: {text}");
    }

    [Theory]
    [InlineData("--Limits:MaxDepth")]
    [InlineData("--Limits:MaxJsonDepth")] // its former name, when it bounded JSON only
    public async System.Threading.Tasks.Task The_depth_limit_is_read_under_its_name_and_its_former_name(string key)
    {
        // Read before anything starts: a depth the stored JSON could not hold stops the server at once.
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => PhrFhirApp.BuildAsync([key, "100000"]));
        Assert.Contains("100000", e.Message, StringComparison.Ordinal);
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
    [InlineData("Patient?_offset=2147483647")]
    [InlineData("Patient?_offset=2147483647&_count=1000")]
    [InlineData("Patient?family=%E5%B1%B1%E7%94%B0&_offset=2147483647&_count=1000")]
    [InlineData("Patient?_sort=family&_offset=2147483647&_count=1000&_total=accurate")]
    [InlineData("Patient?gender=male&_offset=2147483647&_count=1000&_total=none")]
    [InlineData("Patient?gender=male&birthdate=ge1900&_offset=2147483647&_count=1000")]
    [InlineData("AuditEvent?_offset=2147483647&_count=1000")]
    [InlineData("Patient/_history?_offset=2147483647&_count=1000")]
    public async System.Threading.Tasks.Task The_largest_offset_is_an_empty_page_not_an_error(string path)
    {
        // Offset + count + 1 (the rows a page reads) must not overflow into a negative LIMIT.
        var response = await server.Operator.GetAsync(path);
        var page = await Fhir.ExpectAsync<Bundle>(response, HttpStatusCode.OK);
        Assert.Empty(page.Entry);
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
