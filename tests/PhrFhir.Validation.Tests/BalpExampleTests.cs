using Hl7.Fhir.Model;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// The official IHE BALP 1.1.4 AuditEvent examples validate, in the <c>ihe-balp</c> family, against the
/// profiles they declare — the profiles the server's own audit trail declares (docs/validation.md "IHE BALP").
/// Errors left are pinned by FhirPath and rule kind with the reason, as in <see cref="OfficialExampleTests"/>.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class BalpExampleTests(ValidatorFixture fixture)
{
    const string Folder = "ihe/BALP-1.1.4/sushi-compiled";

    /// <summary>file → (signatures of the errors it still has, why). Everything not listed must have 0 errors.</summary>
    static readonly Dictionary<string, (string[] Errors, string Reason)> Pinned = new()
    {
    };

    public static TheoryData<string> Examples()
    {
        var data = new TheoryData<string>();
        var dir = ValidatorFixture.ReferenceFolder is null ? null : ValidatorFixture.Ref(Folder);
        if (dir is null || !Directory.Exists(dir)) { data.Add("(no shared/ref)"); return data; }
        foreach (var file in Directory.GetFiles(dir, "AuditEvent-*.json").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileName(file));
        return data;
    }

    [SkippableFact]
    public void All_46_official_AuditEvent_examples_are_found()
    {
        Skip.If(ValidatorFixture.ReferenceFolder is null || !Directory.Exists(ValidatorFixture.Ref(Folder)), ValidatorFixture.NoReference);
        Assert.Equal(46, Directory.GetFiles(ValidatorFixture.Ref(Folder), "AuditEvent-*.json").Length);
    }

    [SkippableTheory]
    [MemberData(nameof(Examples))]
    public async System.Threading.Tasks.Task Official_BALP_example_validates_against_its_declared_profiles(string file)
    {
        Skip.If(fixture.Validator is null || !Directory.Exists(ValidatorFixture.Ref(Folder)), ValidatorFixture.NoReference);
        var instance = ValidatorFixture.Parse(File.ReadAllText(Path.Combine(ValidatorFixture.Ref(Folder), file)));
        Assert.NotEmpty(instance.Meta.Profile); // every example declares the profile it illustrates
        Assert.Equal("ihe-balp", fixture.Validator!.FamilyFor(instance).Id);
        var outcome = await fixture.Validator.ValidateAsync(instance, null, "ihe-balp");

        // A profile the family could not use would be an `exception`, not a pass: none may be there.
        Assert.DoesNotContain(outcome.Issue, i => i.Kind() == nameof(OutcomeExplainer.RuleKind.ProfileUnusable) && !Pinned.ContainsKey(file));
        var actual = outcome.Errors().Select(i => i.Signature()).Distinct().Order(StringComparer.Ordinal).ToArray();
        var expected = Pinned.TryGetValue(file, out var pin) ? pin.Errors.Order(StringComparer.Ordinal).ToArray() : [];
        Assert.True(expected.SequenceEqual(actual),
            $"{file}: errors differ from the pinned ones ({pin.Reason ?? "none pinned"}).\nexpected:\n  {string.Join("\n  ", expected)}\nactual:\n  {string.Join("\n  ", actual)}\n" +
            $"PIN [\"{file}\"] = ([{string.Join(", ", actual.Select(a => "\"" + a + "\""))}], …)\nfull outcome:\n{outcome.Describe()}");
    }

    /// <summary>The passes above mean something: the same example, broken where BALP constrains it, fails there.</summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_PatientRead_without_its_patient_entity_or_with_a_failure_outcome_is_refused()
    {
        Skip.If(fixture.Validator is null || !Directory.Exists(ValidatorFixture.Ref(Folder)), ValidatorFixture.NoReference);
        var audit = (AuditEvent)ValidatorFixture.Parse(File.ReadAllText(Path.Combine(ValidatorFixture.Ref(Folder), "AuditEvent-ex-auditBasicReadServer.json")));
        audit.Outcome = AuditEvent.AuditEventOutcome.N4; // BALP's RESTful profiles record successes (outcome fixed to 0)
        audit.Entity.RemoveAll(e => e.Type?.Code == "1");
        var outcome = await fixture.Validator!.ValidateAsync(audit, null, "ihe-balp");
        var errors = outcome.Errors();
        Assert.Contains(errors, i => i.Expression.Any(e => e.StartsWith("AuditEvent.outcome", StringComparison.Ordinal)));
        Assert.Contains(errors, i => i.Diagnostics.Contains("entity:patient", StringComparison.Ordinal));
    }
}
