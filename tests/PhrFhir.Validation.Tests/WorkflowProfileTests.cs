using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Our own profiles for 健診事後措置 and 両立支援 (profiles/phrfhir.r4, bundled with the server) are a family of
/// their own, enforced like the national ones: our examples (examples/workflows/) validate with no errors, and
/// each rule a profile adds refuses an instance that breaks it.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class WorkflowProfileTests(ValidatorFixture fixture)
{
    static string PathOf(string file) => Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "workflows", file);

    static JsonObject Json(string file) => JsonNode.Parse(File.ReadAllText(PathOf(file)))!.AsObject();

    public static TheoryData<string> Examples()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "workflows"), "*.json").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileName(file));
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Examples))]
    public async System.Threading.Tasks.Task Our_workflow_example_validates_against_our_profile_with_no_errors(string file)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var instance = ValidatorFixture.Parse(File.ReadAllText(PathOf(file)));
        Assert.StartsWith("http://phrfhir.example/fhir/StructureDefinition/", instance.Meta!.Profile.Single());
        Assert.Equal(DocumentFamilies.Phr.Id, fixture.Validator!.FamilyFor(instance).Id);
        var outcome = await fixture.Validator.ValidateAsync(instance);
        Assert.True(outcome.Errors().Count == 0, $"{file}:\n{outcome.Describe()}");
    }

    /// <summary>One broken rule per row: the profile named must report an error at the element named.</summary>
    [SkippableTheory]
    [InlineData("Task-detailed-exam.json", "code", null, "Task")]
    [InlineData("Task-detailed-exam.json", "code", """{"coding":[{"system":"http://phrfhir.example/fhir/CodeSystem/phr-task","code":"paperwork"}]}""", "Task.code")]
    [InlineData("Task-detailed-exam.json", "groupIdentifier", null, "Task")]
    [InlineData("Task-detailed-exam.json", "for", null, "Task")]
    [InlineData("Task-work-measure.json", "performerType", null, "Task")]
    [InlineData("Communication-detailed-exam-notice.json", "about", null, "Communication")]
    [InlineData("Composition-work-measure.json", "category", null, "Composition")]
    [InlineData("Composition-support-plan.json", "type", """{"coding":[{"system":"http://phrfhir.example/fhir/CodeSystem/phr-document-type","code":"work-measure"}]}""", "Composition.type")]
    [InlineData("Composition-physician-opinion.json", "attester", null, "Composition")]
    [InlineData("DocumentReference-detailed-exam-result.json", "context", null, "DocumentReference")]
    public async System.Threading.Tasks.Task A_broken_rule_of_our_profile_is_an_error(string file, string element, string? replacement, string expression)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var json = Json(file);
        if (replacement is null) json.Remove(element);
        else json[element] = JsonNode.Parse(replacement);
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(json));
        Assert.True(outcome.Errors().Any(e => e.Expression.Any(x => x.StartsWith(expression, StringComparison.Ordinal))),
            $"{file} without a valid {element}: expected an error at {expression}\n{outcome.Describe()}");
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task A_work_measure_with_a_measure_outside_our_code_system_is_an_error()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var json = Json("Composition-work-measure.json");
        json["section"]![0]!["code"] = JsonNode.Parse("""{"coding":[{"system":"http://phrfhir.example/fhir/CodeSystem/phr-work-measure","code":"promotion"}]}""");
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(json));
        Assert.True(outcome.Errors().Any(e => e.Expression.Any(x => x.StartsWith("Composition.section[0].code", StringComparison.Ordinal))), outcome.Describe());
    }
}
