using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// A resource that matches a criterion through several index rows (kanji, kana and text forms of one
/// name) is still one match: counted once, listed once, pages full.
/// </summary>
[Collection("server")]
public sealed class SearchKeySetTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    [Fact]
    public async System.Threading.Tasks.Task A_resource_matching_through_several_rows_is_counted_and_listed_once()
    {
        var kana = Fhir.Unique("ヤマモト");
        var tag = Fhir.Unique("keyset");
        for (var i = 0; i < 12; i++)
        {
            var p = new Patient
            {
                Meta = new Meta { Tag = [new Coding("urn:phrfhir:test", tag)] },
                Name =
                [
                    new HumanName { Family = kana, Given = ["タロウ"], Text = kana + " タロウ" },
                    new HumanName { Family = Kana.ToHiragana(kana), Given = ["たろう"] },
                ],
            };
            await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(p)), HttpStatusCode.Created);
        }
        var ids = new List<string>();
        var url = $"Patient?family={Uri.EscapeDataString(Kana.ToHiragana(kana))}&_count=5";
        while (url is not null)
        {
            var page = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(url), HttpStatusCode.OK);
            Assert.Equal(12, page.Total);
            Assert.True(page.Entry.Count == 5 || page.Link.All(l => l.Relation != "next"), "a page before the last is not full");
            ids.AddRange(page.Entry.Select(e => e.Resource.Id));
            url = page.Link.FirstOrDefault(l => l.Relation == "next")?.Url;
        }
        Assert.Equal(12, ids.Count);
        Assert.Equal(12, ids.Distinct().Count());

        // Two criteria (intersection) behave the same.
        var both = await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(
            $"Patient?family={Uri.EscapeDataString(kana)}&_tag=urn:phrfhir:test|{tag}&_count=50"), HttpStatusCode.OK);
        Assert.Equal(12, both.Total);
        Assert.Equal(12, both.Entry.Select(e => e.Resource.Id).Distinct().Count());
    }
}
