using System.Diagnostics;
using Firely.Fhir.Validation;
using Firely.Fhir.Validation.Compilation;
using Hl7.Fhir.Model;
using Hl7.Fhir.Specification.Source;
using Hl7.Fhir.Specification.Terminology;
using Microsoft.Extensions.Logging;
using PhrFhir.Validation.Cache;

namespace PhrFhir.Validation;

/// <summary>
/// One family's validator: its own resolver over its pack and the core pack, its own terminology
/// service and compiled-schema cache. Nothing is shared between families, because packages define
/// the same canonicals differently (JP Core variants, <c>…/Common/ValueSet/doc-typecodes</c>).
/// </summary>
internal sealed class FamilyValidator
{
    private readonly Validator _validator;
    private readonly IElementSchemaResolver _schemas;
    private readonly HashSet<string> _rootProfiles;

    public FamilyValidator(DocumentFamily family, FamilyPlan plan, ConformancePack? own, ConformancePack core)
    {
        Family = family;
        Plan = plan;
        Own = own is null ? null : new PackSource(own);
        Core = new PackSource(core);
        Resolver = Own is null ? Core : new MultiResolver(Own, Core);
#pragma warning disable ExperimentalApi // the documented way to get a schema compiler whose results we cache (and warm) ourselves
        _schemas = new EmptyResliceGuard(StructureDefinitionToElementSchemaResolver.Create(Resolver));
#pragma warning restore ExperimentalApi
        var terminology = new Terminology.CachedTerminologyService(new Terminology.WellKnownCodeSystems(new LocalTerminologyService(Resolver), Resolver));
        // The FhirPath compiler the invariants use anyway (FhirPathValidator falls back to it), named here: without one,
        // Firely 3.6.0's slice discriminators (PathSelectorValidator) build a new symbol table of every FhirPath function
        // and a compiler for each validation run — a tenth of an ITI-65's validation time (docs/performance.md, "ITI-65").
#pragma warning disable ExperimentalApi // FhirPathValidator.DefaultCompiler: the compiler the invariants use when none is named
        var settings = new ValidationSettings { FhirPathCompiler = FhirPathValidator.DefaultCompiler };
#pragma warning restore ExperimentalApi
        _validator = new Validator(Resolver, terminology, referenceResolver: null, settings: settings, schemaResolver: _schemas);

        var rootPackage = plan.Packages.FirstOrDefault() is { } p ? $"{p.PackageId}#{p.Version}" : null;
        _rootProfiles = new HashSet<string>(StringComparer.Ordinal);
        AllProfiles = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in own?.Entries ?? [])
        {
            if (e.ResourceType != "StructureDefinition" || e.Url is null) continue;
            AllProfiles.Add(e.Url);
            if (e.Version is not null) AllProfiles.Add(e.Url + "|" + e.Version);
            if (e.Package == rootPackage)
            {
                _rootProfiles.Add(e.Url);
                if (e.Version is not null) _rootProfiles.Add(e.Url + "|" + e.Version);
            }
        }
    }

    public DocumentFamily Family { get; }
    public FamilyPlan Plan { get; }
    public PackSource? Own { get; }
    public PackSource Core { get; }
    public IAsyncResourceResolver Resolver { get; }

    /// <summary>Canonicals (with and without <c>|version</c>) of the profiles in this family's packages.</summary>
    public HashSet<string> AllProfiles { get; }

    /// <summary>Whether the root package (not a dependency) defines this canonical.</summary>
    public bool DefinesOwn(string canonical) => _rootProfiles.Contains(canonical);

    /// <summary>Whether any of the family's packages defines this canonical.</summary>
    public bool Defines(string canonical) => AllProfiles.Contains(canonical);

    public OperationOutcome Validate(Resource instance, string? profile) => _validator.Validate(instance, profile);

    /// <summary>
    /// The profiles an instance declares (<c>meta.profile</c> of the resource, its contained resources and,
    /// for a Bundle, its entries; plus the requested one) as <c>url|version</c> with a version this family
    /// does not hold, though it holds the url: they are validated against the version held
    /// (<see cref="PackSource.Find"/>), and the caller says so with a warning naming both.
    /// </summary>
    public IEnumerable<(string Expression, string Declared, string Loaded)> OtherVersions(Resource instance, string? profile)
    {
        if (profile is not null && OtherVersion(profile) is { } requested) yield return ("", profile, requested);
        foreach (var (path, resource) in WithPaths(instance, instance.TypeName))
        {
            var declared = resource.Meta?.Profile.ToList() ?? [];
            for (var i = 0; i < declared.Count; i++)
                if (declared[i] is { } p && OtherVersion(p) is { } loaded)
                    yield return ($"{path}.meta.profile[{i}]", p, loaded);
        }
    }

    private string? OtherVersion(string canonical)
    {
        var bar = canonical.IndexOf('|');
        if (bar < 0) return null;
        var url = canonical[..bar];
        foreach (var source in new[] { Own, Core })
            if (source is not null && source.Contains(url))
                return source.ContainsExactly(canonical) ? null : source.VersionOf(url) ?? "(unversioned)";
        return null;
    }

    private static IEnumerable<(string Path, Resource Resource)> WithPaths(Resource resource, string path)
    {
        yield return (path, resource);
        if (resource is DomainResource domain)
            for (var i = 0; i < domain.Contained.Count; i++)
                foreach (var inner in WithPaths(domain.Contained[i], $"{path}.contained[{i}]")) yield return inner;
        if (resource is Bundle bundle)
            for (var i = 0; i < bundle.Entry.Count; i++)
                if (bundle.Entry[i].Resource is { } r)
                    foreach (var inner in WithPaths(r, $"{path}.entry[{i}].resource")) yield return inner;
    }

    /// <summary>
    /// Compiles the schema of every profile of the family (and the core types they build on), so
    /// the first document does not pay for it. Compiled schemas live in memory only: the
    /// validator has no way to save them.
    /// </summary>
    public int WarmUp(ILogger log, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var canonicals = (Own?.Pack.Entries ?? [])
            .Where(e => e.ResourceType == "StructureDefinition" && e.Url is not null && _rootProfiles.Contains(e.Url))
            .Select(e => e.Url!)
            .Distinct()
            .ToList();
        var failed = 0;
        foreach (var canonical in canonicals)
        {
            ct.ThrowIfCancellationRequested();
            try { _schemas.GetSchema(canonical); }
            catch (Exception ex)
            {
                failed++;
                log.LogWarning("Profile {Profile} of {Family} does not compile: {Reason}", canonical, Family.Id, ex.Message);
            }
        }
        log.LogInformation("Warmed {Count} profiles of {Family} in {Ms} ms ({Failed} do not compile)", canonicals.Count, Family.Id, sw.ElapsedMilliseconds, failed);
        return canonicals.Count;
    }
}
