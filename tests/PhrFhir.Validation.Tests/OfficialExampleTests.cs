using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Every official example instance in <c>../shared/ref/jp-documents/</c> is validated in the family
/// of the package it comes from. Each remaining error is pinned here by FhirPath and rule kind, with
/// the reason recorded in docs/validation.md ("Official examples that do not validate"), so a new
/// error — or a pinned one disappearing — fails the test.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class OfficialExampleTests(ValidatorFixture fixture)
{
    /// <summary>Folder of the official examples → the family they belong to.</summary>
    private static readonly (string Folder, string Family)[] Sources =
    [
        ("jp-documents/echeckup/package", "jp-echeckup-1.1.3"),
        ("jp-documents/echeckup/sushi-compiled-1.5.0", "jp-echeckup-1.5.0"),
        ("jp-documents/clins/examples-json", "jp-clins"),
        ("jp-documents/clins/package", "jp-clins"),
    ];

    private static readonly HashSet<string> ConformanceTypes =
        ["StructureDefinition", "ValueSet", "CodeSystem", "NamingSystem", "ImplementationGuide", "CapabilityStatement", "SearchParameter", "OperationDefinition", "ConceptMap"];

    /// <summary>file → (signatures of the errors it still has, why). Everything not listed must have 0 errors.</summary>
    private static readonly Dictionary<string, (string[] Errors, string Reason)> Pinned = new()
    {
        // Intended errors (the file says so): the validator catches this one.
        ["MedicationRequest-ErrorExample-JP-MedReq-ExtEye-Total1.json@jp-clins"] = (["MedicationRequest Invariant"], "docs/validation.md#errorexamples"),
    };

    public static TheoryData<string, string> Examples()
    {
        var data = new TheoryData<string, string>();
        if (ValidatorFixture.ReferenceFolder is null) { data.Add("(no shared/ref)", ""); return data; }
        foreach (var (folder, family) in Sources)
        {
            var dir = ValidatorFixture.Ref(folder);
            if (!Directory.Exists(dir)) continue;
            foreach (var file in Directory.GetFiles(dir, "*.json").Order(StringComparer.Ordinal))
            {
                var text = File.ReadAllText(file);
                var type = System.Text.Json.JsonDocument.Parse(text).RootElement.TryGetProperty("resourceType", out var t) ? t.GetString() : null;
                if (type is null || ConformanceTypes.Contains(type)) continue;
                data.Add(Path.GetRelativePath(ValidatorFixture.ReferenceFolder, file), family);
            }
        }
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Examples))]
    public async System.Threading.Tasks.Task Official_example_has_exactly_its_pinned_errors(string file, string family)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var instance = ValidatorFixture.Parse(File.ReadAllText(ValidatorFixture.Ref(file)));
        var outcome = await fixture.Validator!.ValidateAsync(instance, null, family);

        var actual = outcome.Errors().Select(i => i.Signature()).Distinct().Order(StringComparer.Ordinal).ToArray();
        var expected = Pinned.TryGetValue(Path.GetFileName(file) + "@" + family, out var pin) ? pin.Errors.Order(StringComparer.Ordinal).ToArray() : [];
        Assert.True(expected.SequenceEqual(actual),
            $"{file} ({family}): errors differ from the pinned ones ({pin.Reason ?? "none pinned"}).\n" +
            $"expected:\n  {string.Join("\n  ", expected)}\nactual:\n  {string.Join("\n  ", actual)}\nPIN \"{Path.GetFileName(file)}@{family}\" [{string.Join(", ", actual.Select(a => "\"" + a + "\""))}]\nfull outcome:\n{outcome.Describe()}");
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task The_official_HS037_sample_validates_with_no_errors()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var bundle = ValidatorFixture.Parse(File.ReadAllText(ValidatorFixture.Ref("jp-documents/echeckup/package/Bundle-Bundle-eCheckupReport-Sample-01.json")));
        Assert.Equal("jp-echeckup-1.1.3", fixture.Validator!.FamilyFor(bundle).Id);
        var outcome = await fixture.Validator.ValidateAsync(bundle);
        Assert.True(outcome.Errors().Count == 0, outcome.Describe());
        // JLAC10 (urn:oid:1.2.392.200119.4.504) is in jpfhir-terminology, which is not available: said, not hidden.
        var unchecked_ = outcome.Issue.Where(i => i.Kind() == nameof(OutcomeExplainer.RuleKind.TerminologyUnavailable)).ToList();
        Assert.NotEmpty(unchecked_);
        Assert.All(unchecked_, i =>
        {
            Assert.Equal(OperationOutcome.IssueSeverity.Warning, i.Severity);
            Assert.Contains("検証していません", i.Details.Text);
            Assert.StartsWith("Bundle.entry[", i.Expression.Single());
        });
    }
}
