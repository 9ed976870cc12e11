using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Runtime.InteropServices;
using System.Text;
using PhrFhir.Bench;

// Start-up, seeding and load figures for PhrFhir; see bench/README.md. Everything goes to 127.0.0.1.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
Console.OutputEncoding = Encoding.UTF8;

BenchOptions o;
try { o = BenchOptions.Parse(args); }
catch (ArgumentException e)
{
    if (e.Message.Length > 0) Console.Error.WriteLine($"bench: {e.Message}");
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

using var cts = new CancellationTokenSource();
void Interrupted(string why)
{
    // The server runs in its own session, so only we get the signal; stop measuring and stop it cleanly.
    Console.Error.WriteLine($"bench: {why}, stopping the server …");
    cts.Cancel();
}
Console.CancelKeyPress += (_, e) => { e.Cancel = true; Interrupted("interrupted"); };
using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; Interrupted("SIGTERM"); });
using var onHup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => { c.Cancel = true; Interrupted("SIGHUP"); });
var ct = cts.Token;

var dataRoot = o.Peer ? "" : Path.GetDirectoryName(o.DataDirectory)!;
if (o.Fresh && !o.Peer && Directory.Exists(dataRoot))
{
    Console.WriteLine($"--fresh: removing {dataRoot}");
    Directory.Delete(dataRoot, recursive: true);
}
var existingCluster = !o.Peer && File.Exists(Path.Combine(o.DataDirectory, "PG_VERSION"));

var nproc = Nproc();
var loadBefore = ProcFs.LoadAverages();
Console.WriteLine($"machine: nproc {nproc}, load average before {loadBefore}");
if (o.Peer)
{
    Console.WriteLine($"peer:    {o.BaseUrl} (started by you; the bench starts nothing and sees no server CPU)");
}
else
{
    Console.WriteLine($"server:  {o.ServerDll}");
    Console.WriteLine($"data:    {o.DataDirectory} ({(existingCluster ? "existing cluster" : "new cluster: start-up includes initdb")})");
}
Console.WriteLine($"ITI-65:  {(o.MhdProfiles == true ? "declares the MHD Minimal profiles (IHE.MHD.Minimal.ProvideBundle …)" : "a plain transaction (no MHD profiles declared)")}");
Console.WriteLine();

using var handler = new SocketsHttpHandler
{
    UseProxy = false,
    UseCookies = false,
    AllowAutoRedirect = false,
    AutomaticDecompression = System.Net.DecompressionMethods.None,
    MaxConnectionsPerServer = int.MaxValue,
    PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
    ConnectTimeout = TimeSpan.FromSeconds(5),
};

var logOffset = !o.Peer && File.Exists(Path.Combine(dataRoot, "server.log")) ? new FileInfo(Path.Combine(dataRoot, "server.log")).Length : 0;
var clock = Stopwatch.StartNew();
var server = o.Peer ? null : ServerProcess.Start(o);
using var http = new HttpClient(handler) { BaseAddress = o.BaseUrl ?? server!.BaseAddress, Timeout = Timeout.InfiniteTimeSpan };
http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/fhir+json"));

