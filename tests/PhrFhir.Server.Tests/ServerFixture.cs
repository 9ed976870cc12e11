using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using PhrFhir.Server;
using PhrFhir.Storage.Embedded;

namespace PhrFhir.Server.Tests;

/// <summary>
/// The real server on a free loopback port, with an embedded PostgreSQL in a fresh temporary folder
/// (started here and given to the server as its connection string, so that a second server process can
/// share it: <see cref="StartInstanceAsync"/>): started once for the whole test run, shared by every test
/// class in the "server" collection. Tests isolate themselves by unique identifiers/names, not by wiping
/// the database.
/// Its conformance packages are restored from ../shared/ref (the only source, named by
/// PHRFHIR_PACKAGE_SOURCES as an operator would) into a package cache of this run.
/// </summary>
public class ServerFixture : IAsyncLifetime
{
    WebApplication? _app;
    EmbeddedPostgres? _postgres;
    string[] _args = [];
    readonly string _dataDir = Path.Combine(Path.GetTempPath(), "phrfhir-tests-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>
    /// Carries a token of <see cref="InstitutionClient"/> (a checkup institution with system/*.cruds): it
    /// reads what it wrote, which is what most tests need.
    /// </summary>
    public HttpClient Http { get; private set; } = null!;
    /// <summary>Carries a token of <see cref="OperatorClient"/>: administrative resources and the audit trail.</summary>
    public HttpClient Operator { get; private set; } = null!;
    /// <summary>No token at all.</summary>
    public HttpClient Anonymous { get; private set; } = null!;

    public const string OperatorClient = "test-operator";
    public const string InstitutionClient = "test-institution";
    public const string OtherInstitutionClient = "test-institution-b";
    public const string Secret = "test-secret-0123456789";
    public const string AppClient = "test-app";
    /// <summary>A person's app that also writes (patient/*.cruds), as examples/quickstart/person-app.sh needs.</summary>
    public const string WritingAppClient = "test-phr-app";
    public const string PortalClient = "test-portal";
    public const string AppRedirectUri = "http://127.0.0.1:9/callback";
    public const string PersonUsername = "test-sato";
    public const string PersonPassword = "test-sato-password";
    /// <summary>The test person's Patient identifier value (system urn:oid:1.2.392.100495.20.3.51.11312345678).</summary>
    public const string PersonIdentifier = "00077777";
    /// <summary>A confidential portal registered for offline_access (refresh tokens that need its secret).</summary>
    public const string OfflinePortalClient = "test-portal-offline";
    public const string PortalRedirectUri = "https://portal.example.org/callback";
    /// <summary>Accounts only the throttling tests fail to sign in with, so that no other test is slowed down by them.</summary>
    public const string ThrottledClient = "test-throttled";
    public static readonly string[] ThrottledPersons = ["test-throttled-a", "test-throttled-b"];
    /// <summary>The private key of the "test-jwt" client (private_key_jwt); its public half is registered.</summary>
    public System.Security.Cryptography.RSA JwtClientKey { get; } = System.Security.Cryptography.RSA.Create(2048);
    public Uri BaseUrl { get; private set; } = null!;
    public IServiceProvider Services => _app!.Services;
    /// <summary>The PostgreSQL this run's servers share (started and supervised by the fixture).</summary>
    public EmbeddedPostgres Postgres => _postgres!;
    /// <summary>Every log line the server writes (access lines at Information, refusals at Debug included).</summary>
    public LogCapture Logs { get; } = new();

    /// <summary>Throw-away PKI for mutual TLS: a CA, the server's certificate (127.0.0.1), and two client certificates.</summary>
    public TestPki Pki { get; } = new();
    /// <summary>The server's https address (mutual TLS optional), beside the http one.</summary>
    public Uri HttpsUrl { get; private set; } = null!;
    public const string MtlsClient = "test-mtls";
    public const string SubscribingPersonClient = "test-person-subscriber";
    public const string SubscribingPersonIdentifier = "00066601";

    public async System.Threading.Tasks.Task InitializeAsync()
    {
        Directory.CreateDirectory(_dataDir);
        var serverPfx = Path.Combine(_dataDir, "server.pfx");
        await File.WriteAllBytesAsync(serverPfx, Pki.Server.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12, "pfx-password"));
        var clientsFile = Path.Combine(_dataDir, "clients.json");
        var jwk = Microsoft.IdentityModel.Tokens.JsonWebKeyConverter.ConvertFromRSASecurityKey(
            new Microsoft.IdentityModel.Tokens.RsaSecurityKey(JwtClientKey.ExportParameters(false)) { KeyId = "test-jwt-key" });
        await File.WriteAllTextAsync(clientsFile, System.Text.Json.JsonSerializer.Serialize(new
        {
            clients = new object[]
            {
                new { clientId = OperatorClient, clientSecret = Secret, role = "operator", scopes = "system/*.cruds" },
                new { clientId = InstitutionClient, clientSecret = Secret, role = "institution", scopes = "system/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "1310000001" } },
                new { clientId = "test-institution-reader", clientSecret = Secret, role = "institution", scopes = "system/Patient.rs system/Observation.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "1312345678" } },
                new { clientId = "test-institution-writer", clientSecret = Secret, role = "institution", scopes = "system/Patient.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "1310000002" } },
                // A second institution with every scope: it sees only what it wrote (Security/HiddenResourceTests, LeakSuiteTests).
                new { clientId = OtherInstitutionClient, clientSecret = Secret, role = "institution", scopes = "system/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "1310000003" } },
                new { clientId = "test-person", clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00012345" } },
                // A person whose Patient only PersonCompartmentTests registers (token binding).
                new { clientId = "test-person-b", clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00054321" } },
                // The person whose records Identity/ tests link across institutions.
                new { clientId = "test-person-linked", clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00099999" } },
                // The person whose $link guesses Identity/LinkThrottleTests exhausts.
                new { clientId = "test-person-throttled", clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00099980" } },
                // The person whose two registrations Identity/PatientMergeTests merges.
                new { clientId = "test-person-merged", clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00099990" } },
                new { clientId = "test-physician", clientSecret = Secret, role = "physician", scopes = "user/*.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.41", value = "1234567" } },
                new { clientId = "test-employer", clientSecret = Secret, role = "employer", scopes = "user/DocumentReference.rs user/Binary.rs user/Patient.rs",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "9912345678" } },
                new { clientId = "test-jwt", role = "institution", scopes = "system/Patient.cruds",
                      jwks = new { keys = new[] { new { kty = jwk.Kty, kid = jwk.Kid, n = jwk.N, e = jwk.E, alg = "RS384", use = "sig" } } } },
                // An institution's node authenticated by its client certificate (RFC 8705), besides its secret.
                new { clientId = MtlsClient, clientSecret = Secret, role = "institution", scopes = "system/Patient.rs",
                      certificateThumbprints = new[] { Pki.ClientA.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256) } },
                // The person's app (public, PKCE) and a portal (confidential): authorization code flow.
                new { clientId = AppClient, role = "person", grantTypes = new[] { "authorization_code" }, redirectUris = new[] { AppRedirectUri },
                      scopes = "patient/*.rs openid fhirUser launch/patient offline_access" },
                new { clientId = WritingAppClient, role = "person", grantTypes = new[] { "authorization_code" }, redirectUris = new[] { AppRedirectUri },
                      scopes = "patient/*.cruds openid fhirUser launch/patient offline_access" },
                new { clientId = PortalClient, clientSecret = Secret, role = "person", grantTypes = new[] { "authorization_code" },
                      redirectUris = new[] { PortalRedirectUri }, scopes = "patient/*.rs" },
                new { clientId = OfflinePortalClient, clientSecret = Secret, role = "person", grantTypes = new[] { "authorization_code" },
                      redirectUris = new[] { PortalRedirectUri }, scopes = "patient/*.rs offline_access" },
                new { clientId = ThrottledClient, clientSecret = Secret, role = "institution", scopes = "system/Patient.rs" },
                // The actors of 健診事後措置 and 両立支援 (Workflows/): each acts on the workers' records under their Consents.
                new { clientId = "test-sangyoui", clientSecret = Secret, role = "occupational-physician", scopes = "user/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.41", value = "7654321" } },
                new { clientId = "test-sangyoui-b", clientSecret = Secret, role = "occupational-physician", scopes = "user/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.41", value = "7654322" } },
                new { clientId = "test-hospital", clientSecret = Secret, role = "physician", scopes = "user/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.41", value = "2345678" } },
                new { clientId = "test-employer-wf", clientSecret = Secret, role = "employer", scopes = "user/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.2", value = "9900000001" } },
                new { clientId = "test-worker", clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = "00088001" } },
                // A person who subscribes to their own records (Subscriptions/); only those tests register their Patient.
                new { clientId = SubscribingPersonClient, clientSecret = Secret, role = "person", scopes = "patient/*.cruds",
                      actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = SubscribingPersonIdentifier } },
            },
            persons = ThrottledPersons.Prepend(PersonUsername).Select(username => new
            {
                username,
                passwordHash = new Microsoft.AspNetCore.Identity.PasswordHasher<object>().HashPassword(null!, PersonPassword),
                actor = new { system = "urn:oid:1.2.392.100495.20.3.51.11312345678", value = PersonIdentifier },
            }),
        }));
        _postgres = await EmbeddedPostgres.StartAsync(Path.Combine(_dataDir, "pg"), 0, NullLogger.Instance, default);
        _args =
        [
            "--ConnectionStrings:Fhir", _postgres.ConnectionString,
            "--Auth:ClientsFile", clientsFile,
            "--Auth:SigningKeyFile", Path.Combine(_dataDir, "signing-key.pem"),
            "--Audit:KeyDirectory", Path.Combine(_dataDir, "audit"), // the audit chain's key and checkpoint belong to this run's database
            "--urls", "http://127.0.0.1:0;https://127.0.0.1:0",
            "--Https:Certificate:Path", serverPfx,
            "--Https:Certificate:Password", "pfx-password",
            "--Logging:LogLevel:Default", "Warning",
            // The access log and refusals reach Logs; the console keeps to warnings.
            "--Logging:LogLevel:PhrFhir.Access", "Information",
            "--Logging:LogLevel:PhrFhir.Errors", "Debug",
            "--Logging:AccessConsole:LogLevel:PhrFhir.Access", "Warning",
            "--Logging:Console:LogLevel:PhrFhir.Errors", "Warning",
            "--Limits:MaxBodyBytes", (2 * 1024 * 1024).ToString(),
            "--Limits:MaxBundleEntries", "200",
            // Identifier domains the operator registers ahead of time (Identity/IdentifierDomains): the tests'
            // shared person and patient numbers are assigned by the test institution, whatever JP Core's
            // institution-number rule would say of these systems.
            "--Identity:Domains:0:System", "urn:oid:1.2.392.100495.20.3.51.11312345678",
            "--Identity:Domains:0:Assigners:0", InstitutionActor,
            "--Identity:Domains:0:Assigners:1", "urn:oid:1.2.392.100495.20.3.2|1312345678",
            "--Identity:Domains:1:System", "urn:oid:1.2.392.100495.20.3.51.11399999999",
            "--Identity:Domains:1:Assigners:0", InstitutionActor,
            "--Identity:Domains:2:System", "urn:oid:1.2.392.100495.20.3.51.19999999999",
            "--Identity:Domains:2:Assigners:0", InstitutionActor,
            // The official CLINS referral's (HS038) hospital patient numbers: the tests register them as the test institution.
            "--Identity:Domains:3:System", "urn:oid:1.2.392.100495.20.3.51.11318814790",
            "--Identity:Domains:3:Assigners:0", InstitutionActor,
            // The IHE MHD FHIR-document example refers to its Patient on this (example) identity source.
            "--Mhd:PatientIdentitySources:0", "http://example.org/fhir",
            // The validator's resolved conformance sets: shared by test runs, rebuilt when a package changes.
            "--Validation:CacheFolder", Path.Combine(Path.GetTempPath(), "phrfhir-test-conformance-cache"),
            "--Packages:Cache", Path.Combine(_dataDir, "fhir-packages"),
            "--Packages:Downloads", "false", // CI has no internet: the folder source or nothing
            // Subscriptions: the tests' receivers listen on loopback; retries after 0.2 s doubling to 1 s instead of 5 s to 5 min.
            "--Subscriptions:AllowedEndpoints", "http://127.0.0.1:",
            "--Subscriptions:RetryFirstSeconds", "0.2",
            "--Subscriptions:RetryMaxSeconds", "1",
            "--Subscriptions:PollMilliseconds", "200",
            .. PackageArguments(),
        ];
        _app = await PhrFhirApp.BuildAsync(_args);
        _app.Services.GetRequiredService<Microsoft.Extensions.Logging.ILoggerFactory>().AddProvider(Logs);
        // As PhrFhirApp does for a PostgreSQL it starts itself: connections to a postmaster that died are dropped once it is back.
        _postgres.Restarted += _app.Services.GetRequiredService<PhrFhir.Storage.FhirStore>().ClearPools;
        await _app.StartAsync();
        BaseUrl = Address(_app, "http://");
        HttpsUrl = Address(_app, "https://");
        Anonymous = new HttpClient { BaseAddress = BaseUrl };
        Anonymous.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
        Http = await ClientAsync(InstitutionClient);
        Operator = await ClientAsync(OperatorClient);
    }

