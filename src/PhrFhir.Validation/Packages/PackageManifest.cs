using System.Text.Json;

namespace PhrFhir.Validation.Packages;

/// <summary>A FHIR package by name and version (<c>jp-core.r4#1.1.2</c>), the way package caches and registries key them.</summary>
/// <param name="Name">npm-style package name, e.g. <c>jp-core.r4</c>.</param>
/// <param name="Version">The exact version, e.g. <c>1.1.2-url</c>.</param>
public sealed record PackageReference(string Name, string Version)
{
    /// <summary>Parses <c>name#version</c>.</summary>
    public static PackageReference Parse(string text)
    {
        var hash = text.IndexOf('#', StringComparison.Ordinal);
        if (hash <= 0 || hash == text.Length - 1) throw new FormatException($"'{text}' is not a package reference name#version");
        return new PackageReference(text[..hash], text[(hash + 1)..]);
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name}#{Version}";
}

/// <summary>One package of <c>profiles/packages.json</c>: where to get it and how to recognise it.</summary>
/// <param name="Reference">Its official name and version.</param>
/// <param name="Downloads">Direct tarball URLs of the publisher, tried after the configured sources.</param>
/// <param name="Sha256">The tarball's SHA-256 (hex) where the publisher fixes one; null when not known.</param>
/// <param name="Builds">Identities (<c>name#version</c> in its own package.json or ImplementationGuide) of builds accepted in its place.</param>
public sealed record ManifestPackage(PackageReference Reference, IReadOnlyList<string> Downloads, string? Sha256, IReadOnlyList<PackageReference> Builds)
{
    /// <summary>
    /// The <c>package/</c> folder of a package this project writes and ships beside the manifest (<c>bundled</c>,
    /// e.g. our occupational-health profiles): used where it is, never restored into the cache.
    /// </summary>
    public string? BundledFolder { get; init; }

    /// <summary>Whether a package that says it is <paramref name="identity"/> may stand for this one.</summary>
    public bool IsSatisfiedBy(PackageReference identity) => identity == Reference || Builds.Contains(identity);
}

/// <summary>A family's entry: its packages, root first, the canonical prefixes of the profiles it owns, and those of
/// the earlier IGs it replaces (prefix → what a sender reads, e.g. "eReferral IG 1.1.x").</summary>
public sealed record ManifestFamily(string Id, IReadOnlyList<PackageReference> Packages, IReadOnlyList<string> Profiles, IReadOnlyDictionary<string, string>? Supersedes = null);

/// <summary>
/// <c>profiles/packages.json</c>: per document family, the packages it needs, and per package where
/// to find it. Read once at start; the server ships it beside its binary.
/// </summary>
public sealed class PackageManifest
{
    /// <summary>Families by id (<see cref="DocumentFamily.Id"/>).</summary>
    public required IReadOnlyDictionary<string, ManifestFamily> Families { get; init; }

    /// <summary>Packages by <c>name#version</c>.</summary>
    public required IReadOnlyDictionary<PackageReference, ManifestPackage> Packages { get; init; }

    /// <summary>The manifest shipped with the code (<c>profiles/packages.json</c> next to the assembly).</summary>
    public static string DefaultPath => Path.Combine(AppContext.BaseDirectory, "profiles", "packages.json");

    /// <summary>Reads and checks a manifest: every package a family names must be described.</summary>
    public static PackageManifest Load(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
        var packages = new Dictionary<PackageReference, ManifestPackage>();
        foreach (var p in doc.RootElement.GetProperty("packages").EnumerateObject())
        {
            var reference = PackageReference.Parse(p.Name);
            packages[reference] = new ManifestPackage(reference,
                Strings(p.Value, "downloads"),
                p.Value.TryGetProperty("sha256", out var sha) ? sha.GetString()?.ToLowerInvariant() : null,
                Strings(p.Value, "builds").Select(PackageReference.Parse).ToList())
            {
                BundledFolder = p.Value.TryGetProperty("bundled", out var bundled) && bundled.GetString() is { } folder
                    ? Path.GetFullPath(folder, Path.GetDirectoryName(Path.GetFullPath(path))!)
                    : null,
            };
        }
        var families = new Dictionary<string, ManifestFamily>(StringComparer.Ordinal);
        foreach (var f in doc.RootElement.GetProperty("families").EnumerateObject())
        {
            var refs = Strings(f.Value, "packages").Select(PackageReference.Parse).ToList();
            foreach (var r in refs.Where(r => !packages.ContainsKey(r)))
                throw new InvalidDataException($"{path}: family {f.Name} needs {r}, which its 'packages' section does not describe");
            var supersedes = f.Value.TryGetProperty("supersedes", out var sup) && sup.ValueKind == JsonValueKind.Object
                ? sup.EnumerateObject().ToDictionary(x => x.Name, x => x.Value.GetString() ?? x.Name, StringComparer.Ordinal)
                : new Dictionary<string, string>(StringComparer.Ordinal);
            families[f.Name] = new ManifestFamily(f.Name, refs, Strings(f.Value, "profiles"), supersedes);
        }
        return new PackageManifest { Families = families, Packages = packages };
    }

    private static List<string> Strings(JsonElement e, string name) =>
        e.TryGetProperty(name, out var a) && a.ValueKind == JsonValueKind.Array
            ? a.EnumerateArray().Select(x => x.GetString()).OfType<string>().ToList()
            : [];
}
