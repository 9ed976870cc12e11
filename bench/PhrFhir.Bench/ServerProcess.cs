using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace PhrFhir.Bench;

/// <summary>
/// The server under test as a separate OS process, in its own session so that a Ctrl-C in the
/// terminal reaches only the bench, which then stops the server exactly once (SIGINT: the host shuts
/// down and stops its embedded PostgreSQL). Its pid is written to <c>server.pid</c> beside the data
/// directory so bench/run.sh can still stop it if the bench itself dies.
/// </summary>
public sealed class ServerProcess
{
    const int SigInt = 2, SigKill = 9, SigTerm = 15;

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int sig);

    readonly Process _process;
    readonly string _pidFile;

    ServerProcess(Process process, string pidFile, int port, string logFile)
    {
        _process = process;
        _pidFile = pidFile;
        Port = port;
        LogFile = logFile;
    }

    public int Pid => _process.Id;
    public int Port { get; }
    public string LogFile { get; }
    public Uri BaseAddress => new($"http://127.0.0.1:{Port}/");
    public bool HasExited => _process.HasExited;

    /// <summary>Starts the server; returns at once. The log appends to <c>server.log</c> beside the data directory.</summary>
    public static ServerProcess Start(BenchOptions o)
    {
        var port = o.Port != 0 ? o.Port : FreeLoopbackPort();
        var parent = Path.GetDirectoryName(o.DataDirectory)!;
        Directory.CreateDirectory(parent);
        var logFile = Path.Combine(parent, "server.log");
        File.AppendAllText(logFile, $"{Environment.NewLine}==== bench run {DateTimeOffset.Now:O} port {port} ===={Environment.NewLine}");

        // sh and setsid both exec in place, so the pid we get is the dotnet process itself.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = Path.GetDirectoryName(o.ServerDll)! };
        foreach (var a in new[]
                 {
                     "-c", "log=\"$1\"; shift; exec setsid \"$@\" >>\"$log\" 2>&1", "sh", logFile,
                     "dotnet", o.ServerDll, "--urls", $"http://127.0.0.1:{port}", $"--Storage:DataDirectory={o.DataDirectory}",
                 })
            psi.ArgumentList.Add(a);
        // The server must use its embedded PostgreSQL in DIR, whatever the caller's shell has set.
        psi.Environment.Remove("PHRFHIR_DB");
        // Tokens for the load come from the development clients (client_credentials, kenshin-a: a checkup institution reads what it wrote).
        psi.Environment["PHRFHIR_CLIENTS"] = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../examples/auth/clients.dev.json"));
        psi.Environment.Remove("ConnectionStrings__Fhir");
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start the server");
        var pidFile = Path.Combine(parent, "server.pid");
        File.WriteAllText(pidFile, process.Id.ToString(CultureInfo.InvariantCulture));
        return new ServerProcess(process, pidFile, port, logFile);
    }

    /// <summary>Polls GET /metadata until it answers 200; the time since <paramref name="started"/> is the start-up figure.</summary>
    public async Task<TimeSpan> WaitForMetadataAsync(HttpClient http, Stopwatch started, TimeSpan limit, CancellationToken ct)
    {
        var url = new Uri(BaseAddress, "metadata");
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (_process.HasExited)
                throw new InvalidOperationException($"the server exited with code {_process.ExitCode} before answering /metadata; see {LogFile}");
            if (started.Elapsed > limit)
                throw new TimeoutException($"no 200 from /metadata within {limit.TotalSeconds:0} s; see {LogFile}");
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                cts.CancelAfter(TimeSpan.FromSeconds(10));
                using var resp = await http.GetAsync(url, cts.Token);
                if (resp.StatusCode == HttpStatusCode.OK)
                {
                    var at = started.Elapsed;
                    await resp.Content.ReadAsByteArrayAsync(ct);
                    return at;
                }
            }
            catch (HttpRequestException) { /* not listening yet */ }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { /* slow first answer: ask again */ }
            await Task.Delay(20, ct);
        }
    }

    /// <summary>Peer mode: polls GET /metadata of a server someone else started (HAPI takes a minute to come up) until it answers 200.</summary>
    public static async Task<string> WaitForPeerAsync(HttpClient http, TimeSpan limit, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var last = "";
        while (sw.Elapsed < limit)
        {
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
                cts.CancelAfter(TimeSpan.FromSeconds(30));
                using var resp = await http.GetAsync("metadata", cts.Token);
                var body = await resp.Content.ReadAsStringAsync(ct);
                if (resp.StatusCode == HttpStatusCode.OK)
                {
                    using var doc = System.Text.Json.JsonDocument.Parse(body);
                    var software = doc.RootElement.TryGetProperty("software", out var s) && s.TryGetProperty("name", out var n) ? n.GetString() : null;
                    var version = doc.RootElement.TryGetProperty("software", out s) && s.TryGetProperty("version", out var v) ? v.GetString() : null;
                    return $"{software ?? "software not named"} {version}, fhirVersion {(doc.RootElement.TryGetProperty("fhirVersion", out var f) ? f.GetString() : "?")}".Trim();
                }
                last = $"{(int)resp.StatusCode}";
            }
            catch (HttpRequestException e) { last = e.Message; }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { last = "no answer within 30 s"; }
            await Task.Delay(1000, ct);
        }
        throw new TimeoutException($"GET {http.BaseAddress}metadata: no 200 within {limit.TotalSeconds:0} s (last: {last})");
    }

    /// <summary>
    /// The process and cmdline check: with sh → setsid → dotnet all exec'ing, the pid must be the server's.
    /// </summary>
    public bool PidIsServer() =>
        ProcFs.CommandLine(Pid) is { } cmd && cmd.Contains("PhrFhir.Server.dll", StringComparison.Ordinal);

    /// <summary>
    /// SIGINT, then wait (the host stops PostgreSQL on the way out). SIGTERM instead when the server
    /// ignores SIGINT (a shell starts background jobs that way, and exec keeps it), or when SIGINT
    /// has not stopped it after <paramref name="grace"/>; SIGKILL only as a last resort.
    /// </summary>
    public async Task<(TimeSpan Took, int ExitCode, string How)> StopAsync(TimeSpan grace)
    {
        var sw = Stopwatch.StartNew();
        var how = "already exited";
        if (!_process.HasExited)
        {
            var signal = ProcFs.IgnoresSignal(Pid, SigInt) ? SigTerm : SigInt;
            how = signal == SigInt ? "SIGINT" : "SIGTERM (SIGINT is ignored by the process)";
            kill(Pid, signal);
            if (!await ExitsWithin(grace) && signal == SigInt)
            {
                how = $"SIGINT, then SIGTERM after {grace.TotalSeconds:0} s";
                kill(Pid, SigTerm);
                if (!await ExitsWithin(grace))
                {
                    how += ", then SIGKILL (PostgreSQL may be left running; the next start stops it)";
                    kill(Pid, SigKill);
                    await _process.WaitForExitAsync();
                }
            }
        }
        File.Delete(_pidFile);
        return (sw.Elapsed, _process.ExitCode, how);
    }

    async Task<bool> ExitsWithin(TimeSpan limit)
    {
        using var cts = new CancellationTokenSource(limit);
        try { await _process.WaitForExitAsync(cts.Token); return true; }
        catch (OperationCanceledException) { return false; }
    }

    static int FreeLoopbackPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
