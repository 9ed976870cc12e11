using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Tests;

/// <summary>Our own example documents (examples/documents/), used by the README and the Postman collection, validate with no errors.</summary>
[Collection(ValidatorCollection.Name)]
public sealed class OwnExampleTests(ValidatorFixture fixture)
{
    private static string PathOf(string file) => Path.Combine(ValidatorFixture.RepositoryRoot, "examples", "documents", file);

    private static JsonObject Json(string file) => JsonNode.Parse(File.ReadAllText(PathOf(file)))!.AsObject();

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
        var instance = ValidatorFixture.Parse(File.ReadAllText(PathOf(file)));
        var outcome = await fixture.Validator!.ValidateAsync(instance);
        Assert.True(outcome.Errors().Count == 0, $"{file} ({fixture.Validator.FamilyFor(instance).Id}):\n{outcome.Describe()}");
    }

    /// <summary>Each example is the document its name says, goes to the family of that document, and has no errors there.</summary>
    [SkippableTheory]
    [InlineData("HS037-checkup-report.json", "jp-echeckup-1.1.3", "http://jpfhir.jp/fhir/eCheckup/StructureDefinition/JP_Bundle_eCheckupGeneral", "53576-5")]
    [InlineData("HS038-referral.json", "jp-clins", "http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral", "57133-1")]
    [InlineData("HS039-discharge-summary.json", "jp-clins", "http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eDischargeSummary", "18842-5")]
    public async System.Threading.Tasks.Task Each_example_is_its_document_kind_and_validates_in_its_family_with_no_errors(string file, string family, string bundleProfile, string documentType)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var instance = (Bundle)ValidatorFixture.Parse(File.ReadAllText(PathOf(file)));
        Assert.Equal(bundleProfile, instance.Meta?.Profile.Single());
        Assert.Equal(documentType, Assert.IsType<Composition>(instance.Entry[0].Resource).Type.Coding.Single().Code);
        Assert.Equal(family, fixture.Validator!.FamilyFor(instance).Id);
        var outcome = await fixture.Validator.ValidateAsync(instance);
        Assert.True(outcome.Errors().Count == 0, $"{file} ({family}):\n{outcome.Describe()}");
    }

    /// <summary>
    /// HS037: the checkup is a 事業者健診 (category 41, programme 030), and the only warnings are the observation
    /// codes the validator cannot check (their ValueSet includes JLAC10, urn:oid:1.2.392.200119.4.504, which is
    /// not available offline) — reported as not checked, never silently valid.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task The_HS037_example_is_an_occupational_checkup_whose_only_warnings_are_unavailable_terminology()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var instance = (Bundle)ValidatorFixture.Parse(File.ReadAllText(PathOf("HS037-checkup-report.json")));
        var composition = Assert.IsType<Composition>(instance.Entry[0].Resource);
        Assert.Equal("41", composition.Category.Single().Coding.Single().Code);
        Assert.Equal("030", composition.Event.Single().Code.Single().Coding.Single().Code);
        var outcome = await fixture.Validator!.ValidateAsync(instance);
        var warnings = outcome.Issue.Where(i => i.Severity == OperationOutcome.IssueSeverity.Warning).ToList();
        Assert.NotEmpty(warnings);
        Assert.All(warnings, w => Assert.True(w.Kind() == nameof(OutcomeExplainer.RuleKind.TerminologyUnavailable) && w.Code == OperationOutcome.IssueType.NotSupported,
            $"unexpected warning: {w.Signature()} :: {w.Diagnostics}"));
    }

    /// <summary>
    /// A JP_Bundle_eReferral with no entry conforming to JP_Observation_Common_eCS leaves the re-sliced
    /// `entry:observation` slice empty, on which Firely 3.6.0 throws (InvalidOperationException "Sequence contains no
    /// elements", in SliceValidator). With <see cref="EmptyResliceGuard"/> the referral gets what it deserves:
    /// nothing without an Observation, the real errors when its Observation — directly or through what it
    /// references — is invalid. docs/validation.md ("HS038: the validator threw …") has the evidence.
    /// </summary>
    [SkippableTheory]
    [InlineData("no Observation entry", null)]
    [InlineData("the Observation lacks its code", "Bundle.entry[8].resource")]
    [InlineData("the Observation's Encounter names an invalid Organization", "Bundle.entry[3].resource.extension[2]")]
    public async System.Threading.Tasks.Task A_referral_with_no_conforming_Observation_gets_its_real_errors_instead_of_a_validator_exception(string change, string? errorAt)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var doc = Json("HS038-referral.json");
        var entries = doc["entry"]!.AsArray();
        JsonObject Resource(string type) => entries.Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == type);
        var observation = entries.First(e => (string?)e!["resource"]!["resourceType"] == "Observation")!.AsObject();
        switch (change)
        {
            case "no Observation entry":
                entries.Remove(observation);
                RemoveSectionEntry(Resource("Composition"), (string)observation["fullUrl"]!);
                break;
            case "the Observation lacks its code":
                observation["resource"]!.AsObject().Remove("code");
                break;
            case "the Observation's Encounter names an invalid Organization":
                // The Encounter's serviceProvider is the clinic; its 医療機関コード extension gets a wrong system.
                Resource("Organization")["extension"]![2]!["valueIdentifier"]!["system"] = "urn:example:wrong";
                break;
        }

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc));
        Assert.DoesNotContain(outcome.Issue, i => i.Code == OperationOutcome.IssueType.Exception);
        if (errorAt is null) Assert.True(outcome.Errors().Count == 0, outcome.Describe());
        else Assert.True(outcome.Errors().Any(i => i.Expression.Any(x => x?.StartsWith(errorAt, StringComparison.Ordinal) == true)), $"no error at {errorAt}:\n{outcome.Describe()}");
    }

    /// <summary>The same fault outside the Observation chain is reported normally: the exception needs an empty observation slice.</summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_referral_with_an_invalid_receiving_hospital_gets_ordinary_errors()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var doc = Json("HS038-referral.json");
        var hospital = doc["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject())
            .Where(r => (string?)r["resourceType"] == "Organization").ElementAt(1);
        hospital["extension"]![2]!["valueIdentifier"]!["system"] = "urn:example:wrong";
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc));
        Assert.NotEmpty(outcome.Errors());
        Assert.DoesNotContain(outcome.Errors(), i => i.Code == OperationOutcome.IssueType.Exception);
        Assert.Contains(outcome.Errors(), i => i.Expression.Any(x => x?.StartsWith("Bundle.entry[4].resource.extension[2]", StringComparison.Ordinal) == true));
    }

    /// <summary>Removes every section entry pointing at <paramref name="reference"/> (and sections left empty of entries lose the element).</summary>
    internal static void RemoveSectionEntry(JsonObject composition, string reference)
    {
        foreach (var section in composition["section"]?.AsArray().OfType<JsonObject>() ?? [])
        {
            if (section["entry"] is JsonArray list)
            {
                foreach (var item in list.Where(x => (string?)x!["reference"] == reference).ToList()) list.Remove(item);
                if (list.Count == 0) section.Remove("entry");
            }
            RemoveSectionEntry(section, reference);
        }
    }
}
