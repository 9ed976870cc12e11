using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;

namespace PhrFhir.Validation.Packages;

/// <summary>A package dependency as declared by <c>package.json</c> or <c>ImplementationGuide.dependsOn</c>.</summary>
/// <param name="PackageId">npm-style package name, e.g. <c>jp-core.r4</c>.</param>
/// <param name="Version">The exact version asked for, e.g. <c>1.1.2-url</c>.</param>
public sealed record PackageDependency(string PackageId, string Version)
{
    /// <inheritdoc />
    public override string ToString() => $"{PackageId}#{Version}";
}

/// <summary>One JSON resource file of a package, kept as bytes until it is needed.</summary>
internal sealed record PackageFile(string Name, string ResourceType, string? Url, string? Version, byte[] Json);

/// <summary>
/// A FHIR package read from disk: an npm package folder, a flat folder of resources (the
/// <c>sushi-compiled</c> folders) or a <c>.tgz</c>. Only conformance resources are kept.
/// </summary>
internal sealed class ConformancePackage
{
    /// <summary>Resource types that make up a conformance set; examples are ignored.</summary>
    private static readonly HashSet<string> ConformanceTypes =
    [
        "StructureDefinition", "ValueSet", "CodeSystem", "NamingSystem", "ConceptMap",
        "SearchParameter", "ImplementationGuide", "CapabilityStatement", "OperationDefinition",
    ];

    public required string PackageId { get; init; }
    public required string Version { get; init; }
    /// <summary>The IG's business version where it differs from the package label (eCheckup says 1.0.0-temp in package.json, 1.1.3 in its IG).</summary>
    public string? IgVersion { get; init; }
    public required string Location { get; init; }
    /// <summary>SHA-256 over file names and bytes, in name order: changes when any file changes.</summary>
    public required string ContentHash { get; init; }
    public required IReadOnlyList<PackageDependency> Dependencies { get; init; }
    public required IReadOnlyList<PackageFile> Files { get; init; }

    public override string ToString() => $"{PackageId}#{Version} ({Location})";

    /// <summary>Reads the identity of a package without keeping its files (for the catalog scan).</summary>
    public static ConformancePackage Read(string location)
    {
        var entries = File.Exists(location) ? ReadTgz(location) : ReadFolder(location);
        entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));

        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        string? pkgName = null, pkgVersion = null;
        var deps = new List<PackageDependency>();
        var files = new List<PackageFile>();
        string? igPackageId = null, igVersion = null;
        foreach (var (name, bytes) in entries)
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            sha.AppendData(bytes);
            if (name == "package.json")
            {
                using var doc = JsonDocument.Parse(bytes);
                pkgName = Str(doc.RootElement, "name");
                pkgVersion = Str(doc.RootElement, "version");
                if (doc.RootElement.TryGetProperty("dependencies", out var d) && d.ValueKind == JsonValueKind.Object)
                    foreach (var p in d.EnumerateObject())
                        deps.Add(new PackageDependency(p.Name, p.Value.GetString() ?? ""));
                continue;
            }
            PackageFile? file;
            try { file = Describe(name, bytes); }
            catch (JsonException) { continue; } // not a resource (e.g. .index.json variants)
            if (file is null || !ConformanceTypes.Contains(file.ResourceType)) continue;
            if (file.ResourceType == "ImplementationGuide")
            {
                using var doc = JsonDocument.Parse(bytes);
                igPackageId = Str(doc.RootElement, "packageId");
                igVersion = Str(doc.RootElement, "version");
                if (doc.RootElement.TryGetProperty("dependsOn", out var dependsOn))
                    foreach (var dep in dependsOn.EnumerateArray())
                    {
                        var id = Str(dep, "packageId");
                        var v = Str(dep, "version");
                        if (id is not null && v is not null) deps.Add(new PackageDependency(id, v));
                    }
            }
            files.Add(file);
        }

        return new ConformancePackage
        {
            PackageId = pkgName ?? igPackageId ?? Path.GetFileName(location),
            Version = pkgVersion ?? igVersion ?? "0.0.0",
            IgVersion = igVersion,
            Location = location,
            ContentHash = Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant(),
            Dependencies = deps.DistinctBy(d => d.PackageId).ToList(),
            Files = files,
        };
    }

    private static PackageFile? Describe(string name, byte[] bytes)
    {
        var reader = new Utf8JsonReader(bytes);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return null;
        string? type = null, url = null, version = null;
        // Top-level properties only: skip nested objects/arrays.
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var prop = reader.GetString();
            reader.Read();
            if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray) { reader.Skip(); continue; }
            if (reader.TokenType != JsonTokenType.String) continue;
            switch (prop)
            {
                case "resourceType": type = reader.GetString(); break;
                case "url": url = reader.GetString(); break;
                case "version": version = reader.GetString(); break;
            }
        }
        return type is null ? null : new PackageFile(name, type, url, version, bytes);
    }

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static List<(string Name, byte[] Bytes)> ReadFolder(string folder)
    {
        // npm layout (folder/package/*.json) or flat (folder/*.json)
        var dir = File.Exists(Path.Combine(folder, "package", "package.json")) ? Path.Combine(folder, "package") : folder;
        return Directory.EnumerateFiles(dir, "*.json", SearchOption.TopDirectoryOnly)
            .Select(f => (Path.GetFileName(f), File.ReadAllBytes(f)))
            .ToList();
    }

    private static List<(string Name, byte[] Bytes)> ReadTgz(string path)
    {
        var result = new List<(string, byte[])>();
        using var file = File.OpenRead(path);
        using var gz = new GZipStream(file, CompressionMode.Decompress);
        using var tar = new TarReader(gz);
        while (tar.GetNextEntry() is { } entry)
        {
            if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || entry.DataStream is null) continue;
            var name = entry.Name.Replace('\\', '/');
            // only the package's own top level: package/x.json (not package/example/…, package/other/…)
            if (!name.StartsWith("package/", StringComparison.Ordinal) || name.IndexOf('/', 8) >= 0) continue;
            if (!name.EndsWith(".json", StringComparison.Ordinal)) continue;
            using var ms = new MemoryStream();
            entry.DataStream.CopyTo(ms);
            result.Add((name[8..], ms.ToArray()));
        }
        return result;
    }
}
