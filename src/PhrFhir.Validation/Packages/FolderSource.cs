using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json;

namespace PhrFhir.Validation.Packages;

/// <summary>Where a package lives in a folder source and what it says it is, before it is read.</summary>
internal sealed record PackageLocation(PackageReference Identity, string Location);

/// <summary>
/// A local folder of packages, one of the sources a restore tries: npm package folders
/// (<c>package/package.json</c>), flat folders of resources with an <c>ImplementationGuide</c> (SUSHI
/// output) and <c>.tgz</c> files, found up to four levels down. Identity comes from
/// <c>package.json</c>, else from the ImplementationGuide's <c>packageId</c> and <c>version</c>.
/// </summary>
internal sealed class FolderSource
{
    private readonly List<PackageLocation> _entries;

    private FolderSource(string folder, List<PackageLocation> entries)
    {
        Folder = folder;
        _entries = entries;
    }

    public string Folder { get; }

    public IReadOnlyList<PackageLocation> Entries => _entries;

    public static FolderSource Scan(string folder)
    {
        var entries = new List<PackageLocation>();
        if (Directory.Exists(folder)) ScanFolder(folder, 0, entries);
        else if (Identify(folder) is { } single) entries.Add(single); // a .tgz named directly
        return new FolderSource(folder, entries);
    }

    /// <summary>The first package here that may stand for <paramref name="wanted"/> (its official identity first, then a build).</summary>
    public PackageLocation? Find(ManifestPackage wanted) =>
        _entries.FirstOrDefault(e => e.Identity == wanted.Reference) ?? _entries.FirstOrDefault(e => wanted.IsSatisfiedBy(e.Identity));

    private static void ScanFolder(string dir, int depth, List<PackageLocation> into)
    {
        if (Identify(dir) is { } e) { into.Add(e); return; }
        if (depth >= 4) return;
        foreach (var tgz in Directory.EnumerateFiles(dir, "*.tgz").Order(StringComparer.Ordinal))
            if (Identify(tgz) is { } t) into.Add(t);
        foreach (var sub in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
            if (!Path.GetFileName(sub).StartsWith('.')) ScanFolder(sub, depth + 1, into);
    }

    /// <summary>Reads a folder's or archive's package.json (or its ImplementationGuide) for name and version.</summary>
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
            return id is null || version is null ? null : new PackageLocation(new PackageReference(id, version), path);
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
        return name is null || version is null ? null : new PackageLocation(new PackageReference(name, version), location);
    }
}
