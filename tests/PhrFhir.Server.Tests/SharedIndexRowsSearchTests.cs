using System.Net;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// `phonetic` selects on a Patient what `name` selects, so its rows are stored once, under `name`
/// (SearchParam.RowsOf, issue #12): searches on it find what they found when it had rows of its own.
/// </summary>
[Collection("server")]
public sealed class SharedIndexRowsSearchTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    async Task<List<string>> IdsAsync(string query) =>
        (await Fhir.ExpectAsync<Bundle>(await _http.GetAsync(query), HttpStatusCode.OK)).Entry.Select(e => e.Resource.Id).ToList();

    [Fact]
    public async System.Threading.Tasks.Task Phonetic_searches_find_kanji_and_kana_names_and_follow_an_update()
    {
        var kana = "ヤマダ" + Fhir.Unique(""); // a name no other test uses
        var patient = new Patient
        {
            Name = [new HumanName { Family = "山田", Given = ["太郎"], Text = "山田 太郎" }, new HumanName { Family = kana, Given = ["タロウ"] }],
        };
        var created = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(patient)), HttpStatusCode.Created);

        // Folded like every string (half-width and hiragana find katakana), by prefix, :exact and :contains.
        var hiragana = "やまだ" + kana[3..];
        Assert.Equal([created.Id], await IdsAsync($"Patient?phonetic={Uri.EscapeDataString(hiragana)}"));
        Assert.Equal([created.Id], await IdsAsync($"Patient?phonetic:exact={Uri.EscapeDataString(kana)}"));
        Assert.Equal([created.Id], await IdsAsync($"Patient?phonetic:contains={Uri.EscapeDataString(kana[1..])}"));
        Assert.Equal([created.Id], await IdsAsync($"Patient?phonetic={Uri.EscapeDataString(kana)}&name={Uri.EscapeDataString(kana)}"));

        // An update replaces the rows: the old name is no longer found by either parameter, the new one by both.
        var renamed = "スズキ" + kana[3..];
        created.Name[1].Family = renamed;
        await Fhir.ExpectAsync<Patient>(await _http.PutAsync($"Patient/{created.Id}", Fhir.Json(created)), HttpStatusCode.OK);
        Assert.Empty(await IdsAsync($"Patient?phonetic:exact={Uri.EscapeDataString(kana)}"));
        Assert.Empty(await IdsAsync($"Patient?name:exact={Uri.EscapeDataString(kana)}"));
        Assert.Equal([created.Id], await IdsAsync($"Patient?phonetic:exact={Uri.EscapeDataString(renamed)}"));
    }
}
