// Patient/$match (IHE PDQm ITI-119) and PDQm ITI-78 name search over 100,000 Japanese persons, against the
// real server started here on 127.0.0.1 with its embedded PostgreSQL (docs/identity.md, bench/README.md).
// Target (issue #15): $match p95 ≤ 20 ms on 2 cores. The persons are seeded once through the API (transaction
// Bundles of 100 Patients, as the institution kenshin-a) into bench/data/match/, kept between runs.
//
//   dotnet build -c Release src/PhrFhir.Server && dotnet run -c Release --project bench/PhrFhir.MatchBench -- [options]
//   --persons N (100000)  --seconds N (15)  --warmup N (3)  --clients 1,8  --scenarios match,match-phone,pdqm-name
//   --fresh (wipe bench/data/match first)  --port P  --server-dll src/PhrFhir.Server/bin/Release/net10.0/PhrFhir.Server.dll
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using PhrFhir.MatchBench;
using PhrFhir.MhdBench;

var repoRoot = Repository.Root();
var persons = int.Parse(Arg("--persons", "100000"), CultureInfo.InvariantCulture);
var seconds = double.Parse(Arg("--seconds", "15"), CultureInfo.InvariantCulture);
var warmup = double.Parse(Arg("--warmup", "3"), CultureInfo.InvariantCulture);
var clientCounts = Arg("--clients", "1,8").Split(',').Select(int.Parse).ToArray();
var wanted = Arg("--scenarios", "match,match-phone,pdqm-name").Split(',');
var serverDll = Path.GetFullPath(Arg("--server-dll", Path.Combine(repoRoot, "src/PhrFhir.Server/bin/Release/net10.0/PhrFhir.Server.dll")));
var dataDirectory = Path.Combine(repoRoot, "bench", "data", "match");
if (!File.Exists(serverDll)) { Console.Error.WriteLine($"{serverDll} not found: dotnet build -c Release src/PhrFhir.Server"); return 2; }
if (args.Contains("--fresh") && Directory.Exists(dataDirectory)) Directory.Delete(dataDirectory, recursive: true);

using var cts = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); }; // stop the server cleanly, then exit

Console.WriteLine(Repository.CommitLine());
Console.WriteLine($"machine: {Environment.ProcessorCount} cores, load average {Proc.LoadAverage()} (before)");
var server = ServerProcess.Start(repoRoot, serverDll, int.Parse(Arg("--port", "0"), CultureInfo.InvariantCulture), [], dataDirectory);
Console.WriteLine($"server: pid {server.Pid}, http://127.0.0.1:{server.Port}, data {Path.GetRelativePath(repoRoot, dataDirectory)} (kept)");
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 64, PooledConnectionLifetime = TimeSpan.FromMinutes(10) })
{ BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(120) };
http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));
var exit = 0;
try
{
    var up = await server.WaitForMetadataAsync(http, TimeSpan.FromSeconds(180), cts.Token);
    Console.WriteLine($"start-up: first 200 from /metadata after {up.TotalSeconds:F1} s");
    http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await Token.GetAsync(http, cts.Token));

    await SeedAsync(http, persons, cts.Token);

    var scenarios = new Scenario[]
    {
        // The reading as a receptionist types it (hiragana family, katakana given), birth date and sex.
        new("match", "Patient/$match", () => MatchBody(Person.Of(Random.Shared.Next(persons)), kana: true),
            "POST Patient/$match, kana name + birthDate + gender"),
        // The kanji name, and the phone without hyphens (digits compared) and postal code.
        new("match-phone", "Patient/$match", () => MatchBody(Person.Of(Random.Shared.Next(persons)), kana: false),
            "POST Patient/$match, kanji name + birthDate + gender + phone + postal code"),
        new("pdqm-name", "", () => "", "GET Patient?name={hiragana family}&_count=10 (PDQm ITI-78, ~2,000 persons per name)", Get: true),
    }.Where(s => wanted.Contains(s.Name)).ToList();
    // A GET scenario's path is fixed per scenario: spread over the 50 family names by one scenario per run of requests.
    var names = PhrFhir.Bench.JapaneseData.Families.Select(f => Person.Hiragana(f.Kana)).ToArray();
    var pdqm = scenarios.FindIndex(s => s.Name == "pdqm-name");
    if (pdqm >= 0)
        scenarios[pdqm] = scenarios[pdqm] with { Path = $"Patient?name={Uri.EscapeDataString(names[Random.Shared.Next(names.Length)])}&_count=10" };

    // Correctness before speed: the person asked for comes first, in 50 asks of each $match kind.
    foreach (var kana in new[] { true, false })
    {
        var first = 0;
        var sw = Stopwatch.StartNew();
        for (var n = 0; n < 50; n++)
        {
            var person = Person.Of(Random.Shared.Next(persons));
            using var response = await http.PostAsync("Patient/$match", Json(MatchBody(person, kana)), cts.Token);
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync(cts.Token))!;
            if (!response.IsSuccessStatusCode) { Console.WriteLine($"check: {(int)response.StatusCode} {body.ToJsonString()[..Math.Min(600, body.ToJsonString().Length)]}"); exit = 1; break; }
            if ((string?)body["entry"]?[0]?["resource"]?["identifier"]?[0]?["value"] == person.Mrn) first++;
        }
        Console.WriteLine($"check {(kana ? "match" : "match-phone"),-12} the person asked for ranked first in {first}/50 ({sw.Elapsed.TotalMilliseconds / 50:F1} ms each, cold)");
    }

    Console.WriteLine($"warm-up: every scenario for {warmup:0} s with {clientCounts.Max()} clients, not measured");
    foreach (var s in scenarios) await Load.WarmAsync(http, s, clientCounts.Max(), TimeSpan.FromSeconds(warmup), cts.Token);

    Console.WriteLine();
    Console.WriteLine($"{"scenario",-12} {"clients",7} {"requests",8} {"req/s",7} {"p50 ms",7} {"p95 ms",7} {"p99 ms",7} {"errors",6}  {"server cpu%",11} {"machine busy",12}");
    var results = new List<Result>();
    foreach (var s in scenarios)
        foreach (var clients in clientCounts)
        {
            var r = await Load.RunAsync(http, s, clients, TimeSpan.FromSeconds(warmup), TimeSpan.FromSeconds(seconds), server.Pid, cts.Token);
            results.Add(r);
            Console.WriteLine($"{r.Scenario,-12} {r.Clients,7} {r.Requests,8} {r.PerSecond,7:F1} {r.P(50),7:F1} {r.P(95),7:F1} {r.P(99),7:F1} {r.Errors,6}  {r.ServerCpuPercent,11:F0} {r.MachineBusyPercent,11:F0}%");
            if (r.FirstError is not null) Console.WriteLine($"  first error: {r.FirstError}");
        }
    Console.WriteLine();
    Console.WriteLine($"machine: load average {Proc.LoadAverage()} (after); server cpu% is of one core (up to {Environment.ProcessorCount * 100}), PostgreSQL not included");
    foreach (var r in results.Where(r => r.Scenario.StartsWith("match", StringComparison.Ordinal) && r.Clients == 1))
        Console.WriteLine($"target $match p95 <= 20 ms (1 client): {r.Scenario} p95 {r.P(95):F1} ms -> {(r.P(95) <= 20 ? "met" : "MISSED")}");
}
catch (OperationCanceledException) when (cts.IsCancellationRequested)
{
    Console.WriteLine("interrupted");
    exit = 130;
}
finally
{
    Console.WriteLine($"stop: {await server.StopAsync(TimeSpan.FromSeconds(60))}");
}
return exit;

