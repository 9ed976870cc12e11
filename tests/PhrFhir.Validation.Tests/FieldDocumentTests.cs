using System.Formats.Tar;
using System.IO.Compression;
using System.Text.Json.Nodes;
using Firely.Fhir.Validation;
using Hl7.Fhir.Model;

#pragma warning disable ExperimentalApi // SliceValidator: the minimal reproduction of the Firely defect

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Official documents as senders in the field send them (issue #14): versioned profiles the server does not
/// hold, referrals without Observations, CLINS lab results, legacy eReferral 1.1.x Bundles. Each document is an
/// official example from ../shared/ref, or a transformation of one stated in the test.
/// </summary>
[Collection(ValidatorCollection.Name)]
public sealed class FieldDocumentTests(ValidatorFixture fixture)
{
    private const string ECheckup150Sample = "jp-documents/echeckup/sushi-compiled-1.5.0/Bundle-Bundle-eCheckupReport-Sample-01.json";
    private const string ClinsReferral = "jp-documents/clins/examples-json/Bundle-Bundle-CLINS-Referral-Example-01.json";
    private const string LabResultK = "jp-documents/clins/examples-json/Observation-Example-JP-Obs-LabResult-eCS-K.json";

    private static JsonObject Official(string relative) => JsonNode.Parse(File.ReadAllText(ValidatorFixture.Ref(relative)))!.AsObject();

    private static List<JsonObject> Entries(JsonObject bundle) => bundle["entry"]!.AsArray().Select(e => e!.AsObject()).ToList();

    // 1. Versioned canonicals whose version is not loaded

    /// <summary>
    /// The 1.5.0 sample declares Practitioner/Organization/Encounter as <c>…|x.x.x-instance</c> (an IG build
    /// placeholder; the profiles are <c>x.x.x-profile</c>): validated against the loaded version, each with a
    /// warning at its <c>meta.profile</c> naming both versions, and no error anywhere (entries 13 and 30 were the
    /// same cascade: they reference the Practitioner).
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_profile_version_that_is_not_loaded_is_validated_against_the_loaded_version_with_a_warning_naming_both()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(Official(ECheckup150Sample)), null, "jp-echeckup-1.5.0");

        Assert.True(outcome.Errors().Count == 0, outcome.Describe());
        var versions = outcome.Issue.Where(i => i.Code == OperationOutcome.IssueType.NotFound).ToList();
        Assert.Equal(["Bundle.entry[2].resource.meta.profile[0]", "Bundle.entry[3].resource.meta.profile[0]", "Bundle.entry[4].resource.meta.profile[0]"],
            versions.Select(i => i.Expression.Single()).Order(StringComparer.Ordinal));
        Assert.All(versions, i =>
        {
            Assert.Equal(OperationOutcome.IssueSeverity.Warning, i.Severity);
            Assert.Contains("x.x.x-instance", i.Diagnostics);
            Assert.Contains("x.x.x-profile", i.Diagnostics);
            Assert.Contains("読み込み済みのバージョン x.x.x-profile", i.Details.Text);
        });
    }

    /// <summary>Only a profile that no loaded package defines, in any version, stays an error.</summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_versioned_profile_that_no_package_defines_is_still_an_error()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var doc = Official(ECheckup150Sample);
        var practitioner = Entries(doc)[2]["resource"]!.AsObject();
        practitioner["meta"]!["profile"]![0] = "http://jpfhir.jp/fhir/eCheckup/StructureDefinition/JP_Practitioner_eCheckupUnknown|x.x.x-instance";

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc), null, "jp-echeckup-1.5.0");

        Assert.Contains(outcome.Errors(), i => i.Signature() == "Bundle.entry[2].resource ProfileUnusable" && i.Diagnostics.Contains("JP_Practitioner_eCheckupUnknown"));
        Assert.DoesNotContain(outcome.Issue, i => i.Code == OperationOutcome.IssueType.NotFound && i.Expression.Contains("Bundle.entry[2].resource.meta.profile[0]"));
    }

    // 2. Firely SliceValidator on an empty re-slice

    /// <summary>
    /// The official CLINS referral minus its only Observation (entry 16, and the section entry pointing at it):
    /// a valid 診療情報提供書 without Observations. Firely 3.6.0 threw on it (empty <c>entry:observation</c>, whose
    /// re-slice <c>observation/laboratory</c> it cannot validate empty); now it validates with no errors.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task The_official_referral_without_its_Observation_validates_with_no_errors()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var doc = Official(ClinsReferral);
        var observations = Entries(doc).Where(e => (string?)e["resource"]!["resourceType"] == "Observation").ToList();
        Assert.Single(observations);
        foreach (var observation in observations)
        {
            doc["entry"]!.AsArray().Remove(observation);
            OwnExampleTests.RemoveSectionEntry(Entries(doc)[0]["resource"]!.AsObject(), (string)observation["fullUrl"]!);
        }

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc));

        Assert.True(outcome.Errors().Count == 0, outcome.Describe());
    }

    /// <summary>
    /// The workaround keeps every check: a referral whose only Observation is broken (no <c>code</c>, 1..1 in R4
    /// and in the profile) is reported at that Observation, not as a validator exception nor as a pass.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task The_official_referral_with_a_broken_Observation_gets_the_errors_at_that_Observation()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var doc = Official(ClinsReferral);
        Entries(doc)[16]["resource"]!.AsObject().Remove("code");

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc));

        Assert.DoesNotContain(outcome.Issue, i => i.Code == OperationOutcome.IssueType.Exception);
        Assert.Contains(outcome.Errors(), i => i.Expression.Any(x => x?.StartsWith("Bundle.entry[16]", StringComparison.Ordinal) == true));
    }

    /// <summary>
    /// The defect without any IG: Firely's own SliceValidator throws on an empty plain list; guarded, it reports
    /// what an empty group owes (a required slice is missing) and passes an optional one.
    /// </summary>
    [Fact]
    public void An_empty_slice_group_is_validated_instead_of_throwing_and_a_required_slice_is_still_missing()
    {
        var optional = new SliceValidator(false, false, ResultAssertion.SUCCESS, new SliceValidator.SliceCase("laboratory", ResultAssertion.SUCCESS, ResultAssertion.SUCCESS));
        var required = new SliceValidator(false, false, ResultAssertion.SUCCESS, new SliceValidator.SliceCase("laboratory", ResultAssertion.SUCCESS, ResultAssertion.SUCCESS, required: true));
        var settings = new ValidationSettings();

        Assert.Throws<InvalidOperationException>(() => ((IGroupValidatable)optional).Validate(Array.Empty<PocoNode>(), settings, new ValidationState()));
        Assert.True(((IGroupValidatable)EmptyResliceGuard.Guard(optional)).Validate(Array.Empty<PocoNode>(), settings, new ValidationState()).IsSuccessful);
        var missing = ((IGroupValidatable)EmptyResliceGuard.Guard(required)).Validate(Array.Empty<PocoNode>(), settings, new ValidationState());
        Assert.False(missing.IsSuccessful);
        Assert.Contains(missing.Evidence.OfType<IssueAssertion>(), i => i.Message.Contains("laboratory", StringComparison.Ordinal));
    }

    // 3. JP_Observation_LabResult_eCS

    /// <summary>
    /// The official potassium result is checked against JP_Observation_LabResult_eCS (it validates: pinned in
    /// OfficialExampleTests with no errors), and the profile's rules bite: the JLAC10 coding without its display
    /// (slice <c>jlac10LaboCode</c>, matched on <c>system</c> alone as the HL7 validator matches it; display 1..1),
    /// and the result without the 医療機関識別 extension (invariant <c>resource-needs-extension-of-institutionNumber</c>).
    /// </summary>
    [SkippableTheory]
    [InlineData("JLAC10 coding without display", "Observation.code[0].coding[2]", "(for slice jlac10LaboCode)")]
    [InlineData("no institution number", "Observation", "resource-needs-extension-of-institutionNumber")]
    public async System.Threading.Tasks.Task A_CLINS_lab_result_is_checked_against_its_profile(string change, string expression, string rule)
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var observation = Official(LabResultK);
        switch (change)
        {
            case "JLAC10 coding without display":
                var jlac10 = observation["code"]!["coding"]![2]!.AsObject();
                Assert.Equal("http://medis.or.jp/CodeSystem/master-JLAC10-17digits", (string?)jlac10["system"]);
                jlac10.Remove("display");
                break;
            case "no institution number":
                var extensions = observation["extension"]!.AsArray();
                extensions.Remove(extensions.Single(e => ((string?)e!["url"])!.EndsWith("JP_eCS_InstitutionNumber", StringComparison.Ordinal)));
                break;
        }

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(observation), null, "jp-clins");

        Assert.DoesNotContain(outcome.Issue, i => i.Kind() == nameof(OutcomeExplainer.RuleKind.ProfileUnusable));
        Assert.True(outcome.Errors().Any(i => i.Expression.Contains(expression) && i.Diagnostics.Contains(rule, StringComparison.Ordinal)),
            $"{change}: no error at {expression} for {rule}\n{outcome.Describe()}");
    }

    /// <summary>
    /// The repairs stay within what the HL7 validator reads: the LabResult profile as published gets its '/'
    /// slices renamed and only <c>jlac10LaboCode.display</c> / <c>localLaboCode.display</c> relaxed (their
    /// <c>system</c> is fixed); with <c>jlac10LaboCode.system</c> unfixed too, that slice has nothing to match on
    /// and is left alone, so Firely still refuses the profile, as the HL7 validator does.
    /// </summary>
    [SkippableFact]
    public void Only_discriminators_a_slice_can_do_without_are_relaxed()
    {
        Skip.If(ValidatorFixture.ReferenceFolder is null, ValidatorFixture.NoReference);
        StructureDefinition Published() => (StructureDefinition)ValidatorFixture.Parse(File.ReadAllText(
            ValidatorFixture.Ref("jp-documents/clins/package/StructureDefinition-JP-Observation-LabResult-eCS.json")));

        var profile = Published();
        Assert.Contains("coreLaboJLAC10/alb", Cache.SlicingRepairs.UnnestFalseReslices(profile));
        Assert.Contains(profile.Snapshot.Element, e => e.ElementId == "Observation.code.coding:coreLaboJLAC10_alb.display" && e.SliceName is null);
        Assert.Equal(["Observation.code.coding:jlac10LaboCode.display", "Observation.code.coding:localLaboCode.display"],
            Cache.SlicingRepairs.Relax(profile).Order(StringComparer.Ordinal));

        var unmatchable = Published();
        unmatchable.Snapshot.Element.Single(e => e.ElementId == "Observation.code.coding:jlac10LaboCode.system").Fixed = null;
        Assert.DoesNotContain("Observation.code.coding:jlac10LaboCode.display", Cache.SlicingRepairs.Relax(unmatchable));
    }

    // 4. Legacy eReferral 1.1.x

    /// <summary>
    /// The official CLINS referral declaring the Bundle profile of the stand-alone eReferral IG 1.1.6 (its canonical
    /// read from the archived package): one error that names the superseded IG and the CLINS profile to declare,
    /// in English and Japanese, instead of a validation against profiles the document does not claim.
    /// </summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_legacy_eReferral_document_gets_one_issue_naming_its_CLINS_replacement()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var legacyBundle = CanonicalIn("jp-documents/archives/jp-eReferral.r4-1.1.6-standalone.tgz", "package/StructureDefinition-JP-Bundle-eReferral.json");
        Assert.Equal("http://jpfhir.jp/fhir/eReferral/StructureDefinition/JP_Bundle_eReferral", legacyBundle);
        var doc = Official(ClinsReferral);
        doc["meta"]!["profile"] = new JsonArray(legacyBundle);

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc));

        var issue = Assert.Single(outcome.Issue);
        Assert.Equal(OperationOutcome.IssueSeverity.Error, issue.Severity);
        Assert.Equal(OperationOutcome.IssueType.NotSupported, issue.Code);
        Assert.Equal("Bundle.meta.profile[0]", issue.Expression.Single());
        Assert.Contains("eReferral IG 1.1.x", issue.Diagnostics);
        Assert.Contains("superseded", issue.Diagnostics);
        Assert.Contains("jp-eCSCLINS.r4#1.5.2", issue.Diagnostics);
        Assert.Contains("Declare http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eReferral", issue.Diagnostics);
        Assert.Contains("置き換えられ", issue.Details.Text);
    }

    /// <summary>The same for the stand-alone eDischargeSummary IG 1.1.6 (HS039).</summary>
    [SkippableFact]
    public async System.Threading.Tasks.Task A_legacy_eDischargeSummary_document_gets_one_issue_naming_its_CLINS_replacement()
    {
        Skip.If(fixture.Validator is null, ValidatorFixture.NoReference);
        var legacyBundle = CanonicalIn("jp-documents/archives/jp-eDischargeSummary.r4-1.1.6-standalone.tgz", "package/StructureDefinition-JP-Bundle-eDischargeSummary.json");
        var doc = Official(ClinsReferral);
        doc["meta"]!["profile"] = new JsonArray(legacyBundle);

        var outcome = await fixture.Validator!.ValidateAsync(ValidatorFixture.Parse(doc));

        var issue = Assert.Single(outcome.Issue);
        Assert.Equal(OperationOutcome.IssueType.NotSupported, issue.Code);
        Assert.Contains("eDischargeSummary IG 1.1.x", issue.Diagnostics);
        Assert.Contains("Declare http://jpfhir.jp/fhir/clins/StructureDefinition/JP_Bundle_eDischargeSummary", issue.Diagnostics);
    }

    /// <summary>The <c>url</c> of a resource inside an official package tarball.</summary>
    private static string CanonicalIn(string tarball, string entryName)
    {
        using var gzip = new GZipStream(File.OpenRead(ValidatorFixture.Ref(tarball)), CompressionMode.Decompress);
        using var tar = new TarReader(gzip);
        while (tar.GetNextEntry() is { } entry)
            if (entry.Name == entryName && entry.DataStream is { } data)
                return (string)JsonNode.Parse(data)!["url"]!;
        throw new FileNotFoundException($"{entryName} not in {tarball}");
    }
}
