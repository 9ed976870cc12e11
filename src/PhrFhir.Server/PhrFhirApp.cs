using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;
using PhrFhir.Server.Rest;
using PhrFhir.Storage;
using PhrFhir.Storage.Embedded;
using PhrFhir.Storage.Search;
using PhrFhir.Validation;

namespace PhrFhir.Server;

/// <summary>Wires the features together; tests build the same app on a free port.</summary>
public static class PhrFhirApp
{
    public static async Task<WebApplication> BuildAsync(string[] args, CancellationToken ct = default)
    {
        // appsettings.json ships beside the binary; relative data paths still resolve against the working directory.
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
        AccessLogConsole.Add(builder.Logging); // access lines written in batches (docs/performance.md, "Read")
        // Limits:MaxJsonDepth is the former name of Limits:MaxDepth (it bounded JSON only); still read.
        if (builder.Configuration["Limits:MaxDepth"] is null && builder.Configuration["Limits:MaxJsonDepth"] is { } oldDepth)
            builder.Configuration["Limits:MaxDepth"] = oldDepth;
        var limits = builder.Configuration.GetSection("Limits").Get<ServerLimits>() ?? new ServerLimits();
        if (limits.MaxDepth is < 2 or > ServerLimits.MaxDepthCeiling)
            throw new InvalidOperationException($"Limits:MaxDepth must be between 2 and {ServerLimits.MaxDepthCeiling}, not {limits.MaxDepth}.");
        builder.Services.Configure<ServerLimits>(builder.Configuration.GetSection("Limits"));
        builder.Services.Configure<Mhd.MhdOptions>(builder.Configuration.GetSection("Mhd"));
        builder.Services.Configure<Sharing.SharingOptions>(builder.Configuration.GetSection("Sharing"));
        builder.Services.Configure<Identity.LinkAttemptLimits>(builder.Configuration.GetSection("Identity:LinkAttempts"));
        // Kestrel lets the larger of the two through; FHIR bodies are held to MaxBodyBytes by FhirFormat.
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = Math.Max(limits.MaxBodyBytes, limits.MaxBinaryBytes) + 1);

        // Storage: the configured PostgreSQL, or an embedded one started here (the default).
        // Lives as long as the app: the embedded PostgreSQL logs through it when it stops.
        var loggerFactory = LoggerFactory.Create(l => l.AddSimpleConsole(o => o.SingleLine = true));
        var startLog = loggerFactory.CreateLogger("PhrFhir.Startup");
#if BENCH
        var benchOff = Audit.BenchSwitch.AuthAndAuditOff(builder.Configuration, startLog); // the Bench build only, loopback only
#else
        Audit.BenchSwitch.RefuseOutsideTheBenchBuild(builder.Configuration);
#endif
        var connectionString = builder.Configuration.GetConnectionString("Fhir") ?? Environment.GetEnvironmentVariable("PHRFHIR_DB");
        EmbeddedPostgres? embedded = null;
        if (string.IsNullOrEmpty(connectionString))
        {
            var dir = Path.GetFullPath(builder.Configuration["Storage:DataDirectory"] ?? Path.Combine("data", "postgres"));
            startLog.LogInformation("No connection string configured: starting the embedded PostgreSQL in {Dir}", dir);
            embedded = await EmbeddedPostgres.StartAsync(dir, builder.Configuration.GetValue("Storage:Port", 0), startLog, ct,
                builder.Configuration.GetValue("Storage:StatementStatistics", false));
            connectionString = embedded.ConnectionString;
        }
        // Profile validation: the conformance packages are restored into the package cache first (what is
        // missing), then families load and warm in the background; a request that needs one waits.
        var validationOptions = builder.Configuration.GetSection("Validation").Get<ValidationOptions>() ?? new ValidationOptions();
        validationOptions.Packages = Validation.PackageSettings.From(builder.Configuration);
        var validator = await DocumentValidator.CreateAsync(validationOptions, loggerFactory.CreateLogger("PhrFhir.Validation"), ct);
        var parameters = SearchParameters.CreateDefault(IgSearchParameters(validator, startLog));
        // The audit chain's key never enters the database (docs/audit.md, "Threat model"): configuration
        // (Audit:ChainKey, or PHRFHIR_AUDIT_CHAIN_KEY), or else a 0600 key file made once in Audit:KeyDirectory
        // (default: "audit" beside the PostgreSQL data directory), where the chain's checkpoint is kept too.
        var auditChain = Storage.AuditChain.Open(
            builder.Configuration["Audit:ChainKey"] ?? Environment.GetEnvironmentVariable("PHRFHIR_AUDIT_CHAIN_KEY"),
            Path.GetFullPath(builder.Configuration["Audit:KeyDirectory"]
                ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(builder.Configuration["Storage:DataDirectory"] ?? Path.Combine("data", "postgres")))!, "audit")));
        var store = await FhirStore.OpenAsync(connectionString, parameters, ct, auditChain);
        // Pooled connections to a postmaster that died are dead too: drop them once it runs again.
        if (embedded is not null) embedded.Restarted += store.ClearPools;

        builder.Services.AddSingleton(store);
        await Identity.IdentifierDomains.RegisterAsync(store, builder.Configuration, ct);
        builder.Services.AddSingleton<Identity.IdentifierDomains>();
        if (embedded is not null) builder.Services.AddSingleton(embedded); // its lifetime is StorageLifetime's
        builder.Services.AddHostedService(_ => new StorageLifetime(store, embedded, loggerFactory));
        builder.Services.AddSingleton<ResourceWrites>();
        builder.Services.AddSingleton<Mhd.DocumentRegistry>();
        builder.Services.AddSingleton<Workflows.WorkflowRules>();
        builder.Services.AddSingleton<Security.ConsentRules>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<Security.ConsentRules>());
        builder.Services.AddSingleton<Security.PersonPatients>();
        builder.Services.AddSingleton<CapabilityStatementBuilder>();
        builder.Services.AddSingleton(validator);
        builder.Services.AddHttpContextAccessor(); // ProfileEnforcement hands warnings to the response
        builder.Services.AddSingleton<Validation.ProfileEnforcement>();

        Security.AuthorizationServer.Add(builder);
        Security.CertificateBinding.AddHttps(builder);
        builder.Services.AddSingleton<Audit.AuditTrail>();
        builder.Services.AddHostedService<Audit.AuditWriter>();
        Subscriptions.SubscriptionDelivery.Add(builder);

        var app = builder.Build();
        // Made before the hosted services start: it adds to what the store's listener hears (FhirStore.Watched), which
        // must not change while the listener reads it.
        app.Services.GetRequiredService<Security.PersonPatients>();
        AccessLog.Use(app); // outermost: it sees the final status of every request
        ErrorHandling.Use(app);
        OpenApiDescription.Map(app); // Swagger UI's static files, before routing
