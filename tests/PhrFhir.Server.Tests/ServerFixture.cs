using System.Net.Http.Headers;
using System.Text;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Server;

namespace PhrFhir.Server.Tests;

/// <summary>
/// The real server on a free loopback port, with its embedded PostgreSQL in a fresh temporary
/// folder: started once for the whole test run, shared by every test class in the "server" collection.
/// Tests isolate themselves by unique identifiers/names, not by wiping the database.
/// </summary>
public sealed class ServerFixture : IAsyncLifetime
{
    WebApplication? _app;
    readonly string _dataDir = Path.Combine(Path.GetTempPath(), "phrfhir-tests-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>Carries a token of <see cref="OperatorClient"/> (system/*.cruds): what most tests need.</summary>
    public HttpClient Http { get; private set; } = null!;
    /// <summary>No token at all.</summary>
    public HttpClient Anonymous { get; private set; } = null!;

    public const string OperatorClient = "test-operator";
    public const string Secret = "test-secret-0123456789";
    public const string AppClient = "test-app";
    public const string PortalClient = "test-portal";
    public const string AppRedirectUri = "http://127.0.0.1:9/callback";
    public const string PersonUsername = "test-sato";
    public const string PersonPassword = "test-sato-password";
    /// <summary>The test person's Patient identifier value (system urn:oid:1.2.392.100495.20.3.51.11312345678).</summary>
    public const string PersonIdentifier = "00077777";
    /// <summary>The private key of the "test-jwt" client (private_key_jwt); its public half is registered.</summary>
    public System.Security.Cryptography.RSA JwtClientKey { get; } = System.Security.Cryptography.RSA.Create(2048);
    public Uri BaseUrl { get; private set; } = null!;
    public IServiceProvider Services => _app!.Services;

    public async System.Threading.Tasks.Task InitializeAsync()
    {
        Directory.CreateDirectory(_dataDir);
        var clientsFile = Path.Combine(_dataDir, "clients.json");
        var jwk = Microsoft.IdentityModel.Tokens.JsonWebKeyConverter.ConvertFromRSASecurityKey(
            new Microsoft.IdentityModel.Tokens.RsaSecurityKey(JwtClientKey.ExportParameters(false)) { KeyId = "test-jwt-key" });
        await File.WriteAllTextAsync(clientsFile, System.Text.Json.JsonSerializer.Serialize(new
        {
            clients = new object[]
            {
                new { clientId = OperatorClient, clientSecret = Secret, role = "operator", scopes = "system/*.cruds" },
                new { clientId = "test-institution-reader", clientSecret = Secret, role = "institution", scopes = "system/Patient.rs system/Observation.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "1312345678" } },
                new { clientId = "test-person", clientSecret = Secret, role = "person", scopes = "patient/*.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00012345" } },
                new { clientId = "test-physician", clientSecret = Secret, role = "physician", scopes = "user/*.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.41", value = "1234567" } },
                new { clientId = "test-employer", clientSecret = Secret, role = "employer", scopes = "user/DocumentReference.rs user/Patient.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "9912345678" } },
                new { clientId = "test-jwt", role = "institution", scopes = "system/Patient.cruds",
                      jwks = new { keys = new[] { new { kty = jwk.Kty, kid = jwk.Kid, n = jwk.N, e = jwk.E, alg = "RS384", use = "sig" } } } },
                // The person's app (public, PKCE) and a portal (confidential): authorization code flow.
                new { clientId = AppClient, role = "person", grantTypes = new[] { "authorization_code" }, redirectUris = new[] { AppRedirectUri },
                      scopes = "patient/*.rs openid fhirUser launch/patient offline_access" },
                new { clientId = PortalClient, clientSecret = Secret, role = "person", grantTypes = new[] { "authorization_code" },
                      redirectUris = new[] { "https://portal.example.org/callback" }, scopes = "patient/*.rs" },
            },
            persons = new[]
            {
                new { username = PersonUsername, passwordHash = new Microsoft.AspNetCore.Identity.PasswordHasher<object>().HashPassword(null!, PersonPassword),
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = PersonIdentifier } },
            },
        }));
        _app = await PhrFhirApp.BuildAsync(
        [
            "--Auth:ClientsFile", clientsFile,
            "--Auth:SigningKeyFile", Path.Combine(_dataDir, "signing-key.pem"),
            "--urls", "http://127.0.0.1:0",
            "--Storage:DataDirectory", Path.Combine(_dataDir, "pg"),
            "--Logging:LogLevel:Default", "Warning",
            "--Limits:MaxBodyBytes", (2 * 1024 * 1024).ToString(),
            "--Limits:MaxBundleEntries", "200",
            // The IHE MHD FHIR-document example refers to its Patient on this (example) identity source.
            "--Mhd:PatientIdentitySources:0", "http://example.org/fhir",
            // The validator's resolved conformance sets: shared by test runs, rebuilt when a package changes.
            "--Validation:CacheFolder", Path.Combine(Path.GetTempPath(), "phrfhir-test-conformance-cache"),
        ]);
        await _app.StartAsync();
        var address = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        BaseUrl = new Uri(address.TrimEnd('/') + "/");
        Anonymous = new HttpClient { BaseAddress = BaseUrl };
        Anonymous.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
        Http = await ClientAsync(OperatorClient);
    }

    /// <summary>An HttpClient carrying a fresh token of a registered client (client_credentials, HTTP Basic).</summary>
    public async Task<HttpClient> ClientAsync(string clientId, string? scope = null)
    {
        var client = new HttpClient { BaseAddress = BaseUrl };
        client.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await TokenAsync(clientId, scope));
        return client;
    }

    public async Task<string> TokenAsync(string clientId, string? scope = null)
    {
        var form = new Dictionary<string, string> { ["grant_type"] = "client_credentials" };
        if (scope is not null) form["scope"] = scope;
        var request = new HttpRequestMessage(HttpMethod.Post, "auth/token") { Content = new FormUrlEncodedContent(form) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{clientId}:{Secret}")));
        var response = await Anonymous.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"token for {clientId}: {(int)response.StatusCode} {body}");
        return System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
    }

    public async System.Threading.Tasks.Task DisposeAsync()
    {
        Http.Dispose();
        Anonymous.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync(); // stops the embedded PostgreSQL
        }
        try { Directory.Delete(_dataDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

[CollectionDefinition("server")]
public sealed class ServerCollection : ICollectionFixture<ServerFixture>;

/// <summary>Small helpers every HTTP test uses: FHIR JSON in and out.</summary>
public static class Fhir
{
    static readonly FhirJsonSerializer Serializer = new();
    static readonly FhirJsonDeserializer Parser = new(new DeserializerSettings());

    public static StringContent Json(Resource r) =>
        new(Serializer.SerializeToString(r), Encoding.UTF8, "application/fhir+json");

    public static StringContent Json(string json) => new(json, Encoding.UTF8, "application/fhir+json");

    public static async Task<T> ReadAsync<T>(HttpResponseMessage response) where T : Resource
    {
        var text = await response.Content.ReadAsStringAsync();
        return (T)Parser.DeserializeResource(text);
    }

    public static async Task<T> ExpectAsync<T>(HttpResponseMessage response, System.Net.HttpStatusCode status) where T : Resource
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        return (T)Parser.DeserializeResource(text);
    }

    /// <summary>A unique token for a test's data, so tests sharing one database never see each other's rows.</summary>
    public static string Unique(string prefix = "t") => prefix + Guid.NewGuid().ToString("N")[..12];
}
