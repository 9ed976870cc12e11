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
    /// the "Multiple" example. A registry must refuse a uniqueId it already holds, so each submission
    /// in a test gets its own: the rest of the example is submitted as published.
    /// </summary>
    public static string MakeUniqueIds(Bundle bundle)
    {
        var suffix = "." + Random.Shared.NextInt64(1, long.MaxValue);
        foreach (var doc in bundle.Entry.Select(e => e.Resource).OfType<DocumentReference>())
            if (doc.MasterIdentifier is { } mi) mi.Value += suffix + "." + bundle.Entry.FindIndex(e => e.Resource == doc);
        return suffix;
    }
}
