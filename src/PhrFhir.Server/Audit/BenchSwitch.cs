namespace PhrFhir.Server.Audit;

/// <summary>
/// <c>Bench:AuthAndAuditOff=true</c>: the server runs without the access check and without request
/// AuditEvents, so a benchmark can measure what they cost on the same data (docs/audit.md). The switch
/// exists only in the Bench build (<c>dotnet build -c Bench</c>, which defines BENCH; bench/README.md): no
/// configuration of a Release or Debug server can turn authorisation off. Those refuse to start when asked.
/// </summary>
public static class BenchSwitch
{
    public const string Key = "Bench:AuthAndAuditOff";

#if BENCH
    /// <summary>
    /// True when the switch is on. Even in the Bench build it is refused at start-up unless every address
    /// the server listens on is loopback, and logged as a warning when on.
    /// </summary>
    public static bool AuthAndAuditOff(IConfiguration config, ILogger log)
    {
        if (!config.GetValue(Key, false)) return false;
        var urls = (config["urls"] ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Concat(config.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"] ?? "")).ToList();
        var open = urls.Where(u => !IsLoopback(u)).ToList();
        if (urls.Count == 0 || open.Count > 0)
            throw new InvalidOperationException(
                $"{Key}=true turns off authorisation and auditing; it is allowed only when the server listens on loopback alone (127.0.0.1, ::1, localhost), not on {string.Join(", ", open.DefaultIfEmpty("the default addresses"))}.");
        log.LogWarning("!!! {Key}=true: NO ACCESS CONTROL AND NO AUDIT TRAIL FOR REQUESTS. Benchmarks only; listening on {Urls} (loopback) !!!", Key, string.Join(", ", urls));
        return true;
    }

    static bool IsLoopback(string url) =>
        Uri.TryCreate(url.Replace("://+", "://plus", StringComparison.Ordinal).Replace("://*", "://star", StringComparison.Ordinal), UriKind.Absolute, out var u)
        && (u.IsLoopback || u.Host == "[::1]");
#else
    /// <summary>
    /// A server built for use has no switch to turn authorisation off. Asked for one, it refuses to start
    /// rather than run in a way its operator did not expect.
    /// </summary>
    public static void RefuseOutsideTheBenchBuild(IConfiguration config)
    {
        if (config.GetValue(Key, false))
            throw new InvalidOperationException(
                $"{Key}=true: this server is not the benchmark build and cannot run without authorisation and auditing. Remove the setting; benchmarks build the server with 'dotnet build -c Bench' (bench/README.md).");
    }
#endif
}
