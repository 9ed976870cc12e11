using PhrFhir.Validation.Packages;

namespace PhrFhir.Server.Validation;

/// <summary>
/// The conformance package settings (section <c>Packages</c>) and the <c>packages restore</c> command.
/// Nothing here knows about this project's <c>../shared/ref</c>: where the packages come from is the
/// operator's configuration (the test scripts point it at that folder).
/// </summary>
public static class PackageSettings
{
    /// <summary>
    /// <c>Packages:Sources</c> (a list, or one comma-separated string; an empty string means none), else
    /// <c>PHRFHIR_PACKAGE_SOURCES</c> (comma-separated), else the FHIR package registry;
    /// <c>Packages:Cache</c>, <c>Packages:Manifest</c>, <c>Packages:Downloads</c>.
    /// </summary>
    public static PackageOptions From(IConfiguration config)
    {
        var options = new PackageOptions();
        var section = config.GetSection("Packages");
        var sources = section.GetSection("Sources");
        if (sources.Value is { } text) options.Sources = PackageOptions.ParseSources(text);
        else if (sources.GetChildren().Select(c => c.Value).OfType<string>().ToList() is { Count: > 0 } list) options.Sources = list;
        else if (Environment.GetEnvironmentVariable("PHRFHIR_PACKAGE_SOURCES") is { } env) options.Sources = PackageOptions.ParseSources(env);
        if (section["Cache"] is { Length: > 0 } cache) options.Cache = cache;
        if (section["Manifest"] is { Length: > 0 } manifest) options.Manifest = manifest;
        if (section["Downloads"] is { Length: > 0 } downloads) options.Downloads = bool.Parse(downloads);
        return options;
    }

    /// <summary>
    /// <c>dotnet run --project src/PhrFhir.Server -- packages restore [--Packages:Sources=…]</c>: fills the package
    /// cache with every family's packages and says where each came from; exit code 1 when one is missing.
    /// </summary>
    public static async Task<int> RestoreCommandAsync(string[] args)
    {
        var config = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true)
            .AddEnvironmentVariables()
            .AddCommandLine(args)
            .Build();
        var options = From(config);
        using var logs = LoggerFactory.Create(l => l.AddSimpleConsole(o => o.SingleLine = true));
        var results = await PackageRestore.RestoreAsync(PackageManifest.Load(options.Manifest ?? PackageManifest.DefaultPath), options, null,
            logs.CreateLogger("PhrFhir.Packages"));
        foreach (var result in results)
            Console.WriteLine((result.Available ? "ok       " : "MISSING  ") + result.Describe());
        Console.WriteLine($"Package cache: {Path.GetFullPath(options.Cache)}; sources: {(options.Sources.Count == 0 ? "none" : string.Join(", ", options.Sources))}" +
                          (options.Downloads ? ", then the publishers' download locations" : ""));
        return results.All(r => r.Available) ? 0 : 1;
    }
}