var results = new List<ScenarioResult>();
string? failure = null;
long? peakRss = null;
long postgresPss = 0;
string loadAfter = "";
try
{
    if (server is not null)
    {
        var startup = await server.WaitForMetadataAsync(http, clock, TimeSpan.FromMinutes(5), ct);
        Console.WriteLine($"start-up: {startup.TotalMilliseconds:0} ms from process start to the first 200 from GET /metadata (pid {server.Pid}, port {server.Port})");
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", await Token.GetAsync(http, ct));
        if (!server.PidIsServer())
            Console.WriteLine($"  warning: pid {server.Pid} is not the PhrFhir.Server process; RSS and CPU figures below are not the server's");
    }
    else
    {
        var up = await ServerProcess.WaitForPeerAsync(http, TimeSpan.FromMinutes(5), ct);
        Console.WriteLine($"peer: GET /metadata answered 200 ({up})");
        if (await Token.FromOptionsAsync(o, ct) is { } token)
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    // The five rows' data (any server, plain FHIR REST), topped up to what the rows need.
    Rows? rows = null;
    if (o.Scenarios.Any(LoadScenarios.FiveRows.Contains))
    {
        rows = new Rows(http, o.MhdProfiles == true);
        await rows.SeedAsync(ct);
    }

    // The 100k Patients + Observations dataset, only for the scenarios that read it.
    List<string> ids = [];
    if (o.Scenarios.Any(LoadScenarios.NeedsDataset))
    {
        var dataset = new Dataset(http);
        var patients = await dataset.CountAsync("Patient", ct);
        var observations = await dataset.CountAsync("Observation", ct);
        Console.WriteLine($"dataset: {patients:N0} Patients + {observations:N0} Observations = {patients + observations:N0} resources");
        if (patients + observations < Dataset.TargetResources)
        {
            Console.WriteLine($"seeding to ≥ {Dataset.TargetResources:N0} resources: transaction Bundles of 100 entries (20 Patients + 80 Observations), 4 concurrent senders");
            var seed = await dataset.SeedAsync(patients + observations, ct);
            Console.WriteLine($"seed: {seed.Resources:N0} resources in {seed.Bundles - seed.FailedBundles:N0} Bundles in {seed.Took.TotalSeconds:0.0} s = " +
                              $"{seed.Resources / seed.Took.TotalSeconds:0} resources/s ({(seed.Bundles - seed.FailedBundles) / seed.Took.TotalSeconds:0.0} Bundles/s)" +
                              (seed.FailedBundles > 0 ? $", {seed.FailedBundles} Bundles FAILED, first: {seed.Failures[0]}" : ""));
            ids = seed.PatientIds;
            patients = await dataset.CountAsync("Patient", ct);
            observations = await dataset.CountAsync("Observation", ct);
            Console.WriteLine($"dataset: {patients:N0} Patients + {observations:N0} Observations = {patients + observations:N0} resources");
        }
        else
        {
            Console.WriteLine("seed: skipped (dataset already has ≥ 100,000 resources; --fresh to rebuild it)");
        }
        if (ids.Count < 1000)
        {
            var sw = Stopwatch.StartNew();
            ids = await dataset.PatientsWithObservationsAsync(pages: 10, ct);
            Console.WriteLine($"ids: {ids.Count:N0} Patients with Observations found via GET /Observation?_count=1000 in {sw.Elapsed.TotalSeconds:0.0} s");
        }
        if (ids.Count == 0) throw new InvalidOperationException("no Patient ids to read: the dataset has no Observations with a Patient subject");
    }
    else if (rows is not null)
    {
        ids = rows.ReadIds;
    }

    Console.WriteLine();
    Console.WriteLine($"load: {o.Seconds} s per run after a {o.WarmupSeconds} s warm-up; {string.Join(", ", o.Scenarios)} × clients {string.Join("/", o.Clients)}");
    var load = new LoadScenarios(http, ids, rows);
    (double, double) Cpu() => server is null ? (o.ServerPid is { } pid ? ProcFs.CpuSeconds(pid) : double.NaN, o.PostgresData is { } pg ? ProcFs.PostgresCpuSeconds(pg) : double.NaN) : (ProcFs.CpuSeconds(server.Pid), ProcFs.PostgresCpuSeconds(o.DataDirectory));
    foreach (var scenario in o.Scenarios)
    {
        Console.WriteLine($"  {scenario}: e.g. {await load.ProbeAsync(scenario, ct)}");
        foreach (var clients in o.Clients)
        {
            var r = await load.RunAsync(scenario, clients, TimeSpan.FromSeconds(o.WarmupSeconds), TimeSpan.FromSeconds(o.Seconds), Cpu, ct);
            results.Add(r);
            Console.WriteLine($"    {r.Clients,3} clients: {r.RequestsPerSecond,8:0.0} req/s, p95 {r.P95Ms:0.0} ms, {r.Errors} errors");
        }
    }
}
catch (OperationCanceledException) when (ct.IsCancellationRequested)
{
    failure = "interrupted";
}
catch (Exception e)
{
    failure = e.Message;
    Console.Error.WriteLine($"bench: {e.GetType().Name}: {e.Message}");
}
finally
{
    loadAfter = ProcFs.LoadAverages();
    if (server is not null)
    {
        peakRss = ProcFs.StatusBytes(server.Pid, "VmHWM");
        postgresPss = ProcFs.PostgresPids(o.DataDirectory).Sum(ProcFs.PssBytes);
    }
}
var stop = server is null ? default : await server.StopAsync(TimeSpan.FromSeconds(60));

Console.WriteLine();
if (results.Count > 0) Console.Write(Report.Table(results));
if (o.Tsv is not null) File.WriteAllText(o.Tsv, Report.Tsv(results));
Console.Write(Report.Errors(results));
Console.WriteLine();
Console.WriteLine($"machine: nproc {nproc}; load average (uptime) before {loadBefore}; after {loadAfter}");
if (server is not null)
{
    Console.WriteLine($"memory:  server peak RSS (VmHWM) {Report.Mb(peakRss)}; PostgreSQL PSS at end {Report.Mb(postgresPss)} (postmaster + backends)");
    Console.WriteLine($"stop:    {stop.How} → exit in {stop.Took.TotalSeconds:0.0} s, exit code {stop.ExitCode}");
    Console.Write(Report.ServerLog(server.LogFile, logOffset));
}
if (failure is not null)
{
    Console.WriteLine($"bench did not finish: {failure}");
    return 1;
}
return 0;

static string Nproc()
{
    try
    {
        using var p = Process.Start(new ProcessStartInfo("nproc") { RedirectStandardOutput = true, UseShellExecute = false })!;
        var text = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return text;
    }
    catch (System.ComponentModel.Win32Exception) { return Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture); }
}
