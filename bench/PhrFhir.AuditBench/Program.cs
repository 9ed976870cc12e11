// What authorisation and audit cost an ITI-67 Find Document References
// (GET /DocumentReference?patient.identifier=…&status=current): the same build, the same data, the server
// started in turn with them on and with Bench:AuthAndAuditOff=true (loopback only), measured alike. The
// switch exists only in the Bench build of the server (dotnet build -c Bench; a Release server refuses to
// start with it), so both modes run that build.
// Order on → off → on (→ off → on … with --rounds N), so a drift of the machine over time (the 2 cores are
// shared) shows as a difference between runs of the same mode; the medians are compared. Target (issue #7):
// ≤ 20 % added latency.
//
//   bash bench/run.sh --audit [options]     (builds both, then runs this)
//   dotnet build -c Bench src/PhrFhir.Server && dotnet run -c Release --project bench/PhrFhir.AuditBench -- [options]
//   --seconds N (15)  --warmup N (5)  --clients 1,2  --documents N (20)  --rounds N (1)  --server-dll …/PhrFhir.Server.dll
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using PhrFhir.MhdBench;

var repoRoot = RepoRoot();
var seconds = double.Parse(Arg("--seconds", "15"), CultureInfo.InvariantCulture);
var warmup = double.Parse(Arg("--warmup", "5"), CultureInfo.InvariantCulture);
var clientCounts = Arg("--clients", "1,2").Split(',').Select(int.Parse).ToArray();
var documents = int.Parse(Arg("--documents", "20"), CultureInfo.InvariantCulture);
var rounds = int.Parse(Arg("--rounds", "1"), CultureInfo.InvariantCulture);
var serverDll = Path.GetFullPath(Arg("--server-dll", Path.Combine(repoRoot, "src/PhrFhir.Server/bin/Bench/net10.0/PhrFhir.Server.dll")));
if (!File.Exists(serverDll)) { Console.Error.WriteLine($"{serverDll} not found: dotnet build -c Bench src/PhrFhir.Server"); return 2; }
var document = new Hs037Document(Path.Combine(repoRoot, "examples/documents/HS037-checkup-report.json"));
var identifier = $"{(string)document.Patient["identifier"]![0]!["system"]!}|{(string)document.Patient["identifier"]![0]!["value"]!}";
var iti67 = $"DocumentReference?patient.identifier={Uri.EscapeDataString(identifier)}&status=current";
var dataDirectory = Path.Combine(Path.GetTempPath(), "phrfhir-auditbench-" + Guid.NewGuid().ToString("N")[..8]);
using var cts = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };

Console.WriteLine($"{DateTimeOffset.Now:yyyy-MM-dd HH:mm:ss zzz}, {Environment.ProcessorCount} cores, load average {Proc.LoadAverage()} (before)");
Console.WriteLine($"ITI-67: GET {iti67}  ({documents} current documents of that patient)");
var results = new List<(string Mode, Result R)>();
try
{
    var seeded = false;
    var runs = new List<(string Mode, bool Off)> { ("on", false) };
    for (var i = 0; i < rounds; i++) runs.AddRange([("off", true), ("on", false)]);
    foreach (var (mode, off) in runs)
    {
        var server = ServerProcess.Start(repoRoot, serverDll, 0, [], dataDirectory, off ? ["--Bench:AuthAndAuditOff=true"] : []);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64 }) { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
        try
        {
            try { await server.WaitForMetadataAsync(http, TimeSpan.FromSeconds(180), cts.Token); }
            catch (InvalidOperationException e) when (off)
            {
                throw new InvalidOperationException($"{e.Message} (a server not built with 'dotnet build -c Bench' refuses --Bench:AuthAndAuditOff=true)", e);
            }
            // The same token in both modes: with the switch off it is simply not looked at.
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await Token.GetAsync(http, cts.Token));
            if (!seeded)
            {
                await SeedAsync(http, document, documents, cts.Token);
                seeded = true;
            }
            var scenario = new Scenario("iti67-" + mode, iti67, () => "", "ITI-67 by patient.identifier, status=current", Get: true);
            var (status, body, _) = await Load.OnceAsync(http, scenario, cts.Token);
            var found = (int?)JsonNode.Parse(body)?["total"] ?? JsonNode.Parse(body)?["entry"]?.AsArray().Count;
            if (status != 200 || found != documents) throw new InvalidOperationException($"ITI-67 check ({mode}): {status}, {found} documents: {body[..Math.Min(body.Length, 500)]}");
            foreach (var clients in clientCounts)
            {
                var r = await Load.RunAsync(http, scenario, clients, TimeSpan.FromSeconds(warmup), TimeSpan.FromSeconds(seconds), server.Pid, cts.Token);
                results.Add((mode, r));
                Console.WriteLine($"  auth+audit {mode,-3} clients {clients}: {r.Requests,6} requests {r.PerSecond,7:F1}/s  p50 {r.P(50),6:F1} ms  p95 {r.P(95),6:F1} ms  errors {r.Errors}  server cpu {r.ServerCpuPercent:F0}%  machine busy {r.MachineBusyPercent:F0}%"
                    + (r.FirstError is null ? "" : $"\n    first error: {r.FirstError}"));
            }
        }
        finally
        {
            Console.WriteLine($"  stop ({mode}): {await server.StopAsync(TimeSpan.FromSeconds(60))}");
        }
    }

    Console.WriteLine();
    Console.WriteLine($"{"clients",7} {"p50 off",8} {"p50 on",8} {"added",7} {"p95 off",8} {"p95 on",8} {"added",7} {"req/s off",9} {"req/s on",9} {"change",7}");
    foreach (var clients in clientCounts)
    {
        // Medians over the runs of each mode: the "on" runs bracket the "off" ones in time.
        var offs = results.Where(x => x.Mode == "off" && x.R.Clients == clients).Select(x => x.R).ToList();
        var ons = results.Where(x => x.Mode == "on" && x.R.Clients == clients).Select(x => x.R).ToList();
        double p50Off = Median(offs.Select(r => r.P(50))), p95Off = Median(offs.Select(r => r.P(95))), rateOff = Median(offs.Select(r => r.PerSecond));
        double p50On = Median(ons.Select(r => r.P(50))), p95On = Median(ons.Select(r => r.P(95))), rateOn = Median(ons.Select(r => r.PerSecond));
        Console.WriteLine($"{clients,7} {p50Off,8:F1} {p50On,8:F1} {Pct(p50On, p50Off),7} {p95Off,8:F1} {p95On,8:F1} {Pct(p95On, p95Off),7} {rateOff,9:F1} {rateOn,9:F1} {Pct(rateOn, rateOff),7}");
    }
    Console.WriteLine($"load average {Proc.LoadAverage()} (after); target: added p50 latency <= 20 %");
    return 0;
}
catch (OperationCanceledException) when (cts.IsCancellationRequested)
{
    Console.WriteLine("interrupted");
    return 130;
}
finally
{
    try { Directory.Delete(dataDirectory, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
}

static double Median(IEnumerable<double> values)
{
    var v = values.Order().ToArray();
    return v.Length == 0 ? 0 : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
}

static string Pct(double value, double baseline) => baseline == 0 ? "n/a" : $"{(value - baseline) / baseline * 100:+0;-0}%";

// The patient of the HS037 example and N documents for them, each an ITI-65 Minimal submission whose bytes
// are sent opaque (not validated: this bench is about reads).
static async Task SeedAsync(HttpClient http, Hs037Document document, int count, CancellationToken ct)
{
    var p = document.Patient;
    var patient = new JsonObject { ["resourceType"] = "Patient", ["identifier"] = p["identifier"]!.DeepClone(), ["name"] = p["name"]!.DeepClone() };
    using var created = await http.PostAsync("Patient", new StringContent(patient.ToJsonString(), Encoding.UTF8, "application/fhir+json"), ct);
    var body = await created.Content.ReadAsStringAsync(ct);
    if (!created.IsSuccessStatusCode) throw new InvalidOperationException($"registering the Patient failed: {(int)created.StatusCode} {body}");
    var requests = new Requests(document, (string)JsonNode.Parse(body)!["id"]!, DateTime.UtcNow.ToString("HHmmss", CultureInfo.InvariantCulture));
    for (var i = 0; i < count; i++)
    {
        using var r = await http.PostAsync("", new StringContent(requests.ProvideDocumentBundle(comprehensive: false, opaque: true), Encoding.UTF8, "application/fhir+json"), ct);
        if (!r.IsSuccessStatusCode) throw new InvalidOperationException($"seeding document {i}: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync(ct)}");
    }
}

string Arg(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;

static string RepoRoot()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "PhrFhir.sln"))) return dir.FullName;
    throw new InvalidOperationException("run from inside the repository (PhrFhir.sln not found)");
}
