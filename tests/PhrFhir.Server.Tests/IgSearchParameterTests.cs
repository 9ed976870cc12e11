using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// Search parameters defined by the IGs in ../shared/ref (JP Core, IHE MHD) are loaded at start and
/// work like core ones. Skipped, with a message, where the reference folder is absent.
/// </summary>
[Collection("server")]
public sealed class IgSearchParameterTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    static void SkipWithoutReference() =>
        Skip.If(SharedRef.Find() is null, "../shared/ref is not present: IG search parameters are not loaded");

    [SkippableFact]
    public async System.Threading.Tasks.Task JP_Core_kana_sort_finds_the_usual_syllabic_name()
    {
        SkipWithoutReference();
        var kana = Fhir.Unique("ヤマダ");
        var patient = new Patient
        {
            Name =
            [
                new HumanName { Use = HumanName.NameUse.Official, Family = "山田", Given = ["太郎"] },
                new HumanName
                {
                    Use = HumanName.NameUse.Usual, Text = kana + " タロウ",
                    Extension = [new Extension("http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", new Code("SYL"))],
                },
            ],
        };
        await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(patient)), HttpStatusCode.Created);
        // Folded like every string: the hiragana query finds the katakana name.
        var hiragana = Kana.ToHiragana(kana);
        var found = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?jp-kana-sort={Uri.EscapeDataString(hiragana)}"), HttpStatusCode.OK);
        Assert.Equal(1, found.Total);
    }

    [SkippableFact]
    public async System.Threading.Tasks.Task MHD_creation_searches_the_attachment_creation_date()
    {
        SkipWithoutReference();
        var subject = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("文書") }] })), HttpStatusCode.Created);
        var doc = new DocumentReference
        {
            Status = DocumentReferenceStatus.Current,
            Subject = new ResourceReference($"Patient/{subject.Id}"),
            Content = [new DocumentReference.ContentComponent { Attachment = new Attachment { ContentType = "application/pdf", Url = "http://example.org/doc.pdf", Creation = "2019-07-15T10:00:00+09:00" } }],
        };
        await Fhir.ExpectAsync<DocumentReference>(await _http.PostAsync("DocumentReference", Fhir.Json(doc)), HttpStatusCode.Created);

        var hit = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?patient={subject.Id}&creation=2019-07"), HttpStatusCode.OK);
        Assert.Equal(1, hit.Total);
        var miss = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"DocumentReference?patient={subject.Id}&creation=2020"), HttpStatusCode.OK);
        Assert.Equal(0, miss.Total);

        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await _http.GetAsync("metadata"), HttpStatusCode.OK);
        var dr = cs.Rest[0].Resource.Single(r => r.Type == "DocumentReference");
        Assert.Contains(dr.SearchParam, p => p.Name == "creation" && p.Definition == "https://profiles.ihe.net/ITI/MHD/SearchParameter/DocumentReference-Creation");
    }
}

static class Kana
{
    public static string ToHiragana(string s) => new(s.Select(c => c is >= '\u30A1' and <= '\u30F6' ? (char)(c - 0x60) : c).ToArray());
}

/// <summary>A path inside this repository (the folder holding PhrFhir.sln above the test binaries).</summary>
static class Repository
{
    public static readonly string Root = FindRoot();

    public static string File(params string[] parts) => Path.Combine([Root, .. parts]);

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (System.IO.File.Exists(Path.Combine(dir.FullName, "PhrFhir.sln"))) return dir.FullName;
        throw new InvalidOperationException("PhrFhir.sln not found above the test binaries");
    }
}

/// <summary>Finds ../shared/ref the way the server does (any folder above the working directory).</summary>
static class SharedRef
{
    public static string? Find()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "ref");
            if (Directory.Exists(candidate)) return candidate;
        }
        return null;
    }
}
