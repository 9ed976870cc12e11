using System.Net;
using System.Text.Json;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;

namespace PhrFhir.Server.Tests;

/// <summary>
/// /api-docs: the OpenAPI description is generated from the CapabilityStatement, so it must list exactly
/// what /metadata declares. (scripts/test.sh also checks it with an independent OpenAPI validator from npm.)
/// </summary>
[Collection("server")]
public sealed class OpenApiTests(ServerFixture server)
{
    async Task<(CapabilityStatement Cs, JsonElement Api)> BothAsync()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        var response = await server.Anonymous.GetAsync("api-docs/openapi.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        return (cs, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement);
    }

    [Fact]
    public async System.Threading.Tasks.Task Every_declared_search_parameter_is_a_query_parameter_of_its_type_search()
    {
        var (cs, api) = await BothAsync();
        Assert.StartsWith("3.0", api.GetProperty("openapi").GetString());
        var paths = api.GetProperty("paths");
        foreach (var resource in cs.Rest[0].Resource)
        {
            Assert.True(paths.TryGetProperty("/" + resource.Type, out var search), $"no path /{resource.Type}");
            var names = search.GetProperty("get").GetProperty("parameters").EnumerateArray().Select(p => p.GetProperty("name").GetString()).ToHashSet();
            foreach (var p in resource.SearchParam)
                Assert.True(names.Contains(p.Name), $"{resource.Type}?{p.Name} is in the CapabilityStatement but not in the OpenAPI description");
            // Each declared instance interaction is an operation on /{type}/{id}, and only those.
            var declared = resource.Interaction.Select(i => i.Code).ToHashSet();
            Assert.True(paths.TryGetProperty($"/{resource.Type}/{{id}}", out var instance), $"no path /{resource.Type}/{{id}}");
            foreach (var (verb, interaction) in new[]
            {
                ("get", CapabilityStatement.TypeRestfulInteraction.Read), ("put", CapabilityStatement.TypeRestfulInteraction.Update),
                ("patch", CapabilityStatement.TypeRestfulInteraction.Patch), ("delete", CapabilityStatement.TypeRestfulInteraction.Delete),
            })
                Assert.True(instance.TryGetProperty(verb, out _) == declared.Contains(interaction),
                    $"{verb} /{resource.Type}/{{id}}: declared {declared.Contains(interaction)} in the CapabilityStatement, but not so in the OpenAPI description");
        }
        Assert.True(paths.GetProperty("/").TryGetProperty("post", out _), "transaction/batch POST / missing");
    }

    [Fact]
    public async System.Threading.Tasks.Task The_description_names_the_token_endpoint_the_server_really_serves()
    {
        var (_, api) = await BothAsync();
        var scheme = api.GetProperty("components").GetProperty("securitySchemes").GetProperty("smart");
        Assert.Equal("oauth2", scheme.GetProperty("type").GetString());
        var tokenUrl = scheme.GetProperty("flows").GetProperty("clientCredentials").GetProperty("tokenUrl").GetString()!;
        // The token URL of the description works: a client_credentials request there gets a token.
        var response = await server.Anonymous.PostAsync(tokenUrl, new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "client_credentials",
            ["client_id"] = ServerFixture.InstitutionClient,
            ["client_secret"] = ServerFixture.Secret,
        }));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // Every operation needs that token except /metadata, which says so with an empty requirement.
        Assert.Equal("smart", api.GetProperty("security")[0].EnumerateObject().Single().Name);
        var metadata = api.GetProperty("paths").GetProperty("/metadata").GetProperty("get").GetProperty("security");
        Assert.Empty(metadata.EnumerateArray().Single().EnumerateObject());
    }

    public static TheoryData<string, string> ServedOperations => new()
    {
        { "post", "/Patient/{id}/$share" }, { "get", "/Patient/{id}/$share" }, { "delete", "/Patient/{id}/$share/{link}" },
        { "get", "/Task/$detailed-exam-worklist" }, { "post", "/DocumentReference/$generate-metadata" }, { "get", "/AuditEvent/$verify-chain" },
        { "get", "/Patient/$ihe-pix" }, { "post", "/Patient/$ihe-pix" }, { "post", "/Patient/$link" }, { "post", "/Patient/$unlink" },
        { "get", "/Subscription/{id}/$status" }, { "get", "/Subscription/{id}/$events" }, { "get", "/Subscription/$status" },
        { "post", "/$validate" }, { "post", "/Observation/$validate" }, { "get", "/Observation/{id}/$validate" }, { "post", "/Observation/{id}/$validate" },
        { "post", "/shl/{id}" }, { "get", "/shl/{id}" }, { "get", "/shl/file/{token}" },
    };

    [Theory]
    [MemberData(nameof(ServedOperations))]
    public async System.Threading.Tasks.Task Every_operation_the_server_serves_is_described_at_its_route_and_verb(string verb, string path)
    {
        var (_, api) = await BothAsync();
        var op = api.GetProperty("paths").TryGetProperty(path, out var item) && item.TryGetProperty(verb, out var found) ? found : default;
        Assert.True(op.ValueKind == JsonValueKind.Object, $"{verb} {path} is not in the OpenAPI description");
        // Each {name} in the path is a declared path parameter (an OpenAPI validator refuses it otherwise).
        foreach (var name in path.Split('/').Where(x => x.StartsWith('{')))
            Assert.Contains(op.GetProperty("parameters").EnumerateArray(), x => "{" + x.GetProperty("name").GetString() + "}" == name && x.GetProperty("in").GetString() == "path");
    }

    [Fact]
    public async System.Threading.Tasks.Task Every_declared_operation_of_our_own_has_its_OperationDefinition_in_our_package()
    {
        var (cs, _) = await BothAsync();
        var declared = cs.Rest[0].Resource.SelectMany(r => r.Operation.Select(o => (Type: r.Type, Op: o))).Concat(cs.Rest[0].Operation.Select(o => (Type: (string?)null, Op: o))).ToList();
        Assert.Contains(declared, d => d.Op.Definition == "http://phrfhir.example/fhir/OperationDefinition/Patient-share" && d.Type == "Patient");
        Assert.Contains(declared, d => d.Op.Definition == "http://hl7.org/fhir/OperationDefinition/Resource-validate" && d.Type is null);
        Assert.Contains(declared, d => d.Op.Name == "detailed-exam-worklist" && d.Type == "Task");
        foreach (var (type, op) in declared.Where(d => d.Op.Definition.StartsWith("http://phrfhir.example/", StringComparison.Ordinal)))
        {
            // profiles/phrfhir.r4 publishes it under its canonical, for the type and with the code /metadata says.
            var file = Repository.File("profiles", "phrfhir.r4", "package", $"OperationDefinition-{op.Definition.Split('/')[^1]}.json");
            Assert.True(File.Exists(file), $"{op.Definition}: no {file}");
            var definition = new FhirJsonDeserializer().Deserialize<OperationDefinition>(await File.ReadAllTextAsync(file));
            Assert.Equal(op.Definition, definition.Url);
            Assert.Equal(op.Name, definition.Code);
            Assert.Contains(type, definition.Resource.Select(r => r?.ToString()));
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Swagger_UI_is_served_without_a_token_and_points_at_the_description()
    {
        var page = await server.Anonymous.GetAsync("api-docs/index.html");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
        var config = await server.Anonymous.GetStringAsync("api-docs/index.js");
        Assert.Contains("/api-docs/openapi.json", config);
    }
}
