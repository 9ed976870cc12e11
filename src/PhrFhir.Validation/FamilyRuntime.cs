using Microsoft.Extensions.Logging;
using PhrFhir.Validation.Cache;
using PhrFhir.Validation.Packages;

namespace PhrFhir.Validation;

/// <summary>One family's start-up: plan (packages, key) → pack (cache) → validator → warm-up.</summary>
internal sealed class FamilyRuntime(DocumentFamily family, ProfilePolicy policy)
{
    private readonly TaskCompletionSource<FamilyValidator?> _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _warmed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private HashSet<string> _rootUrls = new(StringComparer.Ordinal);
    private HashSet<string> _rootVersioned = new(StringComparer.Ordinal);
    private HashSet<string> _allUrls = new(StringComparer.Ordinal);
    private volatile FamilyState _state = FamilyState.Loading;

    public DocumentFamily Family { get; } = family;
    public ProfilePolicy Policy { get; } = policy;
    public FamilyPlan? Plan { get; private set; }
    public string? Reason { get; private set; }
    public FamilyState State => _state;
    public Task<FamilyValidator?> Loaded => _loaded.Task;
    public Task Warmed => _warmed.Task;

    /// <summary>Canonical prefixes of the profiles this family's documents declare (from the manifest), known even when its packages are not.</summary>
    public IReadOnlyList<string> ProfilePrefixes { get; private set; } = [];

    /// <summary>Canonical prefixes of earlier IGs this family replaces → what they are (the manifest's <c>supersedes</c>).</summary>
    public IReadOnlyDictionary<string, string> Supersedes { get; private set; } = new Dictionary<string, string>();

    /// <summary>Where each of its packages is (or why it is not), root first.</summary>
    public IReadOnlyList<PackageRestoreResult> Packages { get; private set; } = [];

    public bool IsCore => Family.Id == DocumentFamilies.Core.Id;

    /// <summary>Reads the family's packages from the cache, or marks it unavailable naming the package that is missing and the sources tried.</summary>
    public void PlanFrom(ManifestFamily? entry, IReadOnlyDictionary<PackageReference, PackageRestoreResult> restored, string? coreKey)
    {
        ProfilePrefixes = entry?.Profiles ?? [];
        Supersedes = entry?.Supersedes ?? Supersedes;
        Packages = entry?.Packages.Select(p => restored[p]).ToList() ?? [];
        try
        {
            if (coreKey is null) { Unavailable("FHIR R4 core definitions (specification.zip) not found"); return; }
            if (!IsCore && entry is null) { Unavailable("profiles/packages.json lists no packages for it"); return; }
            if (Packages.Where(p => !p.Available).ToList() is { Count: > 0 } missing)
            {
                Unavailable(string.Join(" ", missing.Select(m => m.Describe() + ".")));
                return;
            }
            Plan = FamilyConformance.Plan(Family, Packages.Select(p => (p.Package, p.Folder!)).ToList(), coreKey);
            var root = Plan.Packages.FirstOrDefault();
            foreach (var package in Plan.Packages)
                foreach (var file in package.Files.Where(f => f.ResourceType == "StructureDefinition" && f.Url is not null))
                {
                    _allUrls.Add(file.Url!);
                    if (package != root) continue;
                    _rootUrls.Add(file.Url!);
                    if (file.Version is not null) _rootVersioned.Add(file.Url + "|" + file.Version);
                }
        }
        catch (Exception ex)
        {
            Fail($"reading its packages failed: {ex.Message}");
        }
    }

    /// <summary>
    /// The profile of this family's root package that replaces a superseded one (same name, e.g.
    /// <c>…/eReferral/StructureDefinition/JP_Bundle_eReferral</c> → <c>…/clins/StructureDefinition/JP_Bundle_eReferral</c>),
    /// and what the superseded IG is; null when the canonical is not in a superseded IG's space.
    /// </summary>
    public (string Was, string? Replacement)? Replacing(string canonical)
    {
        if (State is FamilyState.Unavailable or FamilyState.Failed) return null;
        var prefix = Supersedes.Keys.FirstOrDefault(p => canonical.StartsWith(p, StringComparison.Ordinal));
        if (prefix is null) return null;
        var bar = canonical.IndexOf('|');
        var name = (bar < 0 ? canonical : canonical[..bar]).Split('/')[^1];
        return (Supersedes[prefix], _rootUrls.Where(u => u.EndsWith("/" + name, StringComparison.Ordinal)).Order(StringComparer.Ordinal).FirstOrDefault());
    }

