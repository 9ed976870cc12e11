using System.Text.Json.Nodes;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.Logging.Abstractions;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// One <see cref="DocumentValidator"/> for the whole test run, over the official packages in
/// <c>../shared/ref</c> (read in place, never copied) and the repository's conformance cache
/// (<c>data/conformance-cache</c>, shared with the server and the bench).
/// </summary>
public sealed class ValidatorFixture : IAsyncLifetime
{
    public static readonly string? ReferenceFolder = ValidationOptions.FindSharedRef(AppContext.BaseDirectory);
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
            ReferenceFolder = ReferenceFolder,
            CacheFolder = Path.Combine(RepositoryRoot, "data", "conformance-cache"),
        }, NullLogger.Instance);
        await Validator.WhenReadyAsync();
    }

    public System.Threading.Tasks.Task DisposeAsync()
    {
        Validator?.Dispose();
        return System.Threading.Tasks.Task.CompletedTask;
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
