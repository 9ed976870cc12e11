using System.Text;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Hl7.Fhir.Specification.Snapshot;
using Hl7.Fhir.Specification.Source;
using Microsoft.Extensions.Logging;
using PhrFhir.Validation.Packages;

namespace PhrFhir.Validation.Cache;

/// <summary>The packages a family is made of, what is missing, and the cache key they give.</summary>
internal sealed record FamilyPlan(DocumentFamily Family, IReadOnlyList<ConformancePackage> Packages, IReadOnlyList<PackageReference> Missing, string Key);

/// <summary>
/// Assembles a family's conformance set from its packages in the package cache (root first, as
/// <c>profiles/packages.json</c> lists them), generates the snapshots the packages lack, and caches the result as a pack. The key
/// covers every package's id, version and content hash, the core definitions and the SDK
/// version, so changing any of them rebuilds the pack on the next start.
/// </summary>
internal static class FamilyConformance
{
    // 3: slicing repairs (SlicingRepairs).
    private const string Format = "family-pack-3";
    private const string CorePackageId = "hl7.fhir.r4.core";

    // Resource types the validator looks up (profiles, extensions, bindings).
    private static readonly HashSet<string> Kept = ["StructureDefinition", "ValueSet", "CodeSystem"];

    /// <summary>Reads the family's packages from the package cache (root first) and notes the dependencies they declare that are not among them.</summary>
    public static FamilyPlan Plan(DocumentFamily family, IReadOnlyList<(PackageReference Reference, string Folder)> packageFolders, string coreKey)
    {
        var packages = packageFolders.Select(p => ConformancePackage.Read(p.Reference, p.Folder)).ToList();
        var have = packageFolders.Select(p => p.Reference).ToHashSet();
        // Declared but not listed for the family (jpfhir-terminology, hl7.terminology …): reported, and part of the key.
        var missing = packages.SelectMany(p => p.Dependencies).Where(d => d.Name != CorePackageId && !have.Contains(d)).Distinct().ToList();
        var parts = new List<string> { Format, family.Id, coreKey, typeof(SnapshotGenerator).Assembly.GetName().Version?.ToString() ?? "" };
        parts.AddRange(packages.Select(p => $"{p.PackageId}#{p.Version}:{p.ContentHash}"));
        parts.AddRange(missing.Select(m => "missing:" + m));
        return new FamilyPlan(family, packages, missing, ConformancePack.KeyOf(parts));
    }

    public static string PackPath(string cacheFolder, DocumentFamily family) => Path.Combine(cacheFolder, family.Id + ".pack");

    /// <summary>Opens the cached pack for the plan, or builds it (parse, snapshots, write) when stale.</summary>
    public static async Task<ConformancePack> OpenOrBuildAsync(FamilyPlan plan, ConformancePack core, string cacheFolder, ILogger log, CancellationToken ct)
    {
        var path = PackPath(cacheFolder, plan.Family);
        if (ConformancePack.TryOpen(path, plan.Key) is { } cached) return cached;

        log.LogInformation("Building the conformance cache for {Family} from {Packages}", plan.Family.Id,
            string.Join(", ", plan.Packages.Select(p => $"{p.PackageId}#{p.Version}")));
        var resources = new List<(Resource Resource, string Package)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var package in plan.Packages) // root first: its definitions win over a dependency's
            foreach (var file in package.Files)
            {
                if (!Kept.Contains(file.ResourceType) || file.Url is null) continue;
                if (!seen.Add(file.ResourceType + " " + file.Url + "|" + file.Version)) continue;
                if (PackSource.Parse(file.Json, xml: false) is { } r) resources.Add((r, $"{package.PackageId}#{package.Version}"));
            }

        ct.ThrowIfCancellationRequested();
        var own = new InMemoryResourceResolver(resources.Select(r => r.Resource));
        var resolver = new MultiResolver(own, new PackSource(core));
        var generator = new SnapshotGenerator(resolver, new SnapshotGeneratorSettings
        {
            GenerateSnapshotForExternalProfiles = true,
            ForceRegenerateSnapshots = false,
            GenerateElementIds = true,
        });
        foreach (var sd in resources.Select(r => r.Resource).OfType<StructureDefinition>())
        {
            ct.ThrowIfCancellationRequested();
            if (sd.Snapshot?.Element.Count > 0) continue;
            try
            {
                await generator.UpdateAsync(sd).ConfigureAwait(false);
                var problems = generator.Outcome?.Issue.Where(i => i.Severity <= OperationOutcome.IssueSeverity.Error).ToList() ?? [];
                if (problems.Count > 0)
                    log.LogWarning("Snapshot of {Profile}: {Issues}", sd.Url, string.Join("; ", problems.Select(i => i.Details?.Text ?? i.Diagnostics)));
            }
            catch (Exception ex)
            {
                // Left without snapshot: the validator reports the profile as unusable, naming it.
                log.LogWarning(ex, "Snapshot generation failed for {Profile}", sd.Url);
            }
        }

        foreach (var sd in resources.Select(r => r.Resource).OfType<StructureDefinition>())
        {
            if (SlicingRepairs.UnnestFalseReslices(sd) is { Count: > 0 } renamed)
                log.LogInformation("{Profile}: {Count} slice names with '/' that are not re-slices renamed with '_' (e.g. {Example})", sd.Url, renamed.Count, renamed[0]);
            if (SlicingRepairs.Relax(sd) is { Count: > 0 } relaxed)
                log.LogInformation("{Profile}: discriminators without a value on {Elements} are not evaluated for those slices (as the HL7 validator reads them)",
                    sd.Url, string.Join(", ", relaxed));
        }

        var items = resources.Select(r => new PackItem(r.Resource.TypeName, r.Resource.Id ?? "",
            (r.Resource as IVersionableConformanceResource)?.Url, (r.Resource as IVersionableConformanceResource)?.Version,
            r.Package, false, Encoding.UTF8.GetBytes(r.Resource.ToJson())));
        ConformancePack.Write(path, plan.Key, items);
        return ConformancePack.TryOpen(path, plan.Key) ?? throw new IOException($"Could not reopen {path} after writing it.");
    }
}
