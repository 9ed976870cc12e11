using System.Diagnostics;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.Logging;
using PhrFhir.Validation.Cache;
using PhrFhir.Validation.Packages;

namespace PhrFhir.Validation;

/// <summary>
/// Validates FHIR instances against the profile family their <c>meta.profile</c> (or the
/// requested profile) points to: HS037 eCheckup 1.1.3 / 1.5.0, HS038/HS039 JP-CLINS, IHE MHD, or
/// R4 core. This is the one entry point the server uses, for <c>$validate</c> and for enforcement
/// on write. Thread-safe; create one per process with <see cref="CreateAsync"/>.
/// </summary>
/// <remarks>
/// Start-up: <see cref="CreateAsync"/> reads the package identities and content hashes (well
/// under a second) and returns. Each family's conformance cache is then opened (or rebuilt, when
/// a package changed) and its profiles compiled in the background; <see cref="Families"/> shows
/// where each one is. A request for a family that is still loading waits for it.
/// </remarks>
public sealed class DocumentValidator : IDisposable
{
    private readonly ValidationOptions _options;
    private readonly ILogger _log;
    private readonly List<FamilyRuntime> _families;
    private readonly SemaphoreSlim _gate = new(Environment.ProcessorCount, Environment.ProcessorCount);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly WarmUpLine _warmUps = new();
    private readonly WarmUpLine _validations = new(Environment.ProcessorCount, "PhrFhir validation", ThreadPriority.Normal);

    private DocumentValidator(ValidationOptions options, ILogger log, List<FamilyRuntime> families, IReadOnlyList<PackageRestoreResult> packages)
    {
        _options = options;
        _log = log;
        _families = families;
        Packages = packages;
    }

    /// <summary>
    /// Restores the packages the families need into the FHIR package cache (those not already there;
    /// see <see cref="PackageRestore"/>), starts loading every family in the background, and returns
    /// once each family knows which profiles it has. Never throws for missing packages: those
    /// families are reported <see cref="FamilyState.Unavailable"/>, naming the package and the
    /// sources tried.
    /// </summary>
    public static async Task<DocumentValidator> CreateAsync(ValidationOptions options, ILogger logger, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        var cacheFolder = options.ResolveCacheFolder();
        var specificationZip = options.ResolveSpecificationZip();
        var manifest = PackageManifest.Load(options.Packages.ResolveManifest());

        var wanted = options.Families.Count == 0 ? DocumentFamilies.All : DocumentFamilies.All.Where(f => options.Families.Contains(f.Id)).ToList();
        var restored = (await PackageRestore.RestoreAsync(manifest, options.Packages, wanted.Select(f => f.Id), logger, cancellationToken).ConfigureAwait(false))
            .ToDictionary(r => r.Package);
        var coreKey = File.Exists(specificationZip) ? CoreDefinitions.KeyFor(specificationZip) : null;

        var families = wanted.Select(f => new FamilyRuntime(f, options.Policies.TryGetValue(f.Id, out var p) ? p : options.DefaultPolicy)).ToList();
        await System.Threading.Tasks.Task.WhenAll(families.Select(f => System.Threading.Tasks.Task.Run(
            () => f.PlanFrom(manifest.Families.GetValueOrDefault(f.Family.Id), restored, coreKey), cancellationToken))).ConfigureAwait(false);
        foreach (var family in families)
        {
            if (family.State is FamilyState.Unavailable or FamilyState.Failed)
                logger.LogWarning("Family {Family} ({Title}) is unavailable: {Reason}", family.Family.Id, family.Family.Title, family.Reason);
            else if (!family.IsCore)
                logger.LogInformation("Family {Family} ({Title}), policy {Policy}: {Packages}", family.Family.Id, family.Family.Title, family.Policy,
                    string.Join(", ", family.Packages.Select(p => p.Describe())));
        }

        var validator = new DocumentValidator(options, logger, families, restored.Values.ToList());
        var core = coreKey is null
            ? System.Threading.Tasks.Task.FromException<ConformancePack>(new FileNotFoundException($"FHIR R4 core definitions not found at {specificationZip} (package Hl7.Fhir.Specification.Data.R4)"))
            : System.Threading.Tasks.Task.Run(() => CoreDefinitions.OpenOrBuild(specificationZip, cacheFolder));
        foreach (var family in families)
            family.Start(core, cacheFolder, options.WarmUp ? validator._warmUps : null, logger, validator._shutdown.Token);
        return validator;
    }

