using System.Net;
using Hl7.Fhir.Model;
using PhrFhir.Server.Rest;
using PhrFhir.Storage.Search;
using Task = System.Threading.Tasks.Task;

namespace PhrFhir.Server.Tests;

/// <summary>
/// How Bundle.total is given (docs/storage.md "Totals", CapabilityStatement rest.documentation): without
/// _total it is exact up to <see cref="SearchQuery.CountedTotalLimit"/> matches and left out beyond, with the
/// next link telling there are more; _total=accurate/estimate and _summary=count count every match; _total=none
/// none. Over one set of CountedTotalLimit + 5 tagged Patients of the fixture's institution, and 3 more with the
/// same tag written by another institution, which no count may include.
/// </summary>
[Collection("server")]
public sealed class SearchTotalTests(ServerFixture server)
{
    const int Mine = SearchQuery.CountedTotalLimit + 5;
    const int Others = 3;
    // Of the institution's Patients, every 100th has this family (11 of them), as do the other institution's 3.
    const int Tanaka = (Mine + 99) / 100;

    sealed record Seed(string Run);

    static Task<Seed>? _seed;
    static readonly Lock Gate = new();

    Task<Seed> SeedAsync()
    {
        lock (Gate) return _seed ??= CreateAsync(server);

        static async Task<Seed> CreateAsync(ServerFixture server)
        {
            var run = Fhir.Unique("total");
            // Given the run's name too: `given=<run>` is a search on one string prefix, paged in its index's order (FhirStore.OrderedByValue).
            Patient Patient(int i) => new() { Meta = SearchHttp.Tag(run), Name = [new HumanName { Family = i % 100 == 0 ? "Tanaka" : "Suzuki", Given = [run] }] };
            // Transactions of 200 entries (the test server's limit): a thousand single creates would take minutes on a loaded machine.
            foreach (var chunk in Enumerable.Range(0, Mine).Chunk(200))
                await TransactionAsync(server.Http, chunk.Select(Patient));
            using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
            await TransactionAsync(other, Enumerable.Range(0, Others).Select(_ => Patient(0)));
            return new Seed(run);
        }

        static async Task TransactionAsync(HttpClient http, IEnumerable<Patient> patients)
        {
            var bundle = new Bundle { Type = Bundle.BundleType.Transaction };
            foreach (var p in patients)
                bundle.Entry.Add(new Bundle.EntryComponent
                {
                    FullUrl = "urn:uuid:" + Guid.NewGuid(),
                    Resource = p,
                    Request = new Bundle.RequestComponent { Method = Bundle.HTTPVerb.POST, Url = "Patient" },
                });
            await Fhir.ExpectAsync<Bundle>(await http.PostAsync("", Fhir.Json(bundle)), HttpStatusCode.OK);
        }
    }

    async Task<Bundle> SearchAsync(string suffix, HttpClient? http = null) =>
        await SearchHttp.GetAsync(http ?? server.Http, $"Patient?{SearchHttp.TagParam((await SeedAsync()).Run)}{suffix}");

    static bool HasNext(Bundle b) => b.Link.Any(l => l.Relation == "next");

    [Fact]
    public async Task Beyond_the_counted_limit_the_default_total_is_left_out_and_the_next_link_tells_there_are_more()
    {
        var first = await SearchAsync("&_count=10");
        Assert.True(first.Total is null, $"expected no total beyond {SearchQuery.CountedTotalLimit} matches, got {first.Total}");
        Assert.Equal(10, first.Entry.Count);
        Assert.True(HasNext(first), "the first page of more than a thousand matches has no next link");

        // The same with a sort (a page read from the documents, counted on its own).
        var sorted = await SearchAsync("&_count=10&_sort=family");
        Assert.True(sorted.Total is null, $"sorted: expected no total, got {sorted.Total}");
        Assert.True(HasNext(sorted), "sorted: no next link");
    }

