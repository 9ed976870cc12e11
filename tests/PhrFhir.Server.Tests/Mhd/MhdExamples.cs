using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;

namespace PhrFhir.Server.Tests.Mhd;

/// <summary>The official IHE MHD 4.2.3 examples, read from ../shared/ref at test time (never copied).</summary>
static class MhdExamples
{
    static readonly FhirJsonDeserializer Parser = new(new DeserializerSettings());

    public static string? Folder =>
        SharedRef.Find() is { } root && Directory.Exists(Path.Combine(root, "ihe", "MHD-4.2.3", "sushi-compiled"))
            ? Path.Combine(root, "ihe", "MHD-4.2.3", "sushi-compiled") : null;

    public static void SkipIfAbsent() => Skip.If(Folder is null, "../shared/ref/ihe/MHD-4.2.3 is not present: the MHD examples cannot be read");

    public static T Load<T>(string file) where T : Resource =>
        (T)Parser.DeserializeResource(File.ReadAllText(Path.Combine(Folder!, file)));

    /// <summary>The ITI-65 Provide Document Bundle examples (by their declared profile).</summary>
    public static IEnumerable<string> ProvideBundles() =>
        Folder is null ? [] : Directory.EnumerateFiles(Folder, "Bundle-ex-*.json")
            .Where(f => File.ReadAllText(f).Contains("ProvideBundle\"", StringComparison.Ordinal))
            .Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal);

    /// <summary>
    /// Every MHD example uses the same document uniqueId (masterIdentifier …50220.62012), twice inside
    /// the "Multiple" example, and SubmissionSet uniqueIds shared between examples. A registry must refuse
    /// a uniqueId it already holds, so each submission in a test gets its own: the rest of the example is
    /// submitted as published.
    /// </summary>
    public static string MakeUniqueIds(Bundle bundle)
    {
        var suffix = "." + Random.Shared.NextInt64(1, long.MaxValue);
        foreach (var (resource, index) in bundle.Entry.Select((e, i) => (e.Resource, i)))
        {
            if (resource is DocumentReference { MasterIdentifier: { } mi }) mi.Value += suffix + "." + index;
            if (resource is List list)
                foreach (var id in list.Identifier.Where(i => i.Use == Identifier.IdentifierUse.Usual)) id.Value += suffix + "." + index;
        }
        return suffix;
    }
}
