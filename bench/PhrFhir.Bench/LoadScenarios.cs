using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace PhrFhir.Bench;

/// <summary>The measured result of one scenario at one client count.</summary>
public sealed record ScenarioResult(
    string Scenario, int Clients, long Requests, TimeSpan Elapsed, double P50Ms, double P95Ms, double P99Ms,
    long Errors, IReadOnlyDictionary<string, long> ErrorKinds, IReadOnlyDictionary<string, string> ErrorSamples, double ServerCpu, double PostgresCpu, double BenchCpu, double MachineBusy)
{
    public double RequestsPerSecond => Requests / Elapsed.TotalSeconds;
    /// <summary>CPU milliseconds per request: the load-independent figure on a shared machine (NaN where not seen).</summary>
    public double ServerCpuMsPerRequest => ServerCpu / 100 * Elapsed.TotalSeconds * 1000 / Math.Max(1, Requests);
    public double PostgresCpuMsPerRequest => PostgresCpu / 100 * Elapsed.TotalSeconds * 1000 / Math.Max(1, Requests);
}

/// <summary>
/// Closed-loop load: N clients, each sending its next request as soon as the previous answer is
/// read in full, for a fixed time. Latency is send → last byte of the body, errors included.
/// </summary>
public sealed class LoadScenarios(HttpClient http, IReadOnlyList<string> patientIds, Rows? rows)
{
    /// <summary>Issue #12's five rows (the default), then the older scenarios of the 100k dataset.</summary>
    public static readonly string[] FiveRows = ["read", "create", "search", "iti65", "iti67"];
    public static readonly string[] Names = [.. FiveRows, "transaction", "search-observation"];

