using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace PhrFhir.MhdBench;

/// <summary>
/// One scenario: how to make the next request body and where to send it (<paramref name="Get"/>: a GET of Path, no body;
/// <paramref name="NextPath"/>, when given, picks the path of each request instead, e.g. a random patient's search).
/// </summary>
public sealed record Scenario(string Name, string Path, Func<string> Body, string What, bool Get = false, Func<string>? NextPath = null)
{
    public string PathOfNext() => NextPath?.Invoke() ?? Path;
}

/// <summary>The figures of one measured window.</summary>
public sealed record Result(string Scenario, int Clients, int Requests, double Seconds, double[] SortedMs, int Errors,
    string? FirstError, double ServerCpuPercent, double MachineBusyPercent)
{
    public double PerSecond => Requests / Seconds;
    public double P(int percentile) => SortedMs.Length == 0 ? 0
        : SortedMs[Math.Min(SortedMs.Length - 1, (int)Math.Ceiling(percentile / 100.0 * SortedMs.Length) - 1)]; // nearest rank
}

/// <summary>
/// Closed-loop clients: each sends its next request as soon as it has read the whole previous answer.
/// Latency is send → last byte read; every request counts, errors included.
/// </summary>
public static class Load
{
    public static async Task<Result> RunAsync(HttpClient http, Scenario scenario, int clients, TimeSpan warmup, TimeSpan duration, int serverPid, CancellationToken ct)
    {
        if (warmup > TimeSpan.Zero) await WindowAsync(http, scenario, clients, warmup, ct); // JIT, caches, connection pool
        var cpu0 = Proc.CpuSeconds(serverPid);
        var machine0 = Proc.MachineTicks();
        var sw = Stopwatch.StartNew();
        var samples = await WindowAsync(http, scenario, clients, duration, ct);
        var seconds = sw.Elapsed.TotalSeconds;
        var cpu = (Proc.CpuSeconds(serverPid) - cpu0) / seconds * 100;
        var machine = Proc.MachineTicks();
        var busy = machine.Total == machine0.Total ? 0 : 100.0 * (machine.Busy - machine0.Busy) / (machine.Total - machine0.Total);
        var ms = samples.Select(s => s.Ms).Order().ToArray();
        var errors = samples.Where(s => s.Error is not null).ToList();
        return new Result(scenario.Name, clients, samples.Count, seconds, ms, errors.Count, errors.FirstOrDefault().Error, cpu, busy);
    }

    /// <summary>Unmeasured load, for the warm-up pass over every scenario before the first measurement.</summary>
    public static Task WarmAsync(HttpClient http, Scenario scenario, int clients, TimeSpan duration, CancellationToken ct) =>
        WindowAsync(http, scenario, clients, duration, ct);

    /// <summary>One request, for the check before a scenario: status and the answer's start.</summary>
    public static async Task<(int Status, string Body, double Ms)> OnceAsync(HttpClient http, Scenario scenario, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        using var response = scenario.Get ? await http.GetAsync(scenario.PathOfNext(), ct) : await http.PostAsync(scenario.PathOfNext(), Content(scenario.Body()), ct);
        var body = await response.Content.ReadAsStringAsync(ct);
        return ((int)response.StatusCode, body, sw.Elapsed.TotalMilliseconds);
    }

    static StringContent Content(string json) => new(json, Encoding.UTF8, "application/fhir+json");

    readonly record struct Sample(double Ms, string? Error);

    static async Task<List<Sample>> WindowAsync(HttpClient http, Scenario scenario, int clients, TimeSpan duration, CancellationToken ct)
    {
        var until = Stopwatch.StartNew();
        var all = new List<Sample>();
        var workers = Enumerable.Range(0, clients).Select(_ => Task.Run(async () =>
        {
            var mine = new List<Sample>();
            while (until.Elapsed < duration && !ct.IsCancellationRequested)
            {
                var body = scenario.Body(); // built before the clock starts: the bench's own work is not the server's latency
                var path = scenario.PathOfNext();
                var t = Stopwatch.GetTimestamp();
                string? error = null;
                try
                {
                    using var response = scenario.Get ? await http.GetAsync(path, ct) : await http.PostAsync(path, Content(body), ct);
                    var answer = await response.Content.ReadAsByteArrayAsync(ct);
                    if (!response.IsSuccessStatusCode)
                        error = $"{(int)response.StatusCode}: {Encoding.UTF8.GetString(answer, 0, Math.Min(answer.Length, 600))}";
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested) { break; }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { error = e.GetType().Name + ": " + e.Message; }
                mine.Add(new Sample(Stopwatch.GetElapsedTime(t).TotalMilliseconds, error));
            }
            lock (all) all.AddRange(mine);
        }, ct)).ToArray();
        await Task.WhenAll(workers);
        return all;
    }
}

/// <summary>CPU figures from Linux /proc.</summary>
public static class Proc
{
    const double TicksPerSecond = 100; // USER_HZ on Linux

    /// <summary>User + system CPU seconds of one process.</summary>
    public static double CpuSeconds(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (long.Parse(f[11], CultureInfo.InvariantCulture) + long.Parse(f[12], CultureInfo.InvariantCulture)) / TicksPerSecond;
        }
        catch (IOException) { return 0; }
    }

    /// <summary>All CPUs, every process: busy and total ticks from the first line of /proc/stat.</summary>
    public static (long Busy, long Total) MachineTicks()
    {
        try
        {
            var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1)
                .Select(x => long.Parse(x, CultureInfo.InvariantCulture)).ToArray();
            var idle = f[3] + (f.Length > 4 ? f[4] : 0); // idle + iowait
            var total = f.Take(8).Sum();                  // user nice system idle iowait irq softirq steal
            return (total - idle, total);
        }
        catch (IOException) { return (0, 0); }
    }

    public static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