    [Fact]
    public async Task A_search_on_one_string_prefix_counts_the_same_way_beyond_the_limit()
    {
        var run = (await SeedAsync()).Run;
        var first = await SearchHttp.GetAsync(server.Http, $"Patient?given={run}&_count=10");
        Assert.True(first.Total is null, $"expected no total beyond {SearchQuery.CountedTotalLimit} matches, got {first.Total}");
        Assert.Equal(10, first.Entry.Count);
        Assert.True(HasNext(first), "the first page of more than a thousand matches has no next link");

        var accurate = await SearchHttp.GetAsync(server.Http, $"Patient?given={run}&_count=10&_total=accurate");
        Assert.Equal(Mine, accurate.Total);
        Assert.Equal(SearchHttp.Matches(first), SearchHttp.Matches(accurate)); // the same order whatever the total mode

        var last = await SearchHttp.GetAsync(server.Http, $"Patient?given={run}&_count=10&_offset={Mine - 5}");
        Assert.Equal(5, last.Entry.Count);
        Assert.Equal(Mine, last.Total);
        Assert.False(HasNext(last), "the last page has a next link");

        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var theirs = await SearchHttp.GetAsync(other, $"Patient?given={run}&_count=10");
        Assert.Equal(Others, theirs.Total);
    }

    [Fact]
    public async Task The_last_page_carries_the_exact_total_for_free()
    {
        var last = await SearchAsync($"&_count=10&_offset={Mine - 5}");
        Assert.Equal(5, last.Entry.Count);
        Assert.Equal(Mine, last.Total);
        Assert.False(HasNext(last), "the last page has a next link");

        var past = await SearchAsync($"&_count=10&_offset={Mine + 100}");
        Assert.Empty(past.Entry);
        Assert.Equal(Mine, past.Total); // counted on its own, up to the end of the page asked for
        Assert.False(HasNext(past), "a page past the end has a next link");
    }

    public static TheoryData<string, int?, int> Requested => new()
    {
        // query suffix, expected Bundle.total, expected entries
        { "&_count=10&_total=accurate", Mine, 10 },
        { "&_count=10&_sort=-family&_total=accurate", Mine, 10 },
        { "&_count=10&_total=estimate", Mine, 10 },
        { "&_summary=count", Mine, 0 },
        { "&_count=10&_total=none", null, 10 },
        { $"&_count=10&_offset={Mine - 5}&_total=none", null, 5 },
    };

    [Theory]
    [MemberData(nameof(Requested))]
    public async Task Total_accurate_estimate_and_summary_count_count_every_visible_match_and_none_counts_nothing(string suffix, int? total, int entries)
    {
        var bundle = await SearchAsync(suffix);
        Assert.True(bundle.Total == total, $"{suffix}: expected total {total?.ToString() ?? "absent"}, got {bundle.Total?.ToString() ?? "absent"}");
        Assert.True(bundle.Entry.Count == entries, $"{suffix}: expected {entries} entries, got {bundle.Entry.Count}");
        if (entries == 10) Assert.True(HasNext(bundle), $"{suffix}: no next link");
    }

    [Theory]
    [InlineData("&family=tanaka&_count=5")]                 // key sets: counted with the page
    [InlineData("&family=tanaka&_count=5&_sort=-_id")]      // sorted: counted on its own
    [InlineData("&family=tanaka&_count=5&_total=accurate")]
    public async Task Under_the_counted_limit_the_default_total_is_exact_and_counts_only_what_the_requester_may_read(string suffix)
    {
        var mine = await SearchAsync(suffix);
        Assert.True(mine.Total == Tanaka, $"{suffix}: expected total {Tanaka}, got {mine.Total?.ToString() ?? "absent"}");
        Assert.Equal(5, mine.Entry.Count);
        Assert.True(HasNext(mine), $"{suffix}: no next link");

        using var other = await server.ClientAsync(ServerFixture.OtherInstitutionClient);
        var theirs = await SearchAsync(suffix, other);
        Assert.True(theirs.Total == Others, $"{suffix}: the other institution's total is {theirs.Total?.ToString() ?? "absent"}, expected {Others}");
        Assert.False(HasNext(theirs), $"{suffix}: the other institution's only page has a next link");
    }

    [Fact]
    public async Task The_CapabilityStatement_says_how_totals_are_given()
    {
        var cs = await Fhir.ExpectAsync<CapabilityStatement>(await server.Anonymous.GetAsync("metadata"), HttpStatusCode.OK);
        Assert.Contains(CapabilityStatementBuilder.SearchTotals, cs.Rest[0].Documentation?.ToString() ?? "");
        Assert.Contains("_total=accurate", CapabilityStatementBuilder.SearchTotals);
        Assert.Contains("paged by the matched value", CapabilityStatementBuilder.SearchTotals); // the one-string-value order and its bound
    }
}
