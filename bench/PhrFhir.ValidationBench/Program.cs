// Validation benchmark (issue 6): cold start, warm HS037 throughput on 1 and 2 threads, latency, memory.
// Usage: dotnet run -c Release --project bench/PhrFhir.ValidationBench [-- --seconds 20 --cache data/conformance-cache --ref ../shared/ref
//        --packages data/fhir-packages]   (--ref: the folder the packages are restored from, and the default document)
//        [--document examples/documents/HS037-checkup-report.json]   (default: the official HS037 Sample-01)
//        [--families ihe-mhd,r4-core]   (only these families: docs/validation.md; e.g. for an ITI-65 ProvideBundle)
// Cold start is measured from process start to the first HS037 validation answered, with the
// conformance cache already built (run once first); the first run after a package change also
// prints the cache build time.
using System.Diagnostics;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.Extensions.Logging;
using PhrFhir.Validation;

var seconds = Arg("--seconds", 15);
var cache = ArgS("--cache", Path.Combine(RepoRoot(), "data", "conformance-cache"));
var reference = ArgS("--ref", FindSharedRef(Directory.GetCurrentDirectory()) ?? "");
var packages = ArgS("--packages", Path.Combine(RepoRoot(), "data", "fhir-packages"));
using var loggerFactory = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
var sample = ArgS("--document", Path.Combine(reference, "jp-documents/echeckup/package/Bundle-Bundle-eCheckupReport-Sample-01.json"));
if (!File.Exists(sample)) { Console.Error.WriteLine($"HS037 document not found: {sample} (pass --ref or --document)"); return 2; }
Console.WriteLine($"document: {sample}");

var processStart = Process.GetCurrentProcess().StartTime.ToUniversalTime();
var created = Stopwatch.StartNew();
using var validator = await DocumentValidator.CreateAsync(new ValidationOptions
{
    Packages = new PhrFhir.Validation.Packages.PackageOptions { Sources = [reference], Downloads = false, Cache = packages },
    CacheFolder = cache,
    Families = ArgS("--families", "") is { Length: > 0 } only ? only.Split(',') : [],
}, loggerFactory.CreateLogger("validation"));
var createMs = created.ElapsedMilliseconds;
var bundle = new FhirJsonDeserializer(new DeserializerSettings()).DeserializeResource(File.ReadAllText(sample));
var first = await validator.ValidateAsync(bundle);
var cold = DateTime.UtcNow - processStart;
Console.WriteLine($"cold start (process start -> first HS037 answered): {cold.TotalSeconds:F2} s  (CreateAsync {createMs} ms; first outcome {first.Issue.Count(i => i.Severity <= OperationOutcome.IssueSeverity.Error)} errors)");
await validator.WhenReadyAsync();
Console.WriteLine($"all families ready: {(DateTime.UtcNow - processStart).TotalSeconds:F2} s  [{string.Join(", ", validator.Families.Select(f => $"{f.Id}={f.State}"))}]");

// Warm-up of the JIT and caches before measuring.
for (var i = 0; i < 5; i++) await validator.ValidateAsync(bundle);

foreach (var threads in new[] { 1, 2 })
{
    var latencies = new List<double>();
    var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
    var sw = Stopwatch.StartNew();
    var until = TimeSpan.FromSeconds(seconds);
    var workers = Enumerable.Range(0, threads).Select(_ => System.Threading.Tasks.Task.Run(async () =>
    {
        var mine = new List<double>();
        while (sw.Elapsed < until)
        {
            var t = Stopwatch.GetTimestamp();
            await validator.ValidateAsync(bundle);
            mine.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
        }
        lock (latencies) latencies.AddRange(mine);
    })).ToArray();
    await System.Threading.Tasks.Task.WhenAll(workers);
    var elapsed = sw.Elapsed.TotalSeconds;
    var cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalMilliseconds / latencies.Count;
    latencies.Sort();
    Console.WriteLine($"warm HS037 on {threads} thread(s): {latencies.Count / elapsed:F1} validations/s, p50 {Pct(latencies, 50):F0} ms, p95 {Pct(latencies, 95):F0} ms, CPU {cpu:F2} ms per validation ({latencies.Count} in {elapsed:F1} s)");
}
GC.Collect();
var proc = Process.GetCurrentProcess();
Console.WriteLine($"memory: working set {proc.WorkingSet64 / 1048576} MB, peak {proc.PeakWorkingSet64 / 1048576} MB, managed heap {GC.GetTotalMemory(false) / 1048576} MB");
Console.WriteLine($"machine: {Environment.ProcessorCount} cores, load average {LoadAverage()}");
return 0;

static double Pct(List<double> sorted, int p) => sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p / 100.0 * sorted.Count) - 1)];
static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
int Arg(string name, int fallback) => int.TryParse(ArgS(name, ""), out var v) ? v : fallback;
string ArgS(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
static string RepoRoot()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "PhrFhir.sln"))) return dir.FullName;
    return Directory.GetCurrentDirectory();
}
// This project's official reference data (../shared/ref): a benchmark input, not something the server looks for.
static string? FindSharedRef(string start)
{
    for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        if (Directory.Exists(Path.Combine(dir.FullName, "shared", "ref"))) return Path.Combine(dir.FullName, "shared", "ref");
    return null;
}