#if BENCH
        if (benchOff) { RequestGuard.Use(app); app.UseRouting(); app.UseAuthentication(); }
        else
#endif
        {
            app.Services.GetRequiredService<Audit.AuditTrail>().Use(app); // records every request, refused ones too
            RequestGuard.Use(app); // no control characters in the URL or the headers the server keeps
            Security.AccessControl.Use(app);
            Security.CertificateBinding.Use(app); // after authentication, before any endpoint: cnf-bound tokens need their certificate
        }
        app.MapGet("/healthz", () => Results.Text("ok")).AllowAnonymous();
        app.MapGet("/readyz", async (HttpContext ctx, FhirStore s, CancellationToken c) =>
        {
            if (await s.PingAsync(c)) return Results.Text("ready");
            ctx.Response.Headers.RetryAfter = ErrorHandling.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            return Results.Text("database unreachable", statusCode: 503);
        }).AllowAnonymous();
        Security.AuthorizationServer.Map(app, embedded: app.Configuration["Auth:Authority"] is null);
        Validation.ValidateOperation.Map(app);
        Validation.ConformanceEndpoints.Map(app);
        Mhd.GenerateMetadata.Map(app);
        Workflows.DetailedExamWorklist.Map(app);
        Identity.PatientLinks.Map(app);
        Identity.PixQuery.Map(app);
        Identity.PatientMatch.Map(app);
        Identity.PatientMerge.Map(app);
        Identity.DomainNamingSystems.Map(app);
        Audit.AuditEndpoints.Map(app);
        Subscriptions.SubscriptionEndpoints.Map(app);
        Sharing.ShareEndpoints.Map(app);
        OpenApiDescription.MapDocument(app);
        FhirEndpoints.Map(app);
        return app;
    }

    // The IG packages whose SearchParameters the server offers (restored with the families that use them).
    static readonly PhrFhir.Validation.Packages.PackageReference[] IgPackages =
    [
        new("jp-core.r4", "1.1.2"),      // JP Core 1.1.2: kana sort, insurance numbers, ...
        new("ihe.iti.mhd", "4.2.3"),     // IHE MHD 4.2.3: DocumentReference creation, List designationType/sourceId
    ];

    /// <summary>
    /// SearchParameters of the IG packages in the package cache. The server runs without them: the R4
    /// core parameters are always there.
    /// </summary>
    static IEnumerable<SearchParameter> IgSearchParameters(DocumentValidator validator, ILogger log)
    {
        foreach (var package in IgPackages)
        {
            if (validator.PackageFolder(package) is not { } dir)
            {
                log.LogWarning("IG package {Package} is not in the package cache: its search parameters are not offered", package);
                continue;
            }
            foreach (var file in Directory.EnumerateFiles(dir, "SearchParameter-*.json").Order(StringComparer.Ordinal))
            {
                SearchParameter? sp = null;
                try { sp = FhirFormat.ParseStored(File.ReadAllText(file)) as SearchParameter; }
                catch (Exception e) { log.LogWarning("Skipping {File}: {Error}", file, e.Message); }
                if (sp is not null) yield return sp;
            }
        }
    }

    /// <summary>
    /// Closes the store and then stops the embedded PostgreSQL when the host stops (after Kestrel has
    /// drained requests: hosted services stop in reverse order and the web server was added last).
    /// The container would not do it: it never disposes instances it was handed ready-made.
    /// </summary>
    sealed class StorageLifetime(FhirStore store, EmbeddedPostgres? embedded, ILoggerFactory loggerFactory) : IHostedService
    {
        public Task StartAsync(CancellationToken ct) => Task.CompletedTask;

        public async Task StopAsync(CancellationToken ct)
        {
            await store.DisposeAsync();
            if (embedded is not null) await embedded.DisposeAsync();
            loggerFactory.Dispose();
        }
    }
}