// Seeds persons [count, n) in transaction Bundles of 100, 4 senders; a batch already there (409: its
// identifiers are taken) is skipped, so an interrupted seeding resumes.
static async Task SeedAsync(HttpClient http, int n, CancellationToken ct)
{
    using var counted = await http.GetAsync("Patient?_summary=count", ct);
    var have = (int?)JsonNode.Parse(await counted.Content.ReadAsStringAsync(ct))!["total"] ?? 0;
    if (have >= n) { Console.WriteLine($"dataset: {have} Patients already seeded"); return; }
    Console.WriteLine($"dataset: {have} Patients, seeding {n - have} more in transactions of 100 (4 senders)");
    var sw = Stopwatch.StartNew();
    var next = have / 100 * 100 - 100;
    var done = 0;
    await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
    {
        while (true)
        {
            var from = Interlocked.Add(ref next, 100);
            if (from >= n) return;
            if (from < 0) continue;
            using var response = await http.PostAsync("", Json(Person.Transaction(from, Math.Min(n, from + 100))), ct);
            if (response.StatusCode != HttpStatusCode.Conflict && !response.IsSuccessStatusCode)
                throw new InvalidOperationException($"seeding {from}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
            if (Interlocked.Add(ref done, 100) % 10000 == 0) Console.WriteLine($"  {have + done} after {sw.Elapsed.TotalSeconds:F0} s");
        }
    }, ct)));
    Console.WriteLine($"dataset: seeded in {sw.Elapsed.TotalSeconds:F0} s");
}

static string MatchBody(Person p, bool kana)
{
    var name = kana
        ? new JsonObject { ["family"] = Person.Hiragana(p.FamilyKana), ["given"] = new JsonArray(p.GivenKana) }
        : new JsonObject { ["family"] = p.FamilyKanji, ["given"] = new JsonArray(p.GivenKanji) };
    var patient = new JsonObject
    {
        ["resourceType"] = "Patient",
        ["name"] = new JsonArray(name),
        ["gender"] = p.Gender,
        ["birthDate"] = p.BirthDate,
    };
    if (!kana)
    {
        patient["telecom"] = new JsonArray(new JsonObject { ["system"] = "phone", ["value"] = p.Phone.Replace("-", "", StringComparison.Ordinal) });
        patient["address"] = new JsonArray(new JsonObject { ["postalCode"] = p.PostalCode });
    }
    return new JsonObject
    {
        ["resourceType"] = "Parameters",
        ["parameter"] = new JsonArray(new JsonObject { ["name"] = "resource", ["resource"] = patient }, new JsonObject { ["name"] = "count", ["valueInteger"] = 5 }),
    }.ToJsonString();
}

static StringContent Json(string json) => new(json, Encoding.UTF8, "application/fhir+json");

string Arg(string name, string fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;