    /// <summary>
    /// Where the conformance packages come from: ../shared/ref through PHRFHIR_PACKAGE_SOURCES (the server
    /// itself does not look for it). A fixture that starts a server without packages overrides this.
    /// </summary>
    protected virtual IEnumerable<string> PackageArguments()
    {
        if (SharedRef.Find() is not { } reference) return ["--Packages:Sources="];
        Environment.SetEnvironmentVariable("PHRFHIR_PACKAGE_SOURCES", reference);
        return [];
    }

    /// <summary>The server's command line (database, keys, clients file, test settings): a separate server process takes the same.</summary>
    public IReadOnlyList<string> Arguments => _args;

    static Uri Address(WebApplication app, string scheme) => new(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
        .First(a => a.StartsWith(scheme, StringComparison.Ordinal)).TrimEnd('/') + "/");

    /// <summary>
    /// Another server process's worth of the app (its own host, port, OpenIddict, caches and in-memory state)
    /// on the same database, keys and clients file: what a second process behind a load balancer is, or this
    /// one after a restart. The caller stops it (<see cref="ServerInstance.DisposeAsync"/>).
    /// </summary>
    public async Task<ServerInstance> StartInstanceAsync()
    {
        var app = await PhrFhirApp.BuildAsync(_args);
        await app.StartAsync();
        return new ServerInstance(app, Address(app, "http://"), BaseUrl);
    }

