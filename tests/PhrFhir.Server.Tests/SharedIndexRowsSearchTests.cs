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

    /// <summary>
    /// A name's family and given names and an address's city, state, postal code and country are stored once, as the rows of
    /// `family`, `given` and `address-*` (SearchParam.PartsIn): `name` and `address` find them as before, alone, with
    /// modifiers, with other criteria, sorted, chained, and after an update.
    /// </summary>
    [Fact]
    public async System.Threading.Tasks.Task Name_and_address_searches_find_the_parts_stored_under_family_given_and_address_parameters()
    {
        var family = "東海林" + Fhir.Unique("");
        Patient Make(string given, string city) => new()
        {
            Name = [new HumanName { Family = family, Given = [given], Text = $"{family} {given}" }],
            Address = [new Address { Line = ["西新宿2-8-1"], City = city, State = "東京都", PostalCode = "163-8001", Country = "JP" }],
        };
        var hanako = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(Make("花子", "新宿区" + family))), HttpStatusCode.Created);
        var akira = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(Make("あきら", "渋谷区" + family))), HttpStatusCode.Created);
        string E(string s) => Uri.EscapeDataString(s);
        var both = new[] { akira.Id, hanako.Id }.Order();

        Assert.Equal(both, (await IdsAsync($"Patient?name={E(family)}")).Order());
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?name={E(family)}&name=花子"));
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?name={E(family)}&given=花子"));
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?family={E(family)}&name=花"));
        Assert.Equal([akira.Id], await IdsAsync($"Patient?phonetic={E(family)}&phonetic=アキラ")); // folded: katakana finds hiragana
        Assert.Equal(both, (await IdsAsync($"Patient?name:exact={E(family)}")).Order());
        Assert.Empty(await IdsAsync($"Patient?name:exact={E(family[..3])}"));
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?name:contains={E(family[3..] + " 花")}")); // the text, still a name row
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?name={E(family)}&name:contains=花"));
        Assert.Equal(both, (await IdsAsync($"Patient?name={E(family)}&name:missing=false")).Order());
        Assert.Empty(await IdsAsync($"Patient?name={E(family)}&name:missing=true"));
        // Sorted by the smallest (descending: the largest) of a name's values, its parts included: あきら sorts before kanji,
        // 花子 after 東海林.
        Assert.Equal([akira.Id, hanako.Id], await IdsAsync($"Patient?name={E(family)}&_sort=name"));
        Assert.Equal([hanako.Id, akira.Id], await IdsAsync($"Patient?name={E(family)}&_sort=-name"));

        Assert.Equal([hanako.Id], await IdsAsync($"Patient?address={E("新宿区" + family)}"));
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?address-city={E("新宿区" + family)}"));
        Assert.Equal(both, (await IdsAsync($"Patient?name={E(family)}&address=jp&address=東京都&address=163-8001&address=西新宿")).Order());
        Assert.Empty(await IdsAsync($"Patient?name={E(family)}&address-country=us"));

        // A chain reads the same rows.
        var observation = new Observation { Status = ObservationStatus.Final, Code = new CodeableConcept("http://loinc.org", "8302-2"), Subject = new ResourceReference($"Patient/{hanako.Id}") };
        var stored = await Fhir.ExpectAsync<Observation>(await _http.PostAsync("Observation", Fhir.Json(observation)), HttpStatusCode.Created);
        Assert.Equal([stored.Id], await IdsAsync($"Observation?subject:Patient.name={E(family)}&subject:Patient.name=花子"));

        // An update replaces the parts' rows too.
        hanako.Name[0].Given = ["春子"];
        hanako.Address[0].City = "港区" + family;
        await Fhir.ExpectAsync<Patient>(await _http.PutAsync($"Patient/{hanako.Id}", Fhir.Json(hanako)), HttpStatusCode.OK);
        Assert.Empty(await IdsAsync($"Patient?name={E(family)}&name=花子"));
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?name={E(family)}&name=春子"));
        Assert.Empty(await IdsAsync($"Patient?address={E("新宿区" + family)}"));
        Assert.Equal([hanako.Id], await IdsAsync($"Patient?address={E("港区" + family)}"));
    }
}
