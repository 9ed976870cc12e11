using System.Text.Json.Nodes;
using Hl7.Fhir.Model;
using PhrFhir.Validation.Terminology;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Grammar-defined code systems (MIME types, BCP 47 languages, UCUM) are checked here instead of reported as unchecked,
/// and a code that really cannot be checked names the system that is missing — jpfhir-terminology only for JP systems.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class WellKnownTerminologyTests(ValidatorFixture fixture)
{
    private const string Referral = "jp-documents/clins/examples-json/Bundle-Bundle-CLINS-Referral-Example-01.json";
    private const string ContentType = "Bundle.entry[17].resource.content[0].attachment[0].contentType[0]"; // Firely indexes every step

    private static JsonObject Official() => JsonNode.Parse(File.ReadAllText(ValidatorFixture.Ref(Referral)))!.AsObject();

    /// <summary>The referral's DocumentReference (entry 17) attaches application/pdf: Attachment.contentType is bound (required) to R4 mimetypes = all of urn:ietf:bcp:13.</summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task The_official_referrals_mime_type_is_checked_and_not_reported_as_missing_terminology()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(Official()));
        Assert.DoesNotContain(outcome.Issue, i => i.Diagnostics.Contains("bcp:13", StringComparison.Ordinal) || i.Expression.Contains(ContentType));
        // nothing that is not JP terminology is blamed on jpfhir-terminology
        Assert.All(outcome.Issue.Where(i => i.Details.Text.Contains("jpfhir-terminology", StringComparison.Ordinal)),
            i => Assert.Matches(@"urn:oid:1\.2\.392\.|jpfhir\.jp/|jami\.jp/", i.Diagnostics));
    }

    [SkippableTheory]
    [InlineData("pdf")]
    [InlineData("application/")]
    [InlineData("document/pdf")]
    public async System.Threading.Tasks.Task A_malformed_mime_type_in_the_official_referral_is_an_error_at_its_element(string contentType)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var json = Official();
        json["entry"]![17]!["resource"]!["content"]![0]!["attachment"]!["contentType"] = contentType;
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(json));
        Assert.True(outcome.Errors().Any(i => i.Expression.Contains(ContentType)), $"{contentType}:\n{outcome.Describe()}");
    }

    [Theory]
    [InlineData(WellKnownCodeSystems.MimeTypes, "application/pdf", true)]
    [InlineData(WellKnownCodeSystems.MimeTypes, "text/plain; charset=utf-8", true)]
    [InlineData(WellKnownCodeSystems.MimeTypes, "application/fhir+json", true)]
    [InlineData(WellKnownCodeSystems.MimeTypes, "pdf", false)]
    [InlineData(WellKnownCodeSystems.MimeTypes, "document/pdf", false)]
    [InlineData(WellKnownCodeSystems.Languages, "ja", true)]
    [InlineData(WellKnownCodeSystems.Languages, "ja-JP", true)]
    [InlineData(WellKnownCodeSystems.Languages, "ja-Hira-JP", true)]
    [InlineData(WellKnownCodeSystems.Languages, "zh-Hant-TW-x-private", true)]
    [InlineData(WellKnownCodeSystems.Languages, "日本語", false)]
    [InlineData(WellKnownCodeSystems.Languages, "ja_JP", false)]
    [InlineData(WellKnownCodeSystems.Languages, "j", false)]
    [InlineData(WellKnownCodeSystems.Ucum, "mg/dL", true)]
    [InlineData(WellKnownCodeSystems.Ucum, "mm[Hg]", true)]
    [InlineData(WellKnownCodeSystems.Ucum, "kg/m2", true)]
    [InlineData(WellKnownCodeSystems.Ucum, "10*3/uL", true)]
    [InlineData(WellKnownCodeSystems.Ucum, "mmHg", false)]
    [InlineData(WellKnownCodeSystems.Ucum, "kilogramm", false)]
    public void A_code_of_a_grammar_defined_system_is_judged_by_its_grammar(string system, string code, bool valid) =>
        Assert.True(WellKnownCodeSystems.IsValid(system, code) == valid, $"{system} '{code}' should be {(valid ? "valid" : "invalid")}");

    /// <summary>Every UCUM unit the official HS037 sample uses is a valid unit (no false error on real documents).</summary>
    [SkippableFact]
    public void Every_UCUM_unit_of_the_official_HS037_sample_is_valid()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var sample = ValidatorFixture.Ref("jp-documents/echeckup/package/Bundle-Bundle-eCheckupReport-Sample-01.json");
        var units = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(sample), "\"system\"\\s*:\\s*\"http://unitsofmeasure.org\"\\s*,\\s*\"code\"\\s*:\\s*\"([^\"]+)\"|\"code\"\\s*:\\s*\"([^\"]+)\"\\s*,\\s*\"system\"\\s*:\\s*\"http://unitsofmeasure.org\"")
            .Select(m => m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value).Distinct().ToList();
        Assert.NotEmpty(units);
        Assert.All(units, u => Assert.True(WellKnownCodeSystems.IsValid(WellKnownCodeSystems.Ucum, u), $"UCUM '{u}'"));
    }

    /// <summary>A code system that is missing is named; jpfhir-terminology is mentioned only when the system is one of its JP systems.</summary>
    [Theory]
    [InlineData("urn:oid:1.2.392.200119.4.504", true)]
    [InlineData("http://jpfhir.jp/fhir/core/mhlw/CodeSystem/PrefectureNo-2digits", true)]
    [InlineData("http://snomed.info/sct", false)]
    [InlineData("http://loinc.org", false)]
    public void An_unchecked_code_names_its_missing_system_and_blames_JP_terminology_only_for_JP_systems(string system, bool jp)
    {
        var outcome = OutcomeExplainer.Explain(new OperationOutcome
        {
            Issue = [new() { Severity = OperationOutcome.IssueSeverity.Error, Code = OperationOutcome.IssueType.CodeInvalid, Details = new CodeableConcept { Text = $"Cannot find codesystem '{system}'" } }],
        });
        var issue = outcome.Issue.Single();
        Assert.Equal(nameof(OutcomeExplainer.RuleKind.TerminologyUnavailable), issue.Kind());
        Assert.Contains(system, issue.Details.Text);
        Assert.Equal(jp, issue.Details.Text.Contains("jpfhir-terminology", StringComparison.Ordinal));
    }
}
