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

    public void PlanFrom(PackageCatalog catalog, string? referenceFolder, string? coreKey)
    {
        try
        {
            if (coreKey is null) throw new FamilyUnavailableException("FHIR R4 core definitions (specification.zip) not found");
            Plan = FamilyConformance.Plan(Family, catalog, referenceFolder, coreKey);
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
        catch (FamilyUnavailableException ex)
        {
            Unavailable(ex.Message);
        }
        catch (Exception ex)
        {
            Fail($"reading its packages failed: {ex.Message}");
        }
    }

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

    /// <summary>Whether any of its packages defines the canonical (version ignored).</summary>
    public bool Knows(string canonical)
    {
        var bar = canonical.IndexOf('|');
        return Family.RootPackage is null
            ? canonical.StartsWith("http://hl7.org/fhir/StructureDefinition/", StringComparison.Ordinal)
            : _allUrls.Contains(bar < 0 ? canonical : canonical[..bar]);
    }

    public void Start(Task<ConformancePack> core, string cacheFolder, bool warmUp, ILogger log, CancellationToken ct)
    {
        if (State is FamilyState.Unavailable or FamilyState.Failed) return;
        _ = Task.Run(async () =>
        {
            FamilyValidator? validator = null;
            try
            {
                var corePack = await core.ConfigureAwait(false);
                var own = Family.RootPackage is null ? null : await FamilyConformance.OpenOrBuildAsync(Plan!, corePack, cacheFolder, log, ct).ConfigureAwait(false);
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
            try
            {
                if (warmUp) validator.WarmUp(log, ct);
            }
            catch (OperationCanceledException) { }
            catch (Exception ex)
            {
                log.LogWarning(ex, "Warm-up of {Family} stopped", Family.Id);
            }
            _state = FamilyState.Ready;
            _warmed.TrySetResult();
        }, CancellationToken.None);
    }

    /// <summary>The validator once loaded and warmed; null when the family is unavailable or failed.</summary>
    public async Task<FamilyValidator?> WaitUntilUsableAsync(CancellationToken ct)
    {
        await Warmed.WaitAsync(ct).ConfigureAwait(false);
        return Loaded.IsCompletedSuccessfully ? Loaded.Result : null;
    }

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
