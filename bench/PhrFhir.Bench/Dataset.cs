using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace PhrFhir.Bench;

/// <summary>
/// The persistent 100k dataset: counting what is there, topping it up with transaction Bundles of 100
/// entries (20 Patients + 80 Observations) from 4 concurrent senders, and finding Patient ids that
/// have Observations for the read and search scenarios.
/// </summary>
public sealed class Dataset(HttpClient http)
{
    public const int TargetResources = 100_000;
    const int PatientsPerBundle = 20, ObservationsEach = 4, Senders = 4;
    public static readonly MediaTypeHeaderValue FhirJson = new("application/fhir+json") { CharSet = "utf-8" };

    public async Task<long> CountAsync(string type, CancellationToken ct)
    {
        using var resp = await http.GetAsync($"{type}?_summary=count", ct);
        var body = await resp.Content.ReadAsStringAsync(ct);
        if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"GET {type}?_summary=count answered {(int)resp.StatusCode}: {Trim(body)}");
        using var doc = JsonDocument.Parse(body);
        return doc.RootElement.TryGetProperty("total", out var t) ? t.GetInt64()
            : throw new InvalidOperationException($"GET {type}?_summary=count has no total: {Trim(body)}");
    }

    public sealed record SeedResult(int Bundles, int FailedBundles, long Resources, TimeSpan Took, List<string> PatientIds, List<string> Failures);

    /// <summary>Sends enough 100-entry transactions to bring the total to at least <see cref="TargetResources"/>.</summary>
    public async Task<SeedResult> SeedAsync(long existing, CancellationToken ct)
    {
        var perBundle = PatientsPerBundle * (1 + ObservationsEach);
        var bundles = (int)((TargetResources - existing + perBundle - 1) / perBundle);
        var ids = new ConcurrentBag<string>();
        var failures = new ConcurrentQueue<string>();
        var next = -1;
        var done = 0;
        var failed = 0;
        var runTag = DateTime.UtcNow.ToString("yyMMddHHmmss", System.Globalization.CultureInfo.InvariantCulture);
        var mrn = 0;
        string NextMrn() => $"S{runTag}-{Interlocked.Increment(ref mrn):D6}";

        var sw = Stopwatch.StartNew();
        using var progressCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var progress = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    await Task.Delay(TimeSpan.FromSeconds(10), progressCts.Token);
                    var d = Volatile.Read(ref done);
                    Console.WriteLine($"  … {d}/{bundles} bundles, {d * perBundle / sw.Elapsed.TotalSeconds:0} resources/s");
                }
            }
            catch (OperationCanceledException) { }
        }, CancellationToken.None);

        async Task Sender(int seed)
        {
            var rnd = new Random(seed);
            int i;
            while ((i = Interlocked.Increment(ref next)) < bundles)
            {
                ct.ThrowIfCancellationRequested();
                if (Volatile.Read(ref failed) > Math.Max(10, bundles / 10))
                    throw new InvalidOperationException($"seeding stopped: {failed} transaction Bundles failed; first: {failures.FirstOrDefault()}");
                var body = JapaneseData.PatientTransaction(rnd, PatientsPerBundle, ObservationsEach, NextMrn);
                try
                {
                    using var content = new StringContent(body, Encoding.UTF8);
                    content.Headers.ContentType = FhirJson;
                    using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    cts.CancelAfter(TimeSpan.FromMinutes(5));
                    using var resp = await http.PostAsync("", content, cts.Token);
                    var text = await resp.Content.ReadAsStringAsync(cts.Token);
                    if (!resp.IsSuccessStatusCode)
                    {
                        Interlocked.Increment(ref failed);
                        failures.Enqueue($"{(int)resp.StatusCode}: {Trim(text)}");
                        continue;
                    }
                    foreach (var id in PatientIdsFromLocations(text)) ids.Add(id);
                }
                catch (Exception e) when (e is HttpRequestException || (e is OperationCanceledException && !ct.IsCancellationRequested))
                {
                    Interlocked.Increment(ref failed);
                    failures.Enqueue(e is OperationCanceledException ? "timeout after 5 min" : e.Message);
                    continue;
                }
                Interlocked.Increment(ref done);
            }
        }

        try
        {
            await Task.WhenAll(Enumerable.Range(0, Senders).Select(s => Task.Run(() => Sender(1000 + s), ct)));
        }
        finally
        {
            await progressCts.CancelAsync();
            await progress;
        }
        return new SeedResult(bundles, failed, (long)done * perBundle, sw.Elapsed, [.. ids], [.. failures]);
    }

    static IEnumerable<string> PatientIdsFromLocations(string transactionResponse)
    {
        using var doc = JsonDocument.Parse(transactionResponse);
        var result = new List<string>();
        if (!doc.RootElement.TryGetProperty("entry", out var entries)) return result;
        foreach (var e in entries.EnumerateArray())
            if (e.TryGetProperty("response", out var r) && r.TryGetProperty("location", out var loc)
                && loc.GetString() is { } l && l.StartsWith("Patient/", StringComparison.Ordinal))
                result.Add(l.Split('/')[1]);
        return result;
    }

    /// <summary>
    /// Patient ids that have Observations, from the subjects of up to <paramref name="pages"/> pages of
    /// Observations (used when this run did not seed, e.g. on the second run over the same dataset).
    /// </summary>
    public async Task<List<string>> PatientsWithObservationsAsync(int pages, CancellationToken ct)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (var page = 0; page < pages; page++)
        {
            using var resp = await http.GetAsync($"Observation?_count=1000&_offset={page * 1000}", ct);
            var body = await resp.Content.ReadAsStringAsync(ct);
            if (!resp.IsSuccessStatusCode) throw new InvalidOperationException($"GET Observation page {page} answered {(int)resp.StatusCode}: {Trim(body)}");
            using var doc = JsonDocument.Parse(body);
            if (!doc.RootElement.TryGetProperty("entry", out var entries) || entries.GetArrayLength() == 0) break;
            foreach (var e in entries.EnumerateArray())
                if (e.TryGetProperty("resource", out var r) && r.TryGetProperty("subject", out var s)
                    && s.TryGetProperty("reference", out var reference) && reference.GetString() is { } refText
                    && refText.StartsWith("Patient/", StringComparison.Ordinal))
                    ids.Add(refText["Patient/".Length..]);
        }
        return [.. ids];
    }

    public static string Trim(string text)
    {
        var oneLine = text.ReplaceLineEndings(" ");
        return oneLine.Length <= 300 ? oneLine : oneLine[..300] + "…";
    }
}
