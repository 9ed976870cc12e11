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

    public HttpClient Http { get; private set; } = null!;
    public Uri BaseUrl { get; private set; } = null!;
    public IServiceProvider Services => _app!.Services;

    public async System.Threading.Tasks.Task InitializeAsync()
    {
        _app = await PhrFhirApp.BuildAsync(
        [
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
        Http = new HttpClient { BaseAddress = BaseUrl };
        Http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
    }

    public async System.Threading.Tasks.Task DisposeAsync()
    {
        Http.Dispose();
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
