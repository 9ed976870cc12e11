using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace PhrFhir.Validation.Packages;

/// <summary>What a restore did for one package.</summary>
/// <param name="Package">The package.</param>
/// <param name="Folder">Its <c>package/</c> folder in the cache; null when it could not be had.</param>
/// <param name="Source">Where it came from (this run or an earlier one); null when unknown or missing.</param>
/// <param name="Restored">True when this run put it in the cache.</param>
/// <param name="Tried">Each source tried without success, with why (<c>source: reason</c>).</param>
public sealed record PackageRestoreResult(PackageReference Package, string? Folder, string? Source, bool Restored, IReadOnlyList<string> Tried)
{
    /// <summary>Whether the package is in the cache.</summary>
    public bool Available => Folder is not null;

    /// <summary>One sentence for logs and OperationOutcomes: where it is, or why it is not.</summary>
    public string Describe() => Available
        ? $"{Package} in {Folder}" + (Source is null ? "" : $" (from {Source})")
        : $"{Package} is not in the package cache" + (Tried.Count == 0
            ? " and no package sources are configured (Packages:Sources or PHRFHIR_PACKAGE_SOURCES)"
            : $"; tried {string.Join("; ", Tried)}");
}

/// <summary>
/// Fills the FHIR package cache with the packages the manifest names, the way FHIR servers load
/// IGs by <c>name#version</c>: a package already in the cache is used as it is; otherwise each
/// configured source is tried in order (a folder of packages, or a registry speaking the npm
/// protocol: <c>GET {base}/{name}</c> → <c>versions[v].dist.tarball</c> and <c>shasum</c>), then the
/// publisher's download URLs. A tarball must match the registry's SHA-1 <c>shasum</c> and the
/// manifest's SHA-256 where one is given, and must say it is the package asked for (or a build the
/// manifest accepts); otherwise it is refused and the next source is tried.
/// </summary>
public static class PackageRestore
{
    /// <summary>Restores the packages of the given families (all of the manifest's when null) that the cache lacks.</summary>
    public static async Task<IReadOnlyList<PackageRestoreResult>> RestoreAsync(PackageManifest manifest, PackageOptions options,
        IEnumerable<string>? families, ILogger log, CancellationToken ct = default)
    {
        var wanted = manifest.Families.Values
            .Where(f => families is null || families.Contains(f.Id))
            .SelectMany(f => f.Packages).Distinct().ToList();
        var cache = new PackageCache(options.ResolveCache());
        var folders = new Dictionary<string, FolderSource>(StringComparer.Ordinal);
        using var http = new HttpClient { Timeout = options.HttpTimeout };
        http.DefaultRequestHeaders.UserAgent.ParseAdd("PhrFhir-package-restore/1");
        var results = new List<PackageRestoreResult>();
        // A host that did not answer is not asked again in this restore: a dead network costs one timeout, not one per package.
        var unreachable = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var reference in wanted)
        {
            var package = manifest.Packages[reference];
            if (package.BundledFolder is { } bundled)
            {
                // Ours, shipped with the server: read where it is, so an edited profile needs no new version.
                results.Add(Directory.Exists(bundled)
                    ? new PackageRestoreResult(reference, bundled, "bundled with the server", false, [])
                    : new PackageRestoreResult(reference, null, null, false, [$"{bundled}: the bundled folder is missing"]));
                continue;
            }
            if (cache.PackageFolder(reference) is { } cached)
            {
                results.Add(new PackageRestoreResult(reference, cached, cache.RecordOf(reference)?.Source, false, []));
                continue;
            }
            var tried = new List<string>();
            string? from = null;
            foreach (var (kind, source) in Attempts(options, package))
            {
                ct.ThrowIfCancellationRequested();
                if (kind != SourceKind.Folder && unreachable.Contains(Host(source)))
                {
                    tried.Add($"{source}: unreachable (did not answer earlier in this restore)");
                    continue;
                }
                try
                {
                    switch (kind)
                    {
                        case SourceKind.Folder:
                            if (!folders.TryGetValue(source, out var folder))
                                folders[source] = folder = await Task.Run(() => FolderSource.Scan(source), ct).ConfigureAwait(false);
                            var found = folder.Find(package) ?? throw new SourceMissException("not there");
                            Install(cache, package, found.Location, await ReadIfTarballAsync(found.Location, ct).ConfigureAwait(false), found.Location);
                            break;
                        case SourceKind.Registry:
                            var (tarball, shasum) = await FindInRegistryAsync(http, source, reference, ct).ConfigureAwait(false);
                            var bytes = await GetAsync(http, tarball, ct).ConfigureAwait(false);
                            var sha1 = Convert.ToHexStringLower(SHA1.HashData(bytes));
                            if (shasum is not null && !string.Equals(sha1, shasum, StringComparison.OrdinalIgnoreCase))
                                throw new InvalidDataException($"the tarball's SHA-1 is {sha1}, the registry says {shasum} (corrupt or altered)");
                            Install(cache, package, null, bytes, $"{source} ({tarball})");
                            break;
                        case SourceKind.Download:
                            Install(cache, package, null, await GetAsync(http, source, ct).ConfigureAwait(false), source);
                            break;
                    }
                    from = source;
                    break;
                }
                catch (Exception ex) when (ex is SourceMissException or InvalidDataException or HttpRequestException or IOException
                                               or JsonException or TaskCanceledException or UnauthorizedAccessException && !ct.IsCancellationRequested)
                {
                    tried.Add($"{source}: {Reason(ex)}");
                    if (kind != SourceKind.Folder && ex is HttpRequestException { StatusCode: null } or TaskCanceledException)
                        unreachable.Add(Host(source));
                }
            }
            var folderNow = cache.PackageFolder(reference);
            var result = new PackageRestoreResult(reference, folderNow, folderNow is null ? null : cache.RecordOf(reference)?.Source ?? from, folderNow is not null, tried);
            if (result.Available) log.LogInformation("Restored {Package} into {Folder} from {Source}", reference, folderNow, result.Source);
            else log.LogWarning("Package {Package} could not be restored: {Why}", reference, result.Describe());
            results.Add(result);
        }
        return results;
    }

    private enum SourceKind { Folder, Registry, Download }

    private static IEnumerable<(SourceKind, string)> Attempts(PackageOptions options, ManifestPackage package)
    {
        foreach (var source in options.Sources)
            yield return (IsUrl(source) ? SourceKind.Registry : SourceKind.Folder, source);
        if (options.Downloads)
            foreach (var url in package.Downloads)
                yield return (SourceKind.Download, url);
    }

    private static bool IsUrl(string source) =>
        source.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || source.StartsWith("https://", StringComparison.OrdinalIgnoreCase);

    private static string Host(string url) => Uri.TryCreate(url, UriKind.Absolute, out var uri) ? uri.Authority : url;

    private static async Task<byte[]?> ReadIfTarballAsync(string location, CancellationToken ct) =>
        File.Exists(location) ? await File.ReadAllBytesAsync(location, ct).ConfigureAwait(false) : null;

    /// <summary>Checks a tarball's SHA-256 against the manifest and installs it (or copies an unpacked folder).</summary>
    private static void Install(PackageCache cache, ManifestPackage package, string? folder, byte[]? tgz, string source)
    {
        string? Accept(PackageReference identity) => package.IsSatisfiedBy(identity) ? null
            : $"it is {identity}, not {package.Reference}" + (package.Builds.Count == 0 ? "" : $" or {string.Join(" / ", package.Builds)}");
        if (tgz is null)
        {
            cache.InstallFolder(package.Reference, folder!, new RestoreRecord(source, "", null, DateTimeOffset.UtcNow), Accept);
            return;
        }
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(tgz));
        if (package.Sha256 is not null && sha256 != package.Sha256)
            throw new InvalidDataException($"the tarball's SHA-256 is {sha256}, packages.json fixes {package.Sha256} (corrupt or a different build)");
        cache.InstallTarball(package.Reference, tgz, new RestoreRecord(source, "", sha256, DateTimeOffset.UtcNow), Accept);
    }

    /// <summary>npm registry protocol: the package document lists each version's tarball and its SHA-1.</summary>
    private static async Task<(string Tarball, string? Shasum)> FindInRegistryAsync(HttpClient http, string registry, PackageReference package, CancellationToken ct)
    {
        using var response = await http.GetAsync($"{registry.TrimEnd('/')}/{Uri.EscapeDataString(package.Name)}", ct).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound) throw new SourceMissException("not in this registry");
        if (!response.IsSuccessStatusCode) throw new HttpRequestException($"HTTP {(int)response.StatusCode} for the package document", null, response.StatusCode);
        using var doc = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false), cancellationToken: ct).ConfigureAwait(false);
        if (!doc.RootElement.TryGetProperty("versions", out var versions) || !versions.TryGetProperty(package.Version, out var version))
            throw new SourceMissException($"version {package.Version} is not in this registry");
        var dist = version.GetProperty("dist");
        var tarball = dist.TryGetProperty("tarball", out var t) ? t.GetString() : null;
        return (tarball ?? throw new InvalidDataException("the registry gives no dist.tarball"),
            dist.TryGetProperty("shasum", out var s) ? s.GetString() : null);
    }

    private static async Task<byte[]> GetAsync(HttpClient http, string url, CancellationToken ct)
    {
        using var response = await http.GetAsync(url, ct).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound) throw new SourceMissException($"{url} answers 404");
        if (!response.IsSuccessStatusCode) throw new HttpRequestException($"HTTP {(int)response.StatusCode} for {url}", null, response.StatusCode);
        return await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
    }

    private static string Reason(Exception ex) => ex switch
    {
        SourceMissException => ex.Message,
        HttpRequestException { StatusCode: not null } => $"answered {ex.Message}",
        HttpRequestException or TaskCanceledException => $"unreachable ({ex.Message})",
        InvalidDataException => $"refused: {ex.Message}",
        _ => $"{ex.GetType().Name}: {ex.Message}",
    };

    /// <summary>The source answered, and does not have the package.</summary>
    private sealed class SourceMissException(string message) : Exception(message);
}
