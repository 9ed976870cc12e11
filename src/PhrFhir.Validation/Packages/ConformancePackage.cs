using System.Security.Cryptography;
using System.Text.Json;

namespace PhrFhir.Validation.Packages;

/// <summary>One JSON resource file of a package, kept as bytes until it is needed.</summary>
/// <remarks><see cref="Type"/>, <see cref="Kind"/> and <see cref="Derivation"/> are a StructureDefinition's (what it constrains).</remarks>
internal sealed record PackageFile(string Name, string ResourceType, string? Url, string? Version, byte[] Json,
    string? Type = null, string? Kind = null, string? Derivation = null);

/// <summary>
/// A FHIR package read from its folder in the package cache (<c>package/</c>: package.json and the
/// resources, or a flat folder of resources from a SUSHI build). Only conformance resources are kept.
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
    /// <summary>As declared by <c>package.json</c> and <c>ImplementationGuide.dependsOn</c>.</summary>
    public required IReadOnlyList<PackageReference> Dependencies { get; init; }
    public required IReadOnlyList<PackageFile> Files { get; init; }

    public override string ToString() => $"{PackageId}#{Version} ({Location})";

    /// <summary>Reads a package folder; it is named <paramref name="reference"/> whatever its package.json says (a build standing in for it).</summary>
    public static ConformancePackage Read(PackageReference reference, string location)
    {
        var entries = ReadFolder(location);
        entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));

        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var deps = new List<PackageReference>();
        var files = new List<PackageFile>();
        string? igVersion = null;
        foreach (var (name, bytes) in entries)
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            sha.AppendData(bytes);
            if (name == "package.json")
            {
                using var doc = JsonDocument.Parse(bytes);
                if (doc.RootElement.TryGetProperty("dependencies", out var d) && d.ValueKind == JsonValueKind.Object)
                    foreach (var p in d.EnumerateObject())
                        deps.Add(new PackageReference(p.Name, p.Value.GetString() ?? ""));
                continue;
            }
            PackageFile? file;
            try { file = Describe(name, bytes); }
            catch (JsonException) { continue; } // not a resource (e.g. .index.json variants)
            if (file is null || !ConformanceTypes.Contains(file.ResourceType)) continue;
            if (file.ResourceType == "ImplementationGuide")
            {
                using var doc = JsonDocument.Parse(bytes);
                igVersion = Str(doc.RootElement, "version");
                if (doc.RootElement.TryGetProperty("dependsOn", out var dependsOn))
                    foreach (var dep in dependsOn.EnumerateArray())
                    {
                        var id = Str(dep, "packageId");
                        var v = Str(dep, "version");
                        if (id is not null && v is not null) deps.Add(new PackageReference(id, v));
                    }
            }
            files.Add(file);
        }

        return new ConformancePackage
        {
            PackageId = reference.Name,
            Version = reference.Version,
            IgVersion = igVersion,
            Location = location,
            ContentHash = Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant(),
            Dependencies = deps.DistinctBy(d => d.Name).ToList(),
            Files = files,
        };
    }

    private static PackageFile? Describe(string name, byte[] bytes)
    {
        var reader = new Utf8JsonReader(bytes);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return null;
        string? type = null, url = null, version = null, sdType = null, kind = null, derivation = null;
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
                case "type": sdType = reader.GetString(); break;
                case "kind": kind = reader.GetString(); break;
                case "derivation": derivation = reader.GetString(); break;
            }
        }
        return type is null ? null : type == "StructureDefinition"
            ? new PackageFile(name, type, url, version, bytes, sdType, kind, derivation)
            : new PackageFile(name, type, url, version, bytes);
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
}
