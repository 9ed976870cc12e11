using System.Globalization;
using System.Text;

namespace PhrFhir.Bench;

/// <summary>The printed figures.</summary>
public static class Report
{
    public static string Table(IEnumerable<ScenarioResult> results)
    {
        var sb = new StringBuilder();
        sb.AppendLine("scenario             clients  requests     req/s   p50 ms   p95 ms   p99 ms  errors   cpu% of one core: server / postgres / bench   machine busy   cpu ms/req: server / postgres");
        sb.AppendLine("-------------------  -------  --------  --------  -------  -------  -------  ------   ------------------------------------------   ------------   -----------------------------");
        foreach (var r in results)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Scenario,-19}  {r.Clients,7}  {r.Requests,8}  {r.RequestsPerSecond,8:0.0}  {r.P50Ms,7:0.0}  {r.P95Ms,7:0.0}  {r.P99Ms,7:0.0}  {r.Errors,6}   {Cpu(r.ServerCpu),25} / {Cpu(r.PostgresCpu),8} / {r.BenchCpu,5:0}   {r.MachineBusy,11:0}%   {Ms(r.ServerCpuMsPerRequest),19} / {Ms(r.PostgresCpuMsPerRequest),8}"));
        return sb.ToString();
    }

    /// <summary>"-" where the bench cannot see the process (peer mode).</summary>
    static string Cpu(double percent) => double.IsNaN(percent) ? "-" : percent.ToString("0", CultureInfo.InvariantCulture);

    static string Ms(double ms) => double.IsNaN(ms) ? "-" : ms.ToString("0.00", CultureInfo.InvariantCulture);

    /// <summary>The table as tab-separated values with a header line, for bench/compare.sh.</summary>
    public static string Tsv(IEnumerable<ScenarioResult> results)
    {
        var sb = new StringBuilder("scenario\tclients\trequests\treq_s\tp50_ms\tp95_ms\tp99_ms\terrors\tserver_cpu\tmachine_busy\tserver_cpu_ms_per_req\tpostgres_cpu_ms_per_req\n");
        foreach (var r in results)
            sb.Append(string.Create(CultureInfo.InvariantCulture,
                $"{r.Scenario}\t{r.Clients}\t{r.Requests}\t{r.RequestsPerSecond:0.0}\t{r.P50Ms:0.0}\t{r.P95Ms:0.0}\t{r.P99Ms:0.0}\t{r.Errors}\t{Cpu(r.ServerCpu)}\t{r.MachineBusy:0}\t{Ms(r.ServerCpuMsPerRequest)}\t{Ms(r.PostgresCpuMsPerRequest)}\n"));
        return sb.ToString();
    }

    public static string Errors(IEnumerable<ScenarioResult> results)
    {
        var sb = new StringBuilder();
        foreach (var r in results.Where(r => r.Errors > 0))
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"errors in {r.Scenario} × {r.Clients}: {string.Join(", ", r.ErrorKinds.Select(k => $"{k.Key} × {k.Value}"))}");
            foreach (var (kind, sample) in r.ErrorSamples)
                sb.AppendLine(CultureInfo.InvariantCulture, $"  first {kind}: {sample}");
        }
        return sb.ToString();
    }

    public static string Mb(long? bytes) =>
        bytes is { } b ? string.Create(CultureInfo.InvariantCulture, $"{b / 1024.0 / 1024.0:0} MB") : "n/a";

    /// <summary>Warnings and failures the server logged during this run (ASP.NET Core simple console: "warn:", "fail:", "crit:").</summary>
    public static string ServerLog(string logFile, long fromOffset)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        var firsts = new List<string>();
        try
        {
            using var stream = new FileStream(logFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            stream.Seek(fromOffset, SeekOrigin.Begin);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            while (reader.ReadLine() is { } line)
            {
                var level = line.Length >= 5 ? line[..5] : "";
                if (level is not ("warn:" or "fail:" or "crit:")) continue;
                counts[level] = counts.GetValueOrDefault(level) + 1;
                if (firsts.Count < 5) firsts.Add(line.Length <= 400 ? line : line[..400] + "…");
            }
        }
        catch (IOException e) { return $"server log: could not read {logFile}: {e.Message}{Environment.NewLine}"; }
        var sb = new StringBuilder();
        sb.AppendLine(counts.Count == 0
            ? $"server log: no warnings or failures this run ({logFile})"
            : $"server log: {string.Join(", ", counts.Select(c => $"{c.Value} {c.Key.TrimEnd(':')}"))} this run ({logFile}); first ones:");
        foreach (var f in firsts) sb.AppendLine("  " + f);
        return sb.ToString();
    }
}
