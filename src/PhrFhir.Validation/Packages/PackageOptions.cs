namespace PhrFhir.Validation.Packages;

/// <summary>
/// Where conformance packages come from and where they are kept (configuration section <c>Packages</c>;
/// <c>PHRFHIR_PACKAGE_SOURCES</c> for <see cref="Sources"/>).
/// </summary>
public sealed class PackageOptions
{
    /// <summary>The FHIR package registry used when no sources are configured.</summary>
    public const string DefaultRegistry = "https://packages.fhir.org";

    /// <summary>
    /// Tried in order for each package not in the cache: a folder (searched for package folders,
    /// flat folders of resources with an ImplementationGuide, and <c>.tgz</c> files) or an
    /// <c>http(s)</c> URL of a registry that speaks the npm protocol. Default: <see cref="DefaultRegistry"/>.
    /// </summary>
    public IList<string> Sources { get; set; } = [DefaultRegistry];

    /// <summary>After the sources, try the publisher's download URLs listed in the manifest.</summary>
    public bool Downloads { get; set; } = true;

    /// <summary>The FHIR package cache (<c>&lt;name&gt;#&lt;version&gt;/package/</c>, the layout SUSHI and the IG Publisher share).</summary>
    public string Cache { get; set; } = DefaultCache;

    /// <summary>The manifest (<c>profiles/packages.json</c>); default: the one shipped beside the assembly.</summary>
    public string? Manifest { get; set; }

    /// <summary>How long one HTTP request to a source may take.</summary>
    public TimeSpan HttpTimeout { get; set; } = TimeSpan.FromSeconds(100);

    /// <summary><c>~/.fhir/packages</c>, as the FHIR tools use it.</summary>
    public static string DefaultCache => Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".fhir", "packages");

    /// <summary>Splits a comma-separated list of sources (<c>PHRFHIR_PACKAGE_SOURCES</c>); blanks are dropped.</summary>
    public static List<string> ParseSources(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    internal string ResolveCache() => Path.GetFullPath(Cache, Directory.GetCurrentDirectory());

    internal string ResolveManifest() => Manifest ?? PackageManifest.DefaultPath;
}
