using System.Text.Json.Nodes;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.Logging.Abstractions;
using PhrFhir.Validation.Packages;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// One <see cref="DocumentValidator"/> for the whole test run, its packages restored (as the server
/// does) from <c>../shared/ref</c> as a folder source into a package cache of this run, with the
/// repository's conformance cache (<c>data/conformance-cache</c>, shared with the server and the bench).
/// </summary>
public sealed class ValidatorFixture : IAsyncLifetime
{
    public static readonly string? ReferenceFolder = FindSharedRef();
    public static readonly string RepositoryRoot = FindRepositoryRoot();
    public const string NoReference = "../shared/ref (official JP/IHE packages) is not present; profile validation tests need it.";

    // Lenient on purpose: a test must be able to build invalid instances (the validator judges them).
    private static readonly FhirJsonDeserializer Lenient = new(new DeserializerSettings().UsingMode(DeserializationMode.Recoverable));

    public DocumentValidator? Validator { get; private set; }

    public async System.Threading.Tasks.Task InitializeAsync()
    {
        if (ReferenceFolder is null) return;
        Validator = await DocumentValidator.CreateAsync(new ValidationOptions
        {
            Packages = FromReference(_packageCache.FullName),
            CacheFolder = Path.Combine(RepositoryRoot, "data", "conformance-cache"),
        }, NullLogger.Instance);
        await Validator.WhenReadyAsync();
    }

    private readonly DirectoryInfo _packageCache = Directory.CreateTempSubdirectory("phrfhir-test-packages-");

    /// <summary>Package options with ../shared/ref as the only source (no internet in CI) and the given package cache.</summary>
    public static PackageOptions FromReference(string cache) =>
        new() { Sources = ReferenceFolder is null ? [] : [ReferenceFolder], Downloads = false, Cache = cache };

    public System.Threading.Tasks.Task DisposeAsync()
    {
        Validator?.Dispose();
        _packageCache.Delete(recursive: true);
        return System.Threading.Tasks.Task.CompletedTask;
    }

    /// <summary>The nearest <c>shared/ref</c> above the test binaries (this project's official reference data).</summary>
    private static string? FindSharedRef()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "ref");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }

    public static Resource Parse(string json)
    {
        try { return Lenient.DeserializeResource(json); }
        catch (DeserializationFailedException e) when (e.PartialResult is Resource r) { return r; }
    }

    public static Resource Parse(JsonNode json) => Parse(json.ToJsonString());

    public static string Ref(string relative) => Path.Combine(ReferenceFolder ?? "", relative);

    private static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PhrFhir.sln"))) return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}

[CollectionDefinition(Name)]
public sealed class ValidatorCollection : ICollectionFixture<ValidatorFixture>
{
    public const string Name = "validator";
}

/// <summary>Helpers to read an OperationOutcome the way the tests compare it.</summary>
public static class Outcomes
{
    public static List<OperationOutcome.IssueComponent> Errors(this OperationOutcome oo) =>
        oo.Issue.Where(i => i.Severity <= OperationOutcome.IssueSeverity.Error).ToList();

    public static string? Kind(this OperationOutcome.IssueComponent issue) =>
        issue.GetExtension(OutcomeExplainer.RuleExtension)?.GetExtensionValue<Code>("kind")?.Value;

    /// <summary>"expression kind": what a pinned error is compared by (stable across message wording).</summary>
    public static string Signature(this OperationOutcome.IssueComponent issue) =>
        $"{string.Join(",", issue.Expression)} {issue.Kind()}";

    public static string Describe(this OperationOutcome oo) =>
        string.Join("\n", oo.Issue.Select(i => $"  {i.Severity} {i.Code} {i.Signature()} :: {i.Diagnostics}"));
}