    /// <summary>
    /// A client whose connections come from <paramref name="source"/>, another loopback address (every
    /// 127.x.y.z is this machine): a different client address for the throttling tests. Keeps cookies and
    /// does not follow redirects, like a browser the test looks through.
    /// </summary>
    public static HttpClient From(string source, Uri baseUrl)
    {
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            CookieContainer = new System.Net.CookieContainer(),
            ConnectCallback = async (context, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                try
                {
                    socket.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(source), 0));
                    await socket.ConnectAsync(context.DnsEndPoint, ct);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return new HttpClient(handler) { BaseAddress = baseUrl };
    }

    /// <summary>A client_credentials token request authenticated with HTTP Basic (the secret given, right or wrong).</summary>
    public static HttpRequestMessage TokenRequest(string clientId, string secret, string? scope = null)
    {
        var form = new Dictionary<string, string> { ["grant_type"] = "client_credentials" };
        if (scope is not null) form["scope"] = scope;
        var request = new HttpRequestMessage(HttpMethod.Post, "auth/token") { Content = new FormUrlEncodedContent(form) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{clientId}:{secret}")));
        return request;
    }

    /// <summary>The actor (writer key) of <see cref="InstitutionClient"/>.</summary>
    public const string InstitutionActor = "urn:oid:1.2.392.100495.20.3.2|1310000001";

    /// <summary>
    /// Stores resources at their own ids as <see cref="InstitutionClient"/> wrote them (one transaction,
    /// the server's own write path, validation included). Official examples refer to each other by fixed
    /// ids, and over HTTP only requesters who see every row of a type may choose ids (update-as-create,
    /// docs/consent.md "Writes"). Each resource's meta is set as stored.
    /// </summary>
    public async System.Threading.Tasks.Task SeedAsync(params Resource[] resources)
    {
        var store = Services.GetRequiredService<PhrFhir.Storage.FhirStore>();
        var writes = Services.GetRequiredService<PhrFhir.Server.Rest.ResourceWrites>();
        await using var tx = await store.BeginWriteAsync(CancellationToken.None);
        tx.Writer = InstitutionActor;
        foreach (var r in resources) await writes.UpdateAsync(tx, r.TypeName, r.Id, r, null, CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
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
        var response = await Anonymous.SendAsync(TokenRequest(clientId, Secret, scope));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"token for {clientId}: {(int)response.StatusCode} {body}");
        return System.Text.Json.JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
    }

    public async System.Threading.Tasks.Task DisposeAsync()
    {
        Http.Dispose();
        Operator.Dispose();
        Anonymous.Dispose();
        Pki.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        if (_postgres is not null) await _postgres.DisposeAsync();
        try { Directory.Delete(_dataDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// A second server process on the fixture's database (<see cref="ServerFixture.StartInstanceAsync"/>). Behind a
/// load balancer both processes are reached at one public base URL: <see cref="Anonymous"/> connects to this
/// process but names the first one's host, so tokens (whose issuer is the base URL) are good at both.
/// </summary>
public sealed class ServerInstance(WebApplication app, Uri baseUrl, Uri publicBaseUrl) : IAsyncDisposable
{
    public Uri BaseUrl { get; } = baseUrl;
    public HttpClient Anonymous { get; } = new() { BaseAddress = baseUrl, DefaultRequestHeaders = { Host = publicBaseUrl.Authority } };

    public async ValueTask DisposeAsync()
    {
        Anonymous.Dispose();
        await app.StopAsync();
        await app.DisposeAsync();
    }
}

/// <summary>The server's log lines as written, for tests of what is logged (and what is not).</summary>
public sealed class LogCapture : Microsoft.Extensions.Logging.ILoggerProvider
{
    public sealed record Line(string Category, Microsoft.Extensions.Logging.LogLevel Level, string Message, Exception? Exception);

    readonly System.Collections.Concurrent.ConcurrentQueue<Line> _lines = new();

    /// <summary>The lines so far; a test remembers the count before it acts and reads what came after.</summary>
    public IReadOnlyList<Line> Lines => [.. _lines];

    public Microsoft.Extensions.Logging.ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose() { }

    sealed class Logger(LogCapture capture, string category) : Microsoft.Extensions.Logging.ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            capture._lines.Enqueue(new Line(category, logLevel, formatter(state, exception), exception));
    }
}

/// <summary>
/// A CA, a server certificate for 127.0.0.1 and two client certificates, made with CertificateRequest for
/// this test run only. <see cref="ClientA"/> is registered for the "test-mtls" client; <see cref="ClientB"/> is not.
/// </summary>
public sealed class TestPki : IDisposable
{
    public X509Certificate2 Ca { get; }
    public X509Certificate2 Server { get; }
    public X509Certificate2 ClientA { get; }
    public X509Certificate2 ClientB { get; }

    public TestPki()
    {
        using var caKey = RSA.Create(2048);
        var caRequest = new CertificateRequest("CN=PhrFhir test CA", caKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        Ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-10), DateTimeOffset.UtcNow.AddDays(2));
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(System.Net.IPAddress.Loopback);
        Server = Issue("CN=127.0.0.1", "1.3.6.1.5.5.7.3.1", san.Build());
        ClientA = Issue("CN=kenshin-node-a", "1.3.6.1.5.5.7.3.2", null);
        ClientB = Issue("CN=kenshin-node-b", "1.3.6.1.5.5.7.3.2", null);
    }

    X509Certificate2 Issue(string subject, string usage, X509Extension? san)
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new System.Security.Cryptography.Oid(usage)], false));
        if (san is not null) request.CertificateExtensions.Add(san);
        using var issued = request.Create(Ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), RandomNumberGenerator.GetBytes(16));
        // Through PKCS#12 so the private key is usable by TLS on every platform.
        return X509CertificateLoader.LoadPkcs12(issued.CopyWithPrivateKey(key).Export(X509ContentType.Pkcs12, ""), "");
    }

    /// <summary>An HttpClient to the https address that trusts only the test CA and presents <paramref name="certificate"/> (or none).</summary>
    public HttpClient Client(Uri baseUrl, X509Certificate2? certificate)
    {
        var handler = new HttpClientHandler
        {
            ClientCertificateOptions = ClientCertificateOption.Manual,
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
            {
                if (cert is null) return false;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(Ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(cert);
            },
        };
        if (certificate is not null) handler.ClientCertificates.Add(certificate);
        var client = new HttpClient(handler) { BaseAddress = baseUrl };
        client.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
        return client;
    }

    public void Dispose()
    {
        Ca.Dispose();
        Server.Dispose();
        ClientA.Dispose();
        ClientB.Dispose();
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