    /// <summary>A family's loaded validator, or null (tests: its outcomes compared with Firely's own compiled schemas).</summary>
    internal Task<FamilyValidator?> FamilyValidatorAsync(string family) => _families.Single(f => f.Family.Id == family).Loaded;

    /// <summary>Holds back every warm-up queued after this call until <paramref name="until"/> completes (tests: a warm-up that is slow under load).</summary>
    internal void HoldWarmUps(System.Threading.Tasks.Task until) => _warmUps.Add(() => until.Wait());

    /// <summary>The packages of the loaded families: where each is in the package cache, or why it is missing.</summary>
    public IReadOnlyList<PackageRestoreResult> Packages { get; }

    /// <summary>The <c>package/</c> folder of a package the families use, or null when it is not in the cache.</summary>
    public string? PackageFolder(PackageReference package) => Packages.FirstOrDefault(p => p.Package == package)?.Folder;

    /// <summary>
    /// The profiles enforced on write, by resource type: the resource profiles of every family whose
    /// packages are loaded and whose policy is not <see cref="ProfilePolicy.Off"/> (for
    /// <c>CapabilityStatement.rest.resource.supportedProfile</c>).
    /// </summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>> EnforcedProfiles =>
        _families.Where(f => !f.IsCore && f.Policy != ProfilePolicy.Off && f.State is not (FamilyState.Unavailable or FamilyState.Failed))
            .SelectMany(f => f.ResourceProfiles())
            .GroupBy(p => p.Type, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<string>)g.Select(p => p.Url).Distinct().Order(StringComparer.Ordinal).ToList(), StringComparer.Ordinal);

    /// <summary>Each family's state, packages and policy, in order of preference.</summary>
    public IReadOnlyList<FamilyStatus> Families => _families.Select(f => f.Status()).ToList();

    /// <summary>Completes when every family has finished loading and warming (or failed). For tests, benchmarks and readiness probes.</summary>
    public System.Threading.Tasks.Task WhenReadyAsync(CancellationToken cancellationToken = default) =>
        System.Threading.Tasks.Task.WhenAll(_families.Select(f => f.Warmed)).WaitAsync(cancellationToken);

    /// <summary>
    /// The conformance resources (StructureDefinitions, ValueSets, CodeSystems) of the loaded
    /// families, root packages and their dependencies, first family first, each canonical and
    /// version once. Read-only: serve them for <c>GET StructureDefinition?url=…</c> so clients see
    /// which profiles are enforced. Families still loading are skipped.
    /// </summary>
    public IEnumerable<Resource> ConformanceResources
    {
        get
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var family in _families)
            {
                if (!family.Loaded.IsCompletedSuccessfully || family.Loaded.Result?.Own is not { } own) continue;
                foreach (var entry in own.Pack.Entries)
                    if (seen.Add($"{entry.ResourceType}|{entry.Url}|{entry.Version}") && own.Get(entry) is { } r)
                        yield return r;
            }
        }
    }

    /// <summary>The family an instance belongs to, chosen by the requested profile and the instance's <c>meta.profile</c> (for a Bundle, its entries' too).</summary>
    public DocumentFamily FamilyFor(Resource instance, string? profile = null) => Select(instance, profile).Family;

    /// <summary>What a write of this instance does on validation errors: the policy of its family (default <see cref="ProfilePolicy.Reject"/>).</summary>
    public ProfilePolicy PolicyFor(Resource instance) => Select(instance, null).Policy;

    /// <summary>
    /// The family an instance belongs to, with its state: <see cref="FamilyState.Unavailable"/> when the
    /// instance declares a profile of a family whose packages are missing (the reason names them).
    /// </summary>
    public FamilyStatus StatusFor(Resource instance) => Select(instance, null).Status();

    /// <summary>
    /// Validates an instance and explains every issue (see <see cref="OutcomeExplainer"/>). Never
    /// throws for invalid content, unusable profiles or validator failures: those are issues
    /// (code <c>exception</c> naming the profile). Waits while the instance's family is still loading.
    /// </summary>
    /// <param name="instance">The resource, e.g. a document Bundle.</param>
    /// <param name="profile">A profile to validate against besides <c>meta.profile</c> (<c>$validate?profile=</c>); <c>url|version</c> allowed.</param>
    /// <param name="cancellationToken">Cancels waiting for the family or for a free validation slot.</param>
    public Task<OperationOutcome> ValidateAsync(Resource instance, string? profile = null, CancellationToken cancellationToken = default) =>
        ValidateAsync(instance, profile, family: null, cancellationToken);

    /// <summary>
    /// As <see cref="ValidateAsync(Resource, string?, CancellationToken)"/>, in a family chosen by the caller
    /// (by <see cref="DocumentFamily.Id"/>) instead of by the profiles: for a single resource whose profile
    /// several families define (JP_Patient_eCS is in JP-CLINS and eCheckup 1.1.3) and whose origin is known.
    /// </summary>
    public async Task<OperationOutcome> ValidateAsync(Resource instance, string? profile, string? family, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(instance);
        return await ValidateInAsync(family is null ? Select(instance, profile) : _families.FirstOrDefault(f => f.Family.Id == family)
            ?? throw new ArgumentException($"Unknown family '{family}'. Known: {string.Join(", ", _families.Select(f => f.Family.Id))}", nameof(family)),
            instance, profile, cancellationToken).ConfigureAwait(false);
    }

    private async Task<OperationOutcome> ValidateInAsync(FamilyRuntime family, Resource instance, string? profile, CancellationToken cancellationToken)
    {
        if (Superseded(instance, profile) is { } superseded) return new OperationOutcome { Issue = [superseded] };
        var notes = new List<OperationOutcome.IssueComponent>();
        var validator = await family.WaitUntilUsableAsync(cancellationToken).ConfigureAwait(false);
        if (validator is null)
        {
            notes.Add(Note(OperationOutcome.IssueSeverity.Warning, OperationOutcome.IssueType.NotSupported,
                $"Profiles of family '{family.Family.Id}' ({family.Family.Title}) are not available here ({family.Reason}); validated against FHIR R4 core only.",
                $"文書種別 {family.Family.Title} のプロファイルがこのサーバーで利用できないため（{family.Reason}）、FHIR R4 の基本仕様だけで検証しました。"));
            var core = _families.FirstOrDefault(f => f.Family.Id == DocumentFamilies.Core.Id);
            validator = core is null ? null : await core.WaitUntilUsableAsync(cancellationToken).ConfigureAwait(false);
            if (validator is null)
            {
                notes.Add(Note(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Exception,
                    "FHIR R4 core definitions are not available; nothing was validated.", "FHIR R4 の基本定義がないため、検証できませんでした。"));
                return new OperationOutcome { Issue = notes };
            }
        }
        foreach (var unknown in UnknownProfiles(instance, profile))
            notes.Add(Note(OperationOutcome.IssueSeverity.Warning, OperationOutcome.IssueType.NotSupported,
                $"Profile {unknown} is not defined by any family loaded here ({string.Join(", ", _families.Where(f => f.State is FamilyState.Unavailable or FamilyState.Failed).Select(f => $"{f.Family.Id}: {f.Reason}").DefaultIfEmpty("all families loaded"))}).",
                $"プロファイル {unknown} はこのサーバーで読み込んだどの文書種別にも定義されていません。"));

        foreach (var (expression, declared, loaded) in validator.OtherVersions(instance, profile))
        {
            // HL7 validator behaviour: a canonical whose version is not loaded is validated against the
            // loaded version, and the sender hears it (eCheckup 1.5.0 samples carry `|x.x.x-instance`).
            var bar = declared.IndexOf('|');
            var (url, version) = (declared[..bar], declared[(bar + 1)..]);
            var note = Note(OperationOutcome.IssueSeverity.Warning, OperationOutcome.IssueType.NotFound,
                $"Profile {declared} names version {version}, which is not loaded here; validated against the loaded version {loaded} of {url} instead.",
                $"プロファイル {url} のバージョン {version} はこのサーバーにないため、読み込み済みのバージョン {loaded} で検証しました。", declared);
            if (expression.Length > 0) note.Expression = [expression];
            notes.Add(note);
        }

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        OperationOutcome outcome;
        try
        {
            // A validation thread (one per core, as the gate admits): the validator blocks on Task.Run for the
            // terminology and resolver calls it makes (Firely TaskHelper.Await), which would starve the request thread pool.
            var done = new TaskCompletionSource<OperationOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
            if (!_validations.Add(() =>
                {
                    try { done.SetResult(Run(validator, instance, profile)); }
                    catch (Exception e) { done.SetException(e); } // Run answers validator failures as issues; anything else reaches the caller
                }))
                throw new ObjectDisposedException(nameof(DocumentValidator));
            outcome = await done.Task.ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
        outcome.Issue.InsertRange(0, notes);
        return outcome;
    }

    /// <summary>
    /// Validates what the strict parser could read of an instance it rejected, and reports the
    /// parse errors with the validation issues, so <c>$validate</c> shows everything at once.
    /// </summary>
    /// <param name="parseFailure">The exception thrown by <c>FhirJsonDeserializer</c>/<c>FhirXmlDeserializer</c>.</param>
    /// <param name="profile">As in <see cref="ValidateAsync(Resource, string?, CancellationToken)"/>.</param>
    /// <param name="cancellationToken">As in <see cref="ValidateAsync(Resource, string?, CancellationToken)"/>.</param>
    public async Task<OperationOutcome> ValidatePartialAsync(DeserializationFailedException parseFailure, string? profile = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(parseFailure);
        var parseIssues = parseFailure.ToOperationOutcome().Issue;
        foreach (var issue in parseIssues)
        {
            issue.Diagnostics ??= issue.Details?.Text;
            issue.Details ??= new CodeableConcept();
            issue.Details.Text = $"JSON/XML として読み取れない箇所があります（構文・型・必須要素）。\n{issue.Details.Text ?? issue.Diagnostics}";
        }
        if (parseFailure.PartialResult is not Resource partial)
            return new OperationOutcome { Issue = parseIssues };
        var outcome = await ValidateAsync(partial, profile, cancellationToken).ConfigureAwait(false);
        outcome.Issue.InsertRange(0, parseIssues);
        return outcome;
    }

    private OperationOutcome Run(FamilyValidator validator, Resource instance, string? profile)
    {
        var sw = Stopwatch.StartNew();
        try
        {
            var outcome = OutcomeExplainer.Explain(validator.Validate(instance, profile));
            outcome.Issue.AddRange(DocumentBundleReferences.Check(instance)); // R4 documents.html: not a rule the validator checks
            _log.LogDebug("Validated {Type} against {Family} in {Ms} ms: {Errors} errors", instance.TypeName, validator.Family.Id, sw.ElapsedMilliseconds,
                outcome.Issue.Count(i => i.Severity <= OperationOutcome.IssueSeverity.Error));
            return outcome;
        }
        catch (Exception ex)
        {
            // The validator can throw on shapes it does not expect; the caller gets an answer
            // naming the profile and the failure, and applies the family's policy to it.
            var target = profile ?? instance.Meta?.Profile.FirstOrDefault() ?? instance.TypeName;
            _log.LogWarning(ex, "Validator failed on {Type} against {Profile} ({Family})", instance.TypeName, target, validator.Family.Id);
            return new OperationOutcome
            {
                Issue =
                [
                    Note(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.Exception,
                        $"The validator failed while validating against {target}: {ex.GetType().Name}: {ex.Message}",
                        $"プロファイル {target} での検証中にバリデータが異常終了しました（{ex.GetType().Name}）。文書の誤りとは限りません。", target),
                ],
            };
        }
    }

    private static OperationOutcome.IssueComponent Note(OperationOutcome.IssueSeverity severity, OperationOutcome.IssueType code, string english, string japanese, string? profile = null)
    {
        var issue = new OperationOutcome.IssueComponent
        {
            Severity = severity,
            Code = code,
            Diagnostics = english,
            Details = new CodeableConcept { Text = $"{japanese}\n{english}" },
        };
        if (profile is not null) issue.AddExtension(OutcomeExplainer.AuthorityExtension, new FhirUri(profile));
        return issue;
    }

    /// <summary>
    /// One issue instead of a validation when the instance declares a profile of an IG a loaded family replaces
    /// (manifest <c>supersedes</c>) and no family defines it: a legacy eReferral 1.1.x Bundle validated against
    /// CLINS gets dozens of errors that do not say what to change; this says it in one line.
    /// </summary>
    private OperationOutcome.IssueComponent? Superseded(Resource instance, string? profile)
    {
        foreach (var unknown in UnknownProfiles(instance, profile))
            foreach (var family in _families)
            {
                if (family.Replacing(unknown) is not { } replaced) continue;
                var root = family.Plan?.Packages.FirstOrDefault() is { } p ? $"{p.PackageId}#{p.Version}" : family.Family.Id;
                var instead = replaced.Replacement is null ? "" : $" Declare {replaced.Replacement} instead and follow that IG.";
                var insteadJa = replaced.Replacement is null ? "" : $"meta.profile を {replaced.Replacement} に変え、その IG に従ってください。";
                var issue = Note(OperationOutcome.IssueSeverity.Error, OperationOutcome.IssueType.NotSupported,
                    $"{unknown} is a profile of {replaced.Was}, which is superseded by {family.Family.Title}; this server validates these documents against {root} only, so this document was not validated.{instead}",
                    $"{unknown} は旧版 {replaced.Was} のプロファイルです。この IG は {family.Family.Title} に置き換えられ、このサーバーは {root} でのみ検証するため、この文書は検証していません。{insteadJa}",
                    unknown);
                if (instance.Meta?.Profile.ToList().IndexOf(unknown) is >= 0 and var at) issue.Expression = [$"{instance.TypeName}.meta.profile[{at}]"];
                return issue;
            }
        return null;
    }

    /// <summary>Profiles an instance (and, for a Bundle, its entries) claims, plus the requested one.</summary>
    private static IEnumerable<string> ClaimedProfiles(Resource instance, string? profile)
    {
        if (profile is not null) yield return profile;
        foreach (var p in instance.Meta?.Profile ?? []) if (p is not null) yield return p;
        if (instance is Bundle bundle)
            foreach (var entry in bundle.Entry)
                foreach (var p in entry.Resource?.Meta?.Profile ?? [])
                    if (p is not null) yield return p;
    }

    private IEnumerable<string> UnknownProfiles(Resource instance, string? profile)
    {
        var top = new[] { profile }.Concat(instance.Meta?.Profile ?? []).OfType<string>();
        return top.Where(p => !_families.Any(f => f.Knows(p))).Distinct();
    }

    /// <summary>
    /// An unavailable family that claims a declared profile nobody knows (above), else
    /// the family whose root package defines most of the claimed profiles (an exact
    /// <c>url|version</c> match counting double); ties go to the earlier family in
    /// <see cref="DocumentFamilies.All"/>. With no known profile: R4 core.
    /// </summary>
    private FamilyRuntime Select(Resource instance, string? profile)
    {
        // A profile the instance itself declares that no loaded family defines, in the canonical space
        // of a family whose packages are missing: that family, so the caller learns it cannot be checked
        // (the strictest policy first when several claim it) instead of a silent R4-core-only pass.
        var uncheckable = _families.Where(f => f.State is FamilyState.Unavailable or FamilyState.Failed)
            .Where(f => UnknownProfiles(instance, profile).Any(f.Claims)).MinBy(f => f.Policy);
        if (uncheckable is not null) return uncheckable;
        var claimed = ClaimedProfiles(instance, profile).Distinct().ToList();
        FamilyRuntime? best = null;
        var bestScore = 0;
        foreach (var family in _families)
        {
            var score = claimed.Sum(family.Score);
            if (score > bestScore) { best = family; bestScore = score; }
        }
        return best
            ?? _families.FirstOrDefault(f => f.Family.Id == DocumentFamilies.Core.Id)
            ?? _families[^1];
    }

    /// <summary>Stops background loading and warm-up.</summary>
    public void Dispose()
    {
        _shutdown.Cancel();
        _warmUps.Dispose();
        _validations.Dispose();
        _shutdown.Dispose();
        _gate.Dispose();
    }
}
