using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace PhrFhir.Server.Tests.Security;

/// <summary>Authentication (tokens from the embedded server) and SMART scope enforcement on every endpoint.</summary>
[Collection("server")]
public sealed class AuthorizationTests(ServerFixture server)
{
    public static TheoryData<string, string> ProtectedEndpoints => new()
    {
        { "GET", "Patient" }, { "POST", "Patient" }, { "GET", "Patient/abc" }, { "PUT", "Patient/abc" }, { "DELETE", "Patient/abc" },
        { "PATCH", "Patient/abc" }, { "GET", "Patient/abc/_history" }, { "GET", "Patient/_history" }, { "GET", "_history" },
        { "POST", "Patient/_search" }, { "POST", "" }, { "POST", "$validate" }, { "POST", "Bundle/$validate" },
        { "POST", "DocumentReference/$generate-metadata" }, { "GET", "Binary/abc" }, { "POST", "Binary" }, { "GET", "DocumentReference?patient=x" },
    };

    [Theory]
    [MemberData(nameof(ProtectedEndpoints))]
    public async System.Threading.Tasks.Task Without_a_token_every_data_endpoint_answers_401(string method, string path)
    {
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (method is "POST" or "PUT" or "PATCH") request.Content = Fhir.Json(new Patient { Id = "abc" });
        var response = await server.Anonymous.SendAsync(request);
        Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{method} /{path}: {(int)response.StatusCode}");
        Assert.Contains("Bearer", response.Headers.WwwAuthenticate.ToString());
        var oo = await Fhir.ReadAsync<OperationOutcome>(response);
        Assert.Equal(OperationOutcome.IssueType.Login, oo.Issue[0].Code);
    }

    [Theory]
    [InlineData("metadata")]
    [InlineData(".well-known/smart-configuration")]
    [InlineData("healthz")]
    [InlineData("StructureDefinition?name=nothing-matches")]
    public async System.Threading.Tasks.Task Discovery_and_health_need_no_token(string path) =>
        Assert.Equal(HttpStatusCode.OK, (await server.Anonymous.GetAsync(path)).StatusCode);

