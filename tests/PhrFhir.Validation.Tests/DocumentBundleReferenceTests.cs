using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// R4 documents.html §3.3.1 / bundle.html#references: the references of a FHIR document resolve within its Bundle.
/// Built from the official CLINS referral (HS038) Example-01 by removing an entry that something references.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class DocumentBundleReferenceTests(ValidatorFixture fixture)
{
    private const string Referral = "jp-documents/clins/examples-json/Bundle-Bundle-CLINS-Referral-Example-01.json";

    private static JsonObject Official() => JsonNode.Parse(File.ReadAllText(ValidatorFixture.Ref(Referral)))!.AsObject();

    /// <summary>The official referral with the entry whose fullUrl is <paramref name="fullUrl"/> removed.</summary>
    private static Resource Without(string fullUrl)
    {
        var json = Official();
        var entries = json["entry"]!.AsArray();
        entries.Remove(entries.Single(e => (string?)e!["fullUrl"] == fullUrl));
        return ValidatorFixture.Parse(json);
    }

    private static List<OperationOutcome.IssueComponent> Unresolved(OperationOutcome outcome) =>
        outcome.Errors().Where(i => i.Kind() == nameof(OutcomeExplainer.RuleKind.Reference) && i.Code == OperationOutcome.IssueType.NotFound).ToList();

    [SkippableFact]
    public async System.Threading.Tasks.Task The_official_referral_has_no_unresolved_reference()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(Official()));
        Assert.True(Unresolved(outcome).Count == 0, outcome.Describe());
    }

    /// <summary>
    /// Condition entry 8 (紹介目的) is referenced by a nested section of the Composition: removing it leaves a section
    /// entry pointing nowhere, reported at that section entry (and at nothing the removal did not break).
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_section_entry_whose_resource_is_missing_from_the_document_is_an_error_at_that_entry()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var official = Official();
        var missing = (string)official["entry"]![8]!["fullUrl"]!;
        var composition = official["entry"]![0]!["resource"]!;
        var expected = new List<string>();
        for (var s = 0; s < composition["section"]!.AsArray().Count; s++)
        {
            var sub = composition["section"]![s]!["section"]?.AsArray() ?? [];
            for (var t = 0; t < sub.Count; t++)
                for (var e = 0; e < (sub[t]!["entry"]?.AsArray().Count ?? 0); e++)
                    if ((string?)sub[t]!["entry"]![e]!["reference"] == missing)
                        expected.Add($"Bundle.entry[0].resource.section[{s}].section[{t}].entry[{e}]");
        }
        Assert.NotEmpty(expected);

        var outcome = await fixture.Validator!.ValidateAsync(Without(missing));
        var composed = Unresolved(outcome).Where(i => i.Expression.Single().StartsWith("Bundle.entry[0].", StringComparison.Ordinal)).ToList();
        Assert.True(expected.SequenceEqual(composed.Select(i => i.Expression.Single())), outcome.Describe());
        Assert.All(composed, i => Assert.Contains(missing, i.Diagnostics));
        Assert.All(composed, i => Assert.Contains("含まれていません", i.Details.Text));
    }

    /// <summary>The Patient (entry 1) is the Composition's subject and every other entry's subject or patient: each place is reported.</summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_missing_patient_is_reported_at_every_reference_to_it_including_those_of_other_entries()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var official = Official();
        var missing = (string)official["entry"]![1]!["fullUrl"]!;
        var outcome = await fixture.Validator!.ValidateAsync(Without(missing));
        var paths = Unresolved(outcome).Select(i => i.Expression.Single()).ToList();
        Assert.Contains("Bundle.entry[0].resource.subject", paths);
        Assert.Equal(10, paths.Count); // the Patient's fullUrl occurs 11 times in the official document: itself and 10 references
        // references from other entries (a urn:uuid can name nothing outside the document)
        Assert.Contains(paths, p => !p.StartsWith("Bundle.entry[0].", StringComparison.Ordinal));
        Assert.True(paths.Count == paths.Distinct().Count(), string.Join("\n", paths));
    }

    /// <summary>
    /// R4 bundle.html#references: outside the Composition's own references, an absolute URL may name a resource on
    /// another server; only the Composition's listed references must be in the document.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task An_absolute_url_to_another_server_is_allowed_outside_the_composition_but_not_as_its_subject()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var json = Official();
        var condition = json["entry"]!.AsArray().First(e => (string?)e!["resource"]!["resourceType"] == "Condition")!["resource"]!;
        condition["subject"]!["reference"] = "https://mpi.example.jp/fhir/Patient/123";
        var outside = Unresolved(await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(json)));
        Assert.Empty(outside);

        json["entry"]![0]!["resource"]!["subject"]!["reference"] = "https://mpi.example.jp/fhir/Patient/123";
        var subject = Unresolved(await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(json)));
        Assert.Equal("Bundle.entry[0].resource.subject", Assert.Single(subject).Expression.Single());
    }
}
