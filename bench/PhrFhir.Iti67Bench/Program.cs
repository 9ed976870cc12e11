// ITI-67 Find Document References at scale (issue #12: p95 <= 10 ms at 1 M DocumentReferences). Starts the
// Release server on its own data folder (bench/data/iti67 unless --data), seeds --documents DocumentReferences
// over many Patients through the FHIR API (transaction Bundles), then measures ITI-67 by patient reference and by
// patient.identifier at 1 and 8 clients. With --keep the data folder stays, and the next run seeds only what is
// missing (resumable: a 1 M run can be built up in steps, e.g. --documents 100000 --keep, then 1000000 --keep).
//
//   dotnet build -c Release src/PhrFhir.Server && dotnet run -c Release --project bench/PhrFhir.Iti67Bench -- [options]
//   --documents N (1000000)  --per-patient N (50)  --batch N (500)  --senders N (2)  --keep  --data DIR
//   --seconds N (15)  --warmup N (3)  --clients 1,8  --count N (_count of the searches; none: the server's default)
//   --port P  --server-dll PATH
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using PhrFhir.Iti67Bench;
using PhrFhir.MhdBench;

var repoRoot = Repository.Root();
var documents = int.Parse(Arg("--documents", "1000000"), CultureInfo.InvariantCulture);
var perPatient = int.Parse(Arg("--per-patient", "50"), CultureInfo.InvariantCulture);
var batch = int.Parse(Arg("--batch", "500"), CultureInfo.InvariantCulture);
var senders = int.Parse(Arg("--senders", "2"), CultureInfo.InvariantCulture);
var seconds = double.Parse(Arg("--seconds", "15"), CultureInfo.InvariantCulture);
var warmup = double.Parse(Arg("--warmup", "3"), CultureInfo.InvariantCulture);
var clientCounts = Arg("--clients", "1,8").Split(',').Select(int.Parse).ToArray();
var countParameter = Arg("--count", "") is { Length: > 0 } c ? "&_count=" + c : "";
var keep = args.Contains("--keep");
var dataDirectory = Path.GetFullPath(Arg("--data", Path.Combine(repoRoot, "bench/data/iti67")));
var serverDll = Path.GetFullPath(Arg("--server-dll", Path.Combine(repoRoot, "src/PhrFhir.Server/bin/Release/net10.0/PhrFhir.Server.dll")));
if (!File.Exists(serverDll)) { Console.Error.WriteLine($"{serverDll} not found: dotnet build -c Release src/PhrFhir.Server"); return 2; }
var patients = (documents + perPatient - 1) / perPatient;

using var cts = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); }; // stop the server cleanly, then exit

