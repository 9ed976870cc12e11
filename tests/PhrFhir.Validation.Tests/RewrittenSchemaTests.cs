using System.Text.Json.Nodes;
using Firely.Fhir.Validation;
using Hl7.Fhir.Model;
using Hl7.Fhir.Specification.Terminology;
using PhrFhir.Validation.Terminology;

#pragma warning disable ExperimentalApi // FhirPathValidator.DefaultCompiler, as FamilyValidator names it

namespace PhrFhir.Validation.Tests;

/// <summary>
/// The compiled schemas the families cache are rewritten (empty-safe slice groups, remembered bindings, compiled
/// discriminators: EmptyResliceGuard, SliceDiscriminators). The rewrite must not change an outcome: every official
/// ITI-65 example and broken variants of one give exactly the issues Firely's own, unrewritten schemas give, also when
/// the caches are warm from earlier, different submissions.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class RewrittenSchemaTests(ValidatorFixture fixture)
{
    const string Examples = "ihe/MHD-4.2.3/sushi-compiled";
    const string Minimal = "Bundle-ex-minimalProvideDocumentBundleSimple.json";

    static JsonObject Resource(JsonNode bundle, string type) =>
        bundle["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == type);

    /// <summary>The Minimal example broken in one place each (bindings, slices by profile and by value, cardinality).</summary>
    static readonly Dictionary<string, Action<JsonNode>> Broken = new()
    {
        ["attachment.contentType outside its required binding"] = b => Resource(b, "DocumentReference")["content"]![0]!["attachment"]!["contentType"] = "pdf",
        ["DocumentReference.status outside its required binding"] = b => Resource(b, "DocumentReference")["status"] = "gone",
        ["masterIdentifier dropped"] = b => Resource(b, "DocumentReference").Remove("masterIdentifier"),
        ["SubmissionSet code another list type"] = b => Resource(b, "List")["code"]!["coding"]![0]!["code"] = "folder",
        ["SubmissionSet without its uniqueId"] = b => Resource(b, "List").Remove("identifier"),
        ["DocumentReference declared as a SubmissionSet"] = b => Resource(b, "DocumentReference")["meta"]!["profile"]![0] =
            "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.SubmissionSet",
    };

    static IEnumerable<(string Name, Resource Instance)> Submissions()
    {
        var folder = ValidatorFixture.Ref(Examples);
        foreach (var file in Directory.EnumerateFiles(folder, "Bundle-ex-*.json").Order(StringComparer.Ordinal))
            if (File.ReadAllText(file).Contains("ProvideBundle\"", StringComparison.Ordinal))
                yield return (Path.GetFileName(file), ValidatorFixture.Parse(File.ReadAllText(file)));
        foreach (var (name, mutate) in Broken)
        {
            var bundle = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, Minimal)))!;
            mutate(bundle);
            yield return (name, ValidatorFixture.Parse(bundle));
        }
    }

    static string Issues(OperationOutcome outcome) => string.Join("\n", outcome.Issue
        .Select(i => $"{i.Severity} {i.Code} {string.Join(",", i.Expression)} {i.Diagnostics}").Order(StringComparer.Ordinal));

    [SkippableFact]
    public async System.Threading.Tasks.Task Every_ITI65_example_and_broken_variant_gets_the_issues_of_Firelys_own_schemas()
    {
        Skip.If(fixture.Validator is null || !Directory.Exists(ValidatorFixture.Ref(Examples)), ValidatorFixture.NoReference);
        var family = await fixture.Validator!.FamilyValidatorAsync("ihe-mhd");
        Assert.NotNull(family);
        // Firely's validator over the same conformance resources and terminology, with its own (unrewritten) compiled schemas.
        var firely = new Validator(family.Resolver,
            new CachedTerminologyService(new WellKnownCodeSystems(new LocalTerminologyService(family.Resolver), family.Resolver)),
            settings: new ValidationSettings { FhirPathCompiler = FhirPathValidator.DefaultCompiler });

        var submissions = Submissions().ToList();
        Assert.True(submissions.Count >= 10, $"only {submissions.Count} submissions found");
        var expected = submissions.ToDictionary(s => s.Name, s => Issues(firely.Validate(s.Instance)));
        Assert.Contains(expected.Values, e => e.Contains("Error", StringComparison.Ordinal)); // the broken ones are refused
        // Twice, the second time in the opposite order: the remembered verdicts and compiled paths of earlier,
        // different submissions must not change a later one's outcome.
        foreach (var (name, instance) in submissions.Concat(Enumerable.Reverse(submissions)))
            Assert.True(expected[name] == Issues(family.Validate(instance, null)),
                $"{name}: the rewritten schemas gave\n{Issues(family.Validate(instance, null))}\nFirely's own gave\n{expected[name]}");
    }
}
