using System.Net;
using Hl7.Fhir.Model;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests;

/// <summary>
/// A search on one string prefix (Patient?family=…) pages in the order of its index — the matched value (folded),
/// then the id — and reads only the page's rows (FhirStore.OrderedByValue, Schema/024, docs/storage.md "Search SQL").
/// Over Patients of the fixture's institution whose family names all start with one run-unique prefix: some with two
/// matching names (listed once, at the smaller value), one with the same name twice, and 3 of another institution
/// (never listed, never counted); `name=` also finds two that only it matches, by a given name (the rows of `given`) and
/// by a name's text (its own rows): its three ranges are merged in the same order (SearchParam.PartsIn).
/// </summary>
[Collection("server")]
public sealed class SearchOrderedByValueTests(ServerFixture server)
{
    // Values after the common prefix, as created (mixed case: the order is of the folded value).
    static readonly string[] Suffixes = ["c", "A", "b", "a2", "B1", "d"];
    const int PerSuffix = 4;

    sealed record Seed(string Prefix, Dictionary<string, string> FirstValue, HashSet<string> TwoNames, string SameNameTwice, Dictionary<string, string> NameOnly);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server);

        static async Task<Seed> CreateAsync(ServerFixture server)
        {
            var prefix = Fhir.Unique("ord") + "-";
            var first = new Dictionary<string, string>(); // "Patient/id" → its smallest matching folded value
            var twoNames = new HashSet<string>();
            async Task<string> Create(HttpClient http, params string[] families) =>
                await CreatePatient(http, new Patient { Name = [.. families.Select(f => new HumanName { Family = prefix + f })] });
            async Task<string> CreatePatient(HttpClient http, Patient p)
            {
                var created = await Fhir.ExpectAsync<Patient>(await http.PostAsync("Patient", Fhir.Json(p)), HttpStatusCode.Created);
                return "Patient/" + created.Id;
            }
            foreach (var suffix in Suffixes)
                for (var i = 0; i < PerSuffix; i++)
                    first[await Create(server.Http, suffix)] = suffix.ToLowerInvariant();
            // Two matching names: listed once, where its smaller value sorts ("b" < "d"), whichever name comes first.
            for (var i = 0; i < 3; i++)
            {
                var key = await Create(server.Http, "d", "b");
                first[key] = "b";
                twoNames.Add(key);
            }
            // The same value twice (two names with one family): one match.
            var same = await Create(server.Http, "c", "C");
            first[same] = "c";
            using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
            for (var i = 0; i < 3; i++) await Create(other, "a");
            var nameOnly = new Dictionary<string, string>
            {
                [await CreatePatient(server.Http, new Patient { Name = [new HumanName { Family = Fhir.Unique("other"), Given = [prefix + "B0"] }] })] = "b0",
                [await CreatePatient(server.Http, new Patient { Name = [new HumanName { Text = prefix + "a3" }] })] = "a3",
            };
            return new Seed(prefix, first, twoNames, same, nameOnly);
        }
    }

    /// <summary>The order the server promises: folded value (ordinal), then the id (ordinal, as the key's collation orders "Patient/…").</summary>
    static List<string> Expected(Seed seed, string param = "family") =>
        [.. seed.FirstValue.Concat(param == "name" ? seed.NameOnly : []).OrderBy(kv => kv.Value, StringComparer.Ordinal).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key)];

    async Task<(List<string> Keys, List<int?> Totals, int Pages)> AllPagesAsync(string query)
    {
        var keys = new List<string>();
        var totals = new List<int?>();
        string? url = query;
        var pages = 0;
        while (url is not null && pages++ < 50)
        {
            var bundle = await SearchHttp.GetAsync(server.Http, url);
            keys.AddRange(SearchHttp.Matches(bundle));
            totals.Add(bundle.Total);
            url = bundle.Link.FirstOrDefault(l => l.Relation == "next")?.Url;
        }
        return (keys, totals, pages);
    }

    [Theory]
    [InlineData("family", 5)]
    [InlineData("family", 7)]
    [InlineData("family", 100)]
    [InlineData("name", 4)]
    [InlineData("name", 100)]
    public async Task Pages_follow_the_matched_value_then_the_id_and_list_every_match_exactly_once(string param, int count)
    {
        var seed = await SeedAsync();
        var expected = Expected(seed, param);
        var (keys, _, pages) = await AllPagesAsync($"Patient?{param}={Uri.EscapeDataString(seed.Prefix)}&_count={count}");
        var duplicates = keys.GroupBy(k => k).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(duplicates.Count == 0, $"_count={count}: listed twice across pages: {string.Join(", ", duplicates)}");
        Assert.True(keys.SequenceEqual(expected),
            $"_count={count}: expected {expected.Count} matches in value-then-id order, got {keys.Count}; first difference at " +
            $"{keys.Zip(expected).TakeWhile(p => p.First == p.Second).Count()}");
        Assert.Equal((expected.Count + count - 1) / count, pages);
    }

    [Fact]
    public async Task A_patient_with_two_matching_names_is_listed_once_at_its_smaller_value()
    {
        var seed = await SeedAsync();
        var (keys, _, _) = await AllPagesAsync($"Patient?family={Uri.EscapeDataString(seed.Prefix)}&_count=3");
        foreach (var key in seed.TwoNames.Append(seed.SameNameTwice))
            Assert.True(keys.Count(k => k == key) == 1, $"{key} listed {keys.Count(k => k == key)} times");
        // Its place is among the "b" values: after every "a…" match and before every "c".
        var expected = Expected(seed);
        foreach (var key in seed.TwoNames) Assert.Equal(expected.IndexOf(key), keys.IndexOf(key));
        // A narrower prefix that matches only its other name still finds it, there.
        var onlyD = await SearchHttp.GetAsync(server.Http, $"Patient?family={Uri.EscapeDataString(seed.Prefix + "d")}&_count=50");
        Assert.True(seed.TwoNames.IsSubsetOf(SearchHttp.Matches(onlyD)), "family=<prefix>d misses the Patients whose other name is <prefix>b");
        Assert.Equal(PerSuffix + seed.TwoNames.Count, onlyD.Total);
    }

    public static TheoryData<string, bool> TotalModes => new()
    {
        // suffix, whether Bundle.total is given on a first page that is not the last
        { "", true },                   // default: counted, under the bound
        { "&_total=accurate", true },
        { "&_total=estimate", true },
        { "&_total=none", false },
    };

    [Theory]
    [MemberData(nameof(TotalModes))]
    public async Task Totals_count_each_visible_patient_once_in_every_mode(string suffix, bool given)
    {
        var seed = await SeedAsync();
        var first = await SearchHttp.GetAsync(server.Http, $"Patient?family={Uri.EscapeDataString(seed.Prefix)}&_count=5{suffix}");
        Assert.Equal(5, first.Entry.Count);
        Assert.True(first.Total == (given ? seed.FirstValue.Count : null),
            $"'{suffix}': expected total {(given ? seed.FirstValue.Count : "absent")}, got {first.Total?.ToString() ?? "absent"}");
        var count = await SearchHttp.GetAsync(server.Http, $"Patient?family={Uri.EscapeDataString(seed.Prefix)}&_summary=count");
        Assert.Equal(seed.FirstValue.Count, count.Total);
    }

    [Fact]
    public async Task The_other_institution_sees_only_its_own_patients_under_the_same_prefix()
    {
        var seed = await SeedAsync();
        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var theirs = await SearchHttp.GetAsync(other, $"Patient?family={Uri.EscapeDataString(seed.Prefix)}&_count=2");
        Assert.Equal(2, theirs.Entry.Count);
        Assert.Equal(3, theirs.Total);
        Assert.DoesNotContain(SearchHttp.Matches(theirs), seed.FirstValue.ContainsKey);
    }
}