    [Fact]
    public async System.Threading.Tasks.Task Smart_configuration_names_the_token_endpoint_and_methods()
    {
        using var doc = JsonDocument.Parse(await server.Anonymous.GetStringAsync(".well-known/smart-configuration"));
        Assert.EndsWith("/auth/token", doc.RootElement.GetProperty("token_endpoint").GetString());
        Assert.Contains("private_key_jwt", doc.RootElement.GetProperty("token_endpoint_auth_methods_supported").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public async System.Threading.Tasks.Task The_authorisation_servers_own_discovery_answers_and_its_keys_verify_issued_tokens()
    {
        // OpenIddict handles only requests under /auth and /.well-known (AccessControl): its own endpoints there still answer.
        using var doc = JsonDocument.Parse(await server.Anonymous.GetStringAsync(".well-known/openid-configuration"));
        Assert.EndsWith("/auth/token", doc.RootElement.GetProperty("token_endpoint").GetString());
        var jwks = new JsonWebKeySet(await server.Anonymous.GetStringAsync(new Uri(doc.RootElement.GetProperty("jwks_uri").GetString()!).PathAndQuery.TrimStart('/')));
        var token = new JsonWebToken(await server.TokenAsync(ServerFixture.InstitutionClient));
        Assert.Contains(jwks.Keys, k => k.Kid == token.Kid);
    }

    [Theory]
    [InlineData("auth/introspect", true)]
    [InlineData(".well-known/jwks", true)]
    [InlineData("oauth/introspect", false)]
    [InlineData("authx/token", false)]
    public void An_authorisation_server_endpoint_outside_its_paths_stops_the_start(string path, bool allowed)
    {
        var options = new OpenIddict.Server.OpenIddictServerOptions();
        options.IntrospectionEndpointUris.Add(new Uri(path, UriKind.Relative));
        var check = () => PhrFhir.Server.Security.AuthorizationServer.CheckEndpointPaths(options);
        if (allowed) check();
        else Assert.Contains("would never be reached", Assert.Throws<InvalidOperationException>(check).Message);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_token_issuer_is_the_base_url_the_server_is_reached_at()
    {
        // SMART: smart-configuration's issuer and the tokens' iss are the FHIR base a client talks to.
        var baseUrl = server.BaseUrl.AbsoluteUri;
        using var doc = JsonDocument.Parse(await server.Anonymous.GetStringAsync(".well-known/smart-configuration"));
        Assert.Equal(baseUrl, doc.RootElement.GetProperty("issuer").GetString());
        var token = new JsonWebToken(await server.TokenAsync(ServerFixture.InstitutionClient));
        Assert.Equal(baseUrl, token.Issuer);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_token_issued_at_one_base_url_is_refused_at_another()
    {
        // The same process reached by another name (another virtual host): its tokens' issuer differs.
        var token = await server.TokenAsync(ServerFixture.InstitutionClient);
        var elsewhere = new HttpRequestMessage(HttpMethod.Get, "Patient?_count=1") { Headers = { Host = $"localhost:{server.BaseUrl.Port}" } };
        elsewhere.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Anonymous.SendAsync(elsewhere)).StatusCode);
        var here = new HttpRequestMessage(HttpMethod.Get, "Patient?_count=1");
        here.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await server.Anonymous.SendAsync(here)).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task The_CapabilityStatement_says_where_to_get_a_token()
    {
        var cs = await Fhir.ReadAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"));
        var security = cs.Rest[0].Security;
        Assert.Contains(security.Service.SelectMany(c => c.Coding), c => c.Code == "SMART-on-FHIR");
        var uris = security.GetExtension("http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris");
        Assert.Equal(new Uri(server.BaseUrl, "auth/token").ToString(), ((FhirUri)uris.GetExtension("token").Value).Value);
        Assert.Equal(new Uri(server.BaseUrl, "auth/authorize").ToString(), ((FhirUri)uris.GetExtension("authorize").Value).Value);
    }

    [Theory]
    [InlineData("not-a-jwt")]
    [InlineData("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")] // alg none
    public async System.Threading.Tasks.Task A_malformed_or_unsigned_token_is_401(string token)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "Patient");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Anonymous.SendAsync(request)).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_token_signed_by_another_key_is_401()
    {
        using var rsa = System.Security.Cryptography.RSA.Create(2048);
        var forged = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = "https://phrfhir.invalid/",
            Audience = "phrfhir",
            Expires = DateTime.UtcNow.AddMinutes(5),
            Claims = new Dictionary<string, object> { ["scope"] = "system/*.cruds", ["phr_role"] = "operator", ["sub"] = "forger" },
            SigningCredentials = new SigningCredentials(new RsaSecurityKey(rsa), SecurityAlgorithms.RsaSha256),
        });
        var request = new HttpRequestMessage(HttpMethod.Get, "Patient");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", forged);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.Anonymous.SendAsync(request)).StatusCode);
    }

    // client "test-institution-reader": role institution, scopes system/Patient.rs system/Observation.rs
    public static TheoryData<string, string, bool> ReaderCells => new()
    {
        { "GET", "Patient", true },
        { "GET", "Observation", true },
        { "GET", "DocumentReference", false },
        { "POST", "Patient", false },
        { "PUT", "Patient/reader-test", false },
        { "DELETE", "Patient/reader-test", false },
        { "GET", "Patient/_history", true },
        { "GET", "_history", false },
    };

    [Theory]
    [MemberData(nameof(ReaderCells))]
    public async System.Threading.Tasks.Task Scopes_decide_each_interaction(string method, string path, bool allowed)
    {
        using var reader = await server.ClientAsync("test-institution-reader");
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (method is "POST" or "PUT") request.Content = Fhir.Json(new Patient { Id = "reader-test" });
        var response = await reader.SendAsync(request);
        if (allowed) Assert.True(response.IsSuccessStatusCode, $"{method} /{path}: expected allowed, got {(int)response.StatusCode}");
        else
        {
            Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{method} /{path}: expected 403, got {(int)response.StatusCode}");
            Assert.Equal(OperationOutcome.IssueType.Forbidden, (await Fhir.ReadAsync<OperationOutcome>(response)).Issue[0].Code);
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task A_transaction_with_one_entry_outside_the_scopes_stores_nothing()
    {
        using var reader = await server.ClientAsync("test-institution-reader");
        var family = Fhir.Unique("権限");
        var bundle = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry = [new Bundle.EntryComponent { Resource = new Patient { Name = [new HumanName { Family = family }] }, Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" } }],
        };
        await Fhir.ExpectAsync<OperationOutcome>(await reader.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.Forbidden);
        var found = await Fhir.ExpectAsync<Bundle>(await server.Http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}"), HttpStatusCode.OK);
        Assert.Equal(0, found.Total);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_person_token_writes_nothing_its_scopes_do_not_name()
    {
        using var person = await server.ClientAsync("test-person", "patient/*.rs"); // registered for cruds, asked for less
        var oo = await Fhir.ExpectAsync<OperationOutcome>(await person.PostAsync("Patient", Fhir.Json(new Patient { Gender = AdministrativeGender.Female })), HttpStatusCode.Forbidden);
        Assert.Equal(OperationOutcome.IssueType.Forbidden, oo.Issue[0].Code);
    }

    // ---- the token endpoint ---------------------------------------------------------------------

    async Task<HttpResponseMessage> TokenRequestAsync(string clientId, string secret, string? scope = null) =>
        await server.Anonymous.SendAsync(ServerFixture.TokenRequest(clientId, secret, scope));

    [Theory]
    [InlineData("test-operator", "wrong-secret", null, "invalid_client")]
    [InlineData("nobody", ServerFixture.Secret, null, "invalid_client")]
    [InlineData("test-institution-reader", ServerFixture.Secret, "system/Patient.cruds", "invalid_scope")]
    public async System.Threading.Tasks.Task The_token_endpoint_refuses_bad_clients_and_excess_scopes(string clientId, string secret, string? scope, string error)
    {
        var response = await TokenRequestAsync(clientId, secret, scope);
        Assert.False(response.IsSuccessStatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(error, doc.RootElement.GetProperty("error").GetString());
    }

    [Fact]
    public async System.Threading.Tasks.Task An_unknown_client_and_a_wrong_secret_get_the_same_answer()
    {
        // Otherwise the answers tell which client ids exist (RFC 6749 5.2: invalid_client for both).
        var unknown = await TokenRequestAsync(Fhir.Unique("nobody-"), ServerFixture.Secret);
        var wrongSecret = await TokenRequestAsync("test-operator", "wrong-secret");
        Assert.Equal(HttpStatusCode.Unauthorized, unknown.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, wrongSecret.StatusCode);
        var a = await unknown.Content.ReadAsStringAsync();
        var b = await wrongSecret.Content.ReadAsStringAsync();
        Assert.Equal(a, b);
        Assert.Equal("invalid_client", JsonDocument.Parse(a).RootElement.GetProperty("error").GetString());
        Assert.Equal(unknown.Headers.WwwAuthenticate.ToString(), wrongSecret.Headers.WwwAuthenticate.ToString());
    }

    [Fact]
    public async System.Threading.Tasks.Task Repeated_wrong_secrets_from_one_address_refuse_even_the_right_secret_there_for_a_while_but_not_elsewhere()
    {
        using var attacker = ServerFixture.From("127.0.0.2", server.BaseUrl);
        using var realClient = ServerFixture.From("127.0.0.3", server.BaseUrl);
        for (var i = 1; i <= 5; i++)
        {
            var wrong = await attacker.SendAsync(ServerFixture.TokenRequest(ServerFixture.ThrottledClient, "guess-" + i));
            Assert.True(wrong.StatusCode == HttpStatusCode.Unauthorized, $"wrong secret {i}: {(int)wrong.StatusCode}");
        }
        // The bucket of this client at this address is empty: the right secret is not even checked there.
        var refused = await attacker.SendAsync(ServerFixture.TokenRequest(ServerFixture.ThrottledClient, ServerFixture.Secret));
        var body = await refused.Content.ReadAsStringAsync();
        Assert.True(refused.StatusCode == HttpStatusCode.TooManyRequests, $"expected 429, got {(int)refused.StatusCode}: {body}");
        Assert.True(refused.Headers.RetryAfter?.Delta is { TotalSeconds: > 0 and <= 60 }, $"Retry-After: {refused.Headers.RetryAfter}");
        Assert.Equal("temporarily_unavailable", JsonDocument.Parse(body).RootElement.GetProperty("error").GetString());
        Assert.DoesNotContain("access_token", body);
        // The same client from its own address is not locked out by the attacker.
        var ok = await realClient.SendAsync(ServerFixture.TokenRequest(ServerFixture.ThrottledClient, ServerFixture.Secret));
        Assert.True(ok.StatusCode == HttpStatusCode.OK, $"from another address: {(int)ok.StatusCode} {await ok.Content.ReadAsStringAsync()}");
    }

    [Fact]
    public async System.Threading.Tasks.Task A_token_asked_with_fewer_scopes_grants_only_those()
    {
        using var narrowed = await server.ClientAsync("test-operator", "system/Patient.rs");
        Assert.Equal(HttpStatusCode.OK, (await narrowed.GetAsync("Patient?_count=1")).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await narrowed.PostAsync("Patient", Fhir.Json(new Patient()))).StatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_backend_service_authenticates_with_private_key_jwt()
    {
        var tokenUrl = new Uri(server.BaseUrl, "auth/token").ToString();
        string Assertion(System.Security.Cryptography.RSA key) => new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = "test-jwt",
            Audience = tokenUrl,
            Expires = DateTime.UtcNow.AddMinutes(4),
            Claims = new Dictionary<string, object> { ["sub"] = "test-jwt", ["jti"] = Guid.NewGuid().ToString() },
            SigningCredentials = new SigningCredentials(new RsaSecurityKey(key) { KeyId = "test-jwt-key" }, SecurityAlgorithms.RsaSha384),
        });
        async Task<HttpResponseMessage> Ask(string assertion) => await server.Anonymous.PostAsync("auth/token", new FormUrlEncodedContent(new Dictionary<string, string>
        {
            ["grant_type"] = "client_credentials",
            ["scope"] = "system/Patient.rs",
            ["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ["client_assertion"] = assertion,
        }));

        var ok = await Ask(Assertion(server.JwtClientKey));
        var body = await ok.Content.ReadAsStringAsync();
        Assert.True(ok.IsSuccessStatusCode, body);
        var token = JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString();
        var request = new HttpRequestMessage(HttpMethod.Get, "Patient?_count=1");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        Assert.Equal(HttpStatusCode.OK, (await server.Anonymous.SendAsync(request)).StatusCode);

        using var other = System.Security.Cryptography.RSA.Create(2048);
        Assert.False((await Ask(Assertion(other))).IsSuccessStatusCode, "an assertion signed by an unregistered key was accepted");
    }
}