Console.WriteLine(Repository.CommitLine());
Console.WriteLine($"machine: {Environment.ProcessorCount} cores, load average {Proc.LoadAverage()} (before)");
var existed = Directory.Exists(Path.Combine(dataDirectory, "pg"));
var server = ServerProcess.Start(repoRoot, serverDll, int.Parse(Arg("--port", "0"), CultureInfo.InvariantCulture), [], dataDirectory);
Console.WriteLine($"server: pid {server.Pid}, http://127.0.0.1:{server.Port}, data {dataDirectory} ({(existed ? "kept from an earlier run" : "new")})");
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64, PooledConnectionLifetime = TimeSpan.FromMinutes(30) })
{ BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(5) };
http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
var exit = 0;
try
{
    var up = await server.WaitForMetadataAsync(http, TimeSpan.FromSeconds(300), cts.Token);
    Console.WriteLine($"start-up: first 200 from /metadata after {up.TotalSeconds:F1} s");
    http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await Token.GetAsync(http, cts.Token));

    var seed = new Seeding(http, batch, senders);
    var patientIds = await seed.PatientsAsync(patients, cts.Token);
    var stored = await seed.CountAsync("DocumentReference", cts.Token);
    Console.WriteLine($"documents: {stored:N0} stored, {documents:N0} wanted, {perPatient} per patient over {patients:N0} patients");
    if (stored < documents) await seed.DocumentsAsync(patientIds, stored, documents, cts.Token);

    // Patients of the first `documents` documents only (a kept folder may hold more than this run asks for).
    var rng = new Random(67);
    string RandomPatient() => patientIds[rng.Next(Math.Min(patientIds.Count, Math.Max(1, documents / perPatient)))];
    var byId = patientIds.Select((id, i) => (id, i)).ToDictionary(x => x.id, x => x.i);
    var scenarios = new Scenario[]
    {
        new("iti67-patient", "", () => "", "GET /DocumentReference?patient=Patient/{id}&status=current", Get: true,
            NextPath: () => { lock (rng) return $"DocumentReference?patient=Patient/{RandomPatient()}&status=current{countParameter}"; }),
        new("iti67-identifier", "", () => "", "GET /DocumentReference?patient.identifier={system}|{MRN}&status=current", Get: true,
            NextPath: () => { lock (rng) return $"DocumentReference?patient.identifier={Uri.EscapeDataString(Seeding.MrnSystem + "|" + Seeding.Mrn(byId[RandomPatient()]))}&status=current{countParameter}"; }),
    };
    foreach (var s in scenarios)
    {
        var (status, body, ms) = await Load.OnceAsync(http, s, cts.Token);
        var json = status == 200 ? JsonNode.Parse(body) : null;
        Console.WriteLine($"check {s.Name,-17} {status} in {ms,5:F0} ms: {json?["entry"]?.AsArray().Count ?? 0} entries, total {json?["total"]?.ToString() ?? "absent"}, next link {(json?["link"]?.AsArray().Any(l => (string?)l!["relation"] == "next") == true ? "yes" : "no")}   {s.What}");
        if (status != 200) { Console.WriteLine("  " + body[..Math.Min(600, body.Length)]); exit = 1; }
    }

    Console.WriteLine($"warm-up: every scenario for {warmup:0} s with {clientCounts.Max()} clients, not measured");
    foreach (var s in scenarios) await Load.WarmAsync(http, s, clientCounts.Max(), TimeSpan.FromSeconds(warmup), cts.Token);
    Console.WriteLine();
    Console.WriteLine($"{"scenario",-17} {"clients",7} {"requests",8} {"req/s",7} {"p50 ms",7} {"p95 ms",7} {"p99 ms",7} {"errors",6}  {"server cpu%",11} {"machine busy",12}  load average");
    var results = new List<Result>();
    foreach (var s in scenarios)
        foreach (var clients in clientCounts)
        {
            var r = await Load.RunAsync(http, s, clients, TimeSpan.FromSeconds(warmup), TimeSpan.FromSeconds(seconds), server.Pid, cts.Token);
            results.Add(r);
            Console.WriteLine($"{r.Scenario,-17} {r.Clients,7} {r.Requests,8} {r.PerSecond,7:F1} {r.P(50),7:F1} {r.P(95),7:F1} {r.P(99),7:F1} {r.Errors,6}  {r.ServerCpuPercent,11:F0} {r.MachineBusyPercent,11:F0}%  {Proc.LoadAverage()}");
            if (r.FirstError is not null) { Console.WriteLine($"  first error: {r.FirstError}"); exit = 1; }
        }
    Console.WriteLine();
    Console.WriteLine($"machine: load average {Proc.LoadAverage()} (after); server cpu% is of one core (up to {Environment.ProcessorCount * 100}), PostgreSQL not included");
    foreach (var r in results.Where(r => r.Clients == 1))
        Console.WriteLine($"target ITI-67 p95 <= 10 ms at 1 M documents ({Math.Max(stored, documents):N0} stored here), 1 client: {r.Scenario} p95 {r.P(95):F1} ms -> {(r.P(95) <= 10 ? "met" : "MISSED")}");
}
catch (OperationCanceledException) when (cts.IsCancellationRequested)
{
    Console.WriteLine("interrupted (what was committed stays; with --keep the next run goes on from there)");
    exit = 130;
}
finally
{
    Console.WriteLine($"stop: {await server.StopAsync(TimeSpan.FromSeconds(120))}");
    if (keep) Console.WriteLine($"data kept in {dataDirectory} (server log: {server.LogFile})");
    else server.DeleteData(keepLog: false);
}
return exit;

string Arg(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;

