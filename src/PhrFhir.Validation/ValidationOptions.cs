using PhrFhir.Validation.Packages;

namespace PhrFhir.Validation;

/// <summary>What to do with a document whose profile validation finds errors.</summary>
public enum ProfilePolicy
{
    /// <summary>Refuse the write and answer with the OperationOutcome (the default).</summary>
    Reject,
    /// <summary>Store it, and return the issues as a warning.</summary>
    Warn,
    /// <summary>Do not validate against the family's profiles on write ($validate still does).</summary>
    Off,
}

/// <summary>
/// Where the conformance packages come from, where their resolved closure is cached, and how strict
/// to be per document family. Bind it from configuration section <c>Validation</c> or set it in code.
/// </summary>
public sealed class ValidationOptions
{
    /// <summary>Where the conformance packages come from and the FHIR package cache they are restored into.</summary>
    public PackageOptions Packages { get; set; } = new();

    /// <summary>Where the resolved conformance sets are cached; relative paths are under the working directory.</summary>
    public string CacheFolder { get; set; } = Path.Combine("data", "conformance-cache");

    /// <summary>The FHIR R4 core definitions (<c>specification.zip</c> from Hl7.Fhir.Specification.Data.R4); default: next to the assembly.</summary>
    public string? SpecificationZip { get; set; }

    /// <summary>The families to load, by <see cref="DocumentFamily.Id"/>; empty means all of <see cref="DocumentFamilies.All"/>.</summary>
    public IList<string> Families { get; set; } = [];

    /// <summary>Policy per family id (<see cref="DocumentFamily.Id"/>); families not listed get <see cref="DefaultPolicy"/>.</summary>
    public IDictionary<string, ProfilePolicy> Policies { get; set; } = new Dictionary<string, ProfilePolicy>(StringComparer.Ordinal);

    /// <summary>The policy of a family not listed in <see cref="Policies"/>.</summary>
    public ProfilePolicy DefaultPolicy { get; set; } = ProfilePolicy.Reject;

    /// <summary>
    /// Compile every profile of each family in the background after start, so the first document
    /// does not pay for it. When false, schemas are compiled on first use.
    /// </summary>
    public bool WarmUp { get; set; } = true;

    internal string ResolveCacheFolder() => Path.GetFullPath(CacheFolder, Directory.GetCurrentDirectory());

    internal string ResolveSpecificationZip() =>
        SpecificationZip ?? Path.Combine(AppContext.BaseDirectory, "specification.zip");
}