    /// <summary>Scenarios that read the 100k Patients + Observations dataset (<see cref="Dataset"/>).</summary>
    public static bool NeedsDataset(string scenario) => scenario is "search-observation";
    static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);
    int _mrn;
    readonly string _runTag = DateTime.UtcNow.ToString("yyMMddHHmmss", CultureInfo.InvariantCulture);

    string NextMrn() => $"L{_runTag}-{Interlocked.Increment(ref _mrn):D7}";

    /// <summary>One request of the scenario: method, path relative to the base, optional body.</summary>
    (HttpMethod Method, string Path, string? Body) Next(string scenario, Random rnd)
    {
        string Id() => patientIds[rnd.Next(patientIds.Count)];
        Rows Rows() => rows ?? throw new InvalidOperationException($"scenario {scenario} needs the rows data");
        return scenario switch
        {
            "read" => (HttpMethod.Get, "Patient/" + (rows is { ReadIds.Count: > 0 } ? rows.ReadIds[rnd.Next(rows.ReadIds.Count)] : Id()), null),
            "create" => (HttpMethod.Post, "Patient", JapaneseData.Patient(rnd, NextMrn())),
            "search" => (HttpMethod.Get, "Patient?family=" + Uri.EscapeDataString(JapaneseData.SearchFamilies[rnd.Next(JapaneseData.SearchFamilies.Length)].Kanji) + "&_count=10", null),
            "iti65" => (HttpMethod.Post, "", Rows().ProvideBundle(Rows().Iti65Patient)),
            "iti67" => (HttpMethod.Get, $"DocumentReference?patient=Patient/{Rows().Iti67Patient}&status=current&_count=10", null),
            "transaction" => (HttpMethod.Post, "", JapaneseData.PatientTransaction(rnd, 2, 4, NextMrn)),
            "search-observation" => (HttpMethod.Get, "Observation?subject=Patient/" + Id(), null),
            _ => throw new ArgumentOutOfRangeException(nameof(scenario), scenario, null),
        };
    }

    static HttpRequestMessage Request(string scenario, HttpMethod method, string path, string? body)
    {
        var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8);
            request.Content.Headers.ContentType = Dataset.FhirJson;
        }
        // ITI-65 as the issue measured it: the Document Source needs no copy of what it sent.
        if (scenario == "iti65") request.Headers.TryAddWithoutValidation("Prefer", "return=minimal");
        return request;
    }

    /// <summary>
    /// One request of the scenario, described (status, size, entries), so the reader sees that a search
    /// finds something: a benchmark of empty results would flatter the server.
    /// </summary>
    public async Task<string> ProbeAsync(string scenario, CancellationToken ct)
    {
        var (method, path, body) = Next(scenario, new Random(1));
        using var request = Request(scenario, method, path, body);
        using var resp = await http.SendAsync(request, ct);
        var bytes = await resp.Content.ReadAsByteArrayAsync(ct);
        var what = "";
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(bytes);
            var root = doc.RootElement;
            what = root.TryGetProperty("resourceType", out var rt) ? rt.GetString() ?? "" : "";
            if (root.TryGetProperty("entry", out var entries)) what += $" of {entries.GetArrayLength()} entries";
            if (root.TryGetProperty("total", out var total)) what += $", total {total.GetInt64()}";
        }
        catch (System.Text.Json.JsonException) { what = "not JSON"; }
        return $"{method} /{Uri.UnescapeDataString(path)} → {(int)resp.StatusCode}, {bytes.Length:N0} bytes, {what}";
    }

    public async Task<ScenarioResult> RunAsync(string scenario, int clients, TimeSpan warmup, TimeSpan duration,
        Func<(double Server, double Postgres)> cpu, CancellationToken ct)
    {
        if (warmup > TimeSpan.Zero) await LoopAsync(scenario, clients, warmup, ct);
        var (srv0, pg0) = cpu();
        var bench0 = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
        var machine0 = ProcFs.MachineCpu();
        var sw = Stopwatch.StartNew();
        var workers = await LoopAsync(scenario, clients, duration, ct);
        var elapsed = sw.Elapsed;
        var (srv1, pg1) = cpu();
        var bench1 = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
        var machine1 = ProcFs.MachineCpu();
        var machineBusy = 100.0 * (machine1.Busy - machine0.Busy) / Math.Max(1, machine1.Total - machine0.Total);

        var latencies = workers.SelectMany(w => w.LatencyTicks).ToArray();
        Array.Sort(latencies);
        var kinds = new Dictionary<string, long>(StringComparer.Ordinal);
        var samples = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var w in workers)
        {
            foreach (var (k, n) in w.ErrorKinds)
                kinds[k] = kinds.GetValueOrDefault(k) + n;
            foreach (var (k, text) in w.ErrorSamples)
                samples.TryAdd(k, text);
        }
        double Pct(double p) => latencies.Length == 0 ? double.NaN
            : latencies[Math.Clamp((int)Math.Ceiling(p / 100 * latencies.Length) - 1, 0, latencies.Length - 1)] * 1000.0 / Stopwatch.Frequency;
        double Share(double seconds) => seconds / elapsed.TotalSeconds * 100; // % of one core
        return new ScenarioResult(scenario, clients, latencies.Length, elapsed, Pct(50), Pct(95), Pct(99),
            kinds.Values.Sum(), kinds, samples, Share(srv1 - srv0), Share(pg1 - pg0), Share(bench1 - bench0), machineBusy);
    }

    sealed class Worker
    {
        public List<long> LatencyTicks { get; } = new(4096);
        public Dictionary<string, long> ErrorKinds { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, string> ErrorSamples { get; } = new(StringComparer.Ordinal);
        public void Error(string kind, string sample)
        {
            ErrorKinds[kind] = ErrorKinds.GetValueOrDefault(kind) + 1;
            ErrorSamples.TryAdd(kind, sample);
        }
    }

    async Task<Worker[]> LoopAsync(string scenario, int clients, TimeSpan duration, CancellationToken ct)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var workers = Enumerable.Range(0, clients).Select(_ => new Worker()).ToArray();
        await Task.WhenAll(workers.Select((w, i) => Task.Run(async () =>
        {
            var rnd = new Random(HashCode.Combine(scenario, clients, i, Environment.TickCount));
            while (Stopwatch.GetTimestamp() < deadline)
            {
                ct.ThrowIfCancellationRequested();
                var (method, path, body) = Next(scenario, rnd);
                using var request = Request(scenario, method, path, body);
                var start = Stopwatch.GetTimestamp();
                try
                {
                    using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    cts.CancelAfter(RequestTimeout);
                    using var resp = await http.SendAsync(request, HttpCompletionOption.ResponseContentRead, cts.Token);
                    if (!resp.IsSuccessStatusCode)
                        w.Error(((int)resp.StatusCode).ToString(CultureInfo.InvariantCulture),
                            $"{method} /{path} → {Dataset.Trim(await resp.Content.ReadAsStringAsync(CancellationToken.None))}");
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    w.Error("timeout", $"{method} /{path}: no answer within {RequestTimeout.TotalSeconds:0} s");
                }
                catch (HttpRequestException e) { w.Error("http:" + e.HttpRequestError, $"{method} /{path}: {e.Message}"); }
                w.LatencyTicks.Add(Stopwatch.GetTimestamp() - start);
            }
        }, ct)));
        return workers;
    }
}