    /// <summary>Whether a profile lies in this family's canonical space (the manifest's <c>profiles</c> prefixes).</summary>
    public bool Claims(string canonical) => ProfilePrefixes.Any(p => canonical.StartsWith(p, StringComparison.Ordinal));

    /// <summary>The resource profiles (StructureDefinitions of kind resource, derivation constraint) of its packages, as (type, url).</summary>
    public IEnumerable<(string Type, string Url)> ResourceProfiles() =>
        Plan?.Packages.SelectMany(p => p.Files)
            .Where(f => f is { ResourceType: "StructureDefinition", Kind: "resource", Derivation: "constraint", Type: not null, Url: not null })
            .Select(f => (f.Type!, f.Url!)) ?? [];

    /// <summary>How strongly this family claims a canonical: its root package's exact <c>url|version</c> 4, its url 3 (2 when another version is asked for), a dependency's 1.</summary>
    public int Score(string canonical)
    {
        if (Plan is null || State is FamilyState.Unavailable or FamilyState.Failed) return 0;
        var bar = canonical.IndexOf('|');
        var url = bar < 0 ? canonical : canonical[..bar];
        if (_rootVersioned.Contains(canonical)) return 4;
        if (_rootUrls.Contains(url)) return bar < 0 ? 3 : 2;
        return _allUrls.Contains(url) ? 1 : 0;
    }

    /// <summary>Whether any of its packages defines the canonical (version ignored) and is usable.</summary>
    public bool Knows(string canonical)
    {
        if (!IsCore && State is FamilyState.Unavailable or FamilyState.Failed) return false;
        var bar = canonical.IndexOf('|');
        return IsCore
            ? canonical.StartsWith("http://hl7.org/fhir/StructureDefinition/", StringComparison.Ordinal)
            : _allUrls.Contains(bar < 0 ? canonical : canonical[..bar]);
    }

    /// <summary>
    /// Loads the family's pack in the background; once loaded, requests may use it, and its warm-up
    /// (compiling every root profile) is queued on <paramref name="warmUps"/>, one family after another.
    /// </summary>
    public void Start(Task<ConformancePack> core, string cacheFolder, WarmUpLine? warmUps, ILogger log, CancellationToken ct)
    {
        if (State is FamilyState.Unavailable or FamilyState.Failed) return;
        _ = Task.Run(async () =>
        {
            FamilyValidator validator;
            try
            {
                var corePack = await core.ConfigureAwait(false);
                var own = IsCore ? null : await FamilyConformance.OpenOrBuildAsync(Plan!, corePack, cacheFolder, log, ct).ConfigureAwait(false);
                validator = new FamilyValidator(Family, Plan!, own, corePack);
                _state = FamilyState.Warming;
                _loaded.TrySetResult(validator);
            }
            catch (Exception ex)
            {
                log.LogError(ex, "Family {Family} could not be loaded", Family.Id);
                Fail($"loading failed: {ex.Message}");
                return;
            }
            if (warmUps is null) Ready();
            else warmUps.Add(() =>
            {
                try { validator.WarmUp(log, ct); }
                catch (OperationCanceledException) { }
                catch (Exception ex) { log.LogWarning(ex, "Warm-up of {Family} stopped", Family.Id); }
                Ready();
            });
        }, CancellationToken.None);
    }

    private void Ready()
    {
        _state = FamilyState.Ready;
        _warmed.TrySetResult();
    }

    /// <summary>
    /// The validator once its pack is open; null when the family is unavailable or failed. It does not
    /// wait for the warm-up: a request compiles the schemas it needs itself (the compiled-schema cache
    /// is shared and thread-safe), so the first HS037 answer does not wait for CLINS, MHD or BALP to
    /// warm (docs/validation.md, "Start-up under load").
    /// </summary>
    public Task<FamilyValidator?> WaitUntilUsableAsync(CancellationToken ct) => Loaded.WaitAsync(ct);

    public FamilyStatus Status() => new(Family.Id, Family.Title, State, Reason,
        Plan?.Packages.Select(p => $"{p.PackageId}#{p.Version}").ToList() ?? [],
        Plan?.Missing.Select(m => m.ToString()).ToList() ?? [],
        Policy, _rootUrls.Count);

    private void Unavailable(string reason) => Stop(FamilyState.Unavailable, reason);

    private void Fail(string reason) => Stop(FamilyState.Failed, reason);

    private void Stop(FamilyState state, string reason)
    {
        Reason = reason;
        _state = state;
        _loaded.TrySetResult(null);
        _warmed.TrySetResult();
    }
}
