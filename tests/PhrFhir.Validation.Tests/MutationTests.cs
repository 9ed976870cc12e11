using System.Text.Json.Nodes;
using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Each official document, broken in one place, must fail with an error that names the broken
/// element. The documents are read from ../shared/ref and mutated in memory; one row per
/// (document × rule kind), so a failing row says which rule the validator no longer enforces.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class MutationTests(ValidatorFixture fixture)
{
    private const string Hs037 = "jp-documents/echeckup/package/Bundle-Bundle-eCheckupReport-Sample-01.json";
    private const string Hs038 = "jp-documents/clins/examples-json/Bundle-Bundle-CLINS-Referral-Example-01.json";

    private static JsonObject Entry(JsonNode doc, string type) =>
        doc["entry"]!.AsArray().Select(e => e!["resource"]!.AsObject()).First(r => (string?)r["resourceType"] == type);

    private static string FullUrlOf(JsonNode doc, string type) =>
        (string)doc["entry"]!.AsArray().First(e => (string?)e!["resource"]!["resourceType"] == type)!["fullUrl"]!;

    /// <summary>(document, rule, mutation, a word the error must name).</summary>
    private static readonly Dictionary<string, (string Document, Action<JsonNode> Mutate, string Names)> Cases = new()
    {
        ["HS037 required element dropped: Bundle.identifier"] = (Hs037, d => d.AsObject().Remove("identifier"), "identifier"),
        ["HS037 required element dropped: Composition.title"] = (Hs037, d => Entry(d, "Composition").Remove("title"), "title"),
        ["HS037 fixed value broken: Bundle.type"] = (Hs037, d => d["type"] = "collection", "type"),
        ["HS037 required binding broken: Patient.gender"] = (Hs037, d => Entry(d, "Patient")["gender"] = "otoko", "gender"),
        ["HS037 max=1 slice exceeded: a second Composition entry"] = (Hs037, d =>
        {
            var copy = d["entry"]![0]!.DeepClone();
            copy["fullUrl"] = "urn:uuid:0f6c8a52-2b7e-4d39-9d0e-000000000001";
            d["entry"]!.AsArray().Add(copy);
        }, "entry"),
        ["HS037 invariant broken: two entries with one fullUrl (bdl-7)"] = (Hs037, d => d["entry"]![2]!["fullUrl"] = (string)d["entry"]![1]!["fullUrl"]!, "bdl-7"),
        ["HS037 reference type broken: Composition.subject to a Practitioner"] = (Hs037, d =>
            Entry(d, "Composition")["subject"] = new JsonObject { ["reference"] = FullUrlOf(d, "Practitioner") }, "subject"),
        ["HS038 required element dropped: Composition.date"] = (Hs038, d => Entry(d, "Composition").Remove("date"), "date"),
        ["HS038 fixed value broken: Bundle.type"] = (Hs038, d => d["type"] = "transaction", "type"),
        ["HS038 required binding broken: Composition.status"] = (Hs038, d => Entry(d, "Composition")["status"] = "draft-ish", "status"),
        ["HS038 reference type broken: Composition.subject to an Organization"] = (Hs038, d =>
            Entry(d, "Composition")["subject"] = new JsonObject { ["reference"] = FullUrlOf(d, "Organization") }, "subject"),
        ["HS038 max=1 slice exceeded: a second Composition entry"] = (Hs038, d =>
        {
            var copy = d["entry"]![0]!.DeepClone();
            copy["fullUrl"] = "urn:uuid:0f6c8a52-2b7e-4d39-9d0e-000000000002";
            d["entry"]!.AsArray().Add(copy);
        }, "entry"),
    };

    public static TheoryData<string> Mutations() => new(Cases.Keys);

    [SkippableTheory]
    [MemberData(nameof(Mutations))]
    public async System.Threading.Tasks.Task A_mutated_official_document_fails_naming_the_mutated_element(string mutation)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var (document, mutate, names) = Cases[mutation];
        var json = JsonNode.Parse(File.ReadAllText(ValidatorFixture.Ref(document)))!;
        var clean = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(json));
        mutate(json);
        var outcome = await fixture.Validator.ValidateAsync(ValidatorFixture.Parse(json));

        var errors = outcome.Errors();
        var newErrors = errors.Where(e => !clean.Errors().Any(c => c.Signature() == e.Signature() && c.Diagnostics == e.Diagnostics)).ToList();
        Assert.True(newErrors.Count > 0, $"{mutation}: no new error.\n{outcome.Describe()}");
        Assert.True(newErrors.Any(e => Names(e, names)), $"{mutation}: no error names '{names}'.\n{outcome.Describe()}");
        // Explained: every error has an expression, and the common kinds a Japanese text.
        Assert.All(newErrors, e => Assert.NotEmpty(e.Expression));
        Assert.Contains(newErrors, e => e.Details.Text.Any(c => c >= '\u3040'));
    }

    private static bool Names(OperationOutcome.IssueComponent issue, string element) =>
        issue.Expression.Any(x => x.Contains(element, StringComparison.Ordinal))
        || (issue.GetExtension(OutcomeExplainer.RuleExtension)?.GetExtensionValue<FhirString>("element")?.Value?.Contains(element, StringComparison.Ordinal) ?? false)
        || (issue.GetExtensionValue<FhirString>(OutcomeExplainer.MessageIdExtension)?.Value == element)
        || (issue.Diagnostics?.Contains($"'{element}'", StringComparison.Ordinal) ?? false)
        || (issue.Diagnostics?.Contains($".{element}", StringComparison.Ordinal) ?? false);
}
