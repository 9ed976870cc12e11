using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;

namespace PhrFhir.Validation.Packages;

/// <summary>Where a package lives on disk and what it says it is, before its files are read.</summary>
internal sealed record PackageLocation(string PackageId, string Version, string Location);

/// <summary>
/// The packages found in the reference folder (<c>shared/ref</c>) and in any extra package folders
/// from <see cref="ValidationOptions.AdditionalPackages"/>, found by <c>package.json</c> or an
/// <c>ImplementationGuide</c> resource. Dependencies are matched by exact package id and version,
/// because JP Core 1.1.2 exists in variants (<c>-url</c>, <c>-clins</c>) with the same canonicals
/// but different content.
/// </summary>
internal sealed class PackageCatalog
{
    private readonly List<PackageLocation> _entries;
    private readonly Dictionary<string, ConformancePackage> _loaded = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();

    private PackageCatalog(List<PackageLocation> entries) => _entries = entries;

    public IReadOnlyList<PackageLocation> Entries => _entries;

    public static PackageCatalog Scan(string? referenceFolder, IEnumerable<string> additional)
    {
        var entries = new List<PackageLocation>();
        // Additional packages first: configuration wins over what shared/ref happens to hold.
        foreach (var path in additional)
            if (Identify(path) is { } e) entries.Add(e);
        if (referenceFolder is not null && Directory.Exists(referenceFolder))
            ScanFolder(referenceFolder, 0, entries);
        return new PackageCatalog(entries);
    }

    private static void ScanFolder(string dir, int depth, List<PackageLocation> into)
    {
        if (Identify(dir) is { } e) { into.Add(e); return; }
        if (depth >= 4) return;
        foreach (var tgz in Directory.EnumerateFiles(dir, "*.tgz").Order(StringComparer.Ordinal))
            if (Identify(tgz) is { } t) into.Add(t);
        foreach (var sub in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
            if (!Path.GetFileName(sub).StartsWith('.')) ScanFolder(sub, depth + 1, into);
    }

    /// <summary>Reads a folder's or archive's package.json (or its ImplementationGuide) for id and version.</summary>
    internal static PackageLocation? Identify(string path)
    {
        try
        {
            if (File.Exists(path))
                return path.EndsWith(".tgz", StringComparison.OrdinalIgnoreCase) ? IdentifyTgz(path) : null;
            if (!Directory.Exists(path)) return null;
            var packageJson = Path.Combine(path, "package.json");
            if (File.Exists(packageJson) && FromPackageJson(File.ReadAllBytes(packageJson), path) is { } e) return e;
            var ig = Directory.EnumerateFiles(path, "ImplementationGuide-*.json").FirstOrDefault();
            if (ig is null) return null;
            using var doc = JsonDocument.Parse(File.ReadAllBytes(ig));
            var id = doc.RootElement.TryGetProperty("packageId", out var p) ? p.GetString() : null;
            var version = doc.RootElement.TryGetProperty("version", out var v) ? v.GetString() : null;
            return id is null || version is null ? null : new PackageLocation(id, version, path);
        }
        catch (Exception ex) when (ex is IOException or JsonException or InvalidDataException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static PackageLocation? IdentifyTgz(string path)
    {
        using var file = File.OpenRead(path);
        using var gz = new GZipStream(file, CompressionMode.Decompress);
        using var tar = new TarReader(gz);
        while (tar.GetNextEntry() is { } entry)
        {
            if (entry.Name.Replace('\\', '/') != "package/package.json" || entry.DataStream is null) continue;
            using var ms = new MemoryStream();
            entry.DataStream.CopyTo(ms);
            return FromPackageJson(ms.ToArray(), path);
        }
        return null;
    }

    private static PackageLocation? FromPackageJson(byte[] json, string location)
    {
        using var doc = JsonDocument.Parse(json);
        var name = doc.RootElement.TryGetProperty("name", out var n) ? n.GetString() : null;
        var version = doc.RootElement.TryGetProperty("version", out var v) ? v.GetString() : null;
        return name is null || version is null ? null : new PackageLocation(name, version, location);
    }

    /// <summary>The entry for an exact package id and version, if present.</summary>
    public PackageLocation? Find(PackageDependency dependency) =>
        _entries.FirstOrDefault(e => e.PackageId == dependency.PackageId && e.Version == dependency.Version);

    /// <summary>The entry at a location relative to the reference folder, if that folder holds a package.</summary>
    public PackageLocation? FindAt(string fullPath) =>
        _entries.FirstOrDefault(e => Path.GetFullPath(e.Location) == Path.GetFullPath(fullPath));

    /// <summary>Reads (once) and returns the package's files.</summary>
    public ConformancePackage Load(PackageLocation entry)
    {
        lock (_lock)
        {
            if (_loaded.TryGetValue(entry.Location, out var p)) return p;
        }
        var package = ConformancePackage.Read(entry.Location);
        lock (_lock)
        {
            _loaded.TryAdd(entry.Location, package);
            return _loaded[entry.Location];
        }
    }
}
