namespace PhrFhir.Validation.Tests;

/// <summary>Our own example documents (examples/documents/), used by the README and the Postman collection, validate with no errors.</summary>
[Collection(ValidatorCollection.Name)]
public sealed class OwnExampleTests(ValidatorFixture fixture)
{
    public static TheoryData<string> Documents()
    {
        var data = new TheoryData<string>();
        var dir = Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "documents");
        foreach (var file in Directory.Exists(dir) ? Directory.GetFiles(dir, "*.json").Order(StringComparer.Ordinal).ToArray() : [])
            data.Add(Path.GetFileName(file));
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Documents))]
    public async System.Threading.Tasks.Task Our_example_document_validates_with_no_errors(string file)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var instance = ValidatorFixture.Parse(File.ReadAllText(Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "documents", file)));
        var outcome = await fixture.Validator!.ValidateAsync(instance);
        Assert.True(outcome.Errors().Count == 0, $"{file} ({fixture.Validator.FamilyFor(instance).Id}):\n{outcome.Describe()}");
    }

    [SkippableFact]
    public void The_HS039_example_is_a_discharge_summary_of_the_CLINS_family()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var instance = ValidatorFixture.Parse(File.ReadAllText(Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "documents", "HS039-discharge-summary.json")));
        Assert.Equal("jp-clins", fixture.Validator!.FamilyFor(instance).Id);
        Assert.Contains("JP_Bundle_eDischargeSummary", instance.Meta.Profile.Single());
    }
}
