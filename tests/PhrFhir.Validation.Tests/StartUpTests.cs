using Hl7.Fhir.Model;
using Microsoft.Extensions.Logging.Abstractions;

namespace PhrFhir.Validation.Tests;

/// <summary>
/// Start-up under load (docs/validation.md): a request waits for its own family's pack, never for any warm-up — its
/// own or another family's. Warm-ups are held back here to stand for the 22–55 s they took on a loaded machine.
/// </summary>
public sealed class StartUpTests
{
    [SkippableFact]
    public async System.Threading.Tasks.Task The_first_HS037_answer_does_not_wait_for_any_family_to_warm_up()
    {
        Skip.If(ValidatorFixture.ReferenceFolder is null, ValidatorFixture.NoReference);
        var packageCache = Directory.CreateTempSubdirectory("phrfhir-test-packages-");
        var hold = new System.Threading.Tasks.TaskCompletionSource();
        try
        {
            using var validator = await DocumentValidator.CreateAsync(new ValidationOptions
            {
                Packages = ValidatorFixture.FromReference(packageCache.FullName),
                CacheFolder = Path.Combine(ValidatorFixture.RepositoryRoot, "data", "conformance-cache"),
                Families = ["jp-echeckup-1.1.3", "jp-clins", "r4-core"],
            }, NullLogger.Instance);
            validator.HoldWarmUps(hold.Task); // before any family has finished opening its pack

            var sample = ValidatorFixture.Parse(File.ReadAllText(ValidatorFixture.Ref("jp-documents/echeckup/package/Bundle-Bundle-eCheckupReport-Sample-01.json")));
            var outcome = await validator.ValidateAsync(sample).WaitAsync(TimeSpan.FromMinutes(5));

            Assert.True(outcome.Errors().Count == 0, outcome.Describe());
            Assert.All(validator.Families, f => Assert.NotEqual(FamilyState.Ready, f.State)); // nothing had warmed
            hold.SetResult();
            await validator.WhenReadyAsync().WaitAsync(TimeSpan.FromMinutes(5));
            Assert.All(validator.Families, f => Assert.Equal(FamilyState.Ready, f.State));
        }
        finally
        {
            hold.TrySetResult();
            packageCache.Delete(recursive: true);
        }
    }
}
