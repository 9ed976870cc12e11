using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace PhrFhir.MhdBench;

/// <summary>
/// The server under test as its own OS process on 127.0.0.1, with its embedded PostgreSQL in a fresh
/// temporary folder, started from the repository root (so it finds ../shared/ref and reuses the
/// conformance cache in data/conformance-cache). It runs in its own session (setsid), so a Ctrl-C in the
/// terminal reaches only the bench, which then stops the server once with SIGTERM.
/// </summary>
public sealed class ServerProcess
{
    const int SigKill = 9, SigTerm = 15;

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int sig);

    readonly Process _process;

    ServerProcess(Process process, int port, string dataDirectory, string logFile)
    {
        _process = process;
        Port = port;
        DataDirectory = dataDirectory;
        LogFile = logFile;
    }

    public int Pid => _process.Id;
    public int Port { get; }
    public string DataDirectory { get; }
    public string LogFile { get; }
    public Uri BaseAddress => new($"http://127.0.0.1:{Port}/");

    /// <param name="dataDirectory">Reuse this folder (and the PostgreSQL data in it) instead of a fresh one: to compare two server settings on the same data.</param>
    /// <param name="serverArgs">More command-line settings for the server (<c>--Key=value</c>).</param>
    public static ServerProcess Start(string repoRoot, string serverDll, int port, IEnumerable<KeyValuePair<string, string>> environment,
        string? dataDirectory = null, IEnumerable<string>? serverArgs = null)
    {
        port = port != 0 ? port : FreeLoopbackPort();
        dataDirectory ??= Path.Combine(Path.GetTempPath(), "phrfhir-mhdbench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dataDirectory);
        var logFile = Path.Combine(dataDirectory, "server.log");
        // sh and setsid exec in place: the pid we hold is the dotnet process itself.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = repoRoot };
        foreach (var a in new[]
                 {
                     "-c", "log=\"$1\"; shift; exec setsid \"$@\" >>\"$log\" 2>&1", "sh", logFile,
                     "dotnet", serverDll, "--urls", $"http://127.0.0.1:{port}", $"--Storage:DataDirectory={Path.Combine(dataDirectory, "pg")}",
                 })
            psi.ArgumentList.Add(a);
        foreach (var a in serverArgs ?? []) psi.ArgumentList.Add(a);
        psi.Environment.Remove("PHRFHIR_DB"); // the embedded PostgreSQL, whatever the caller's shell has set
        psi.Environment.Remove("ConnectionStrings__Fhir");
        // Tokens come from the development clients (client_credentials, kenshin-a: a checkup institution reads what it wrote), as in bench/PhrFhir.Bench.
        psi.Environment["PHRFHIR_CLIENTS"] = Path.Combine(repoRoot, "examples", "auth", "clients.dev.json");
        foreach (var (name, value) in environment) psi.Environment[name] = value; // --server-env, for experiments
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start the server");
        return new ServerProcess(process, port, dataDirectory, logFile);
    }

    /// <summary>Polls GET /metadata until it answers 200.</summary>
    public async Task<TimeSpan> WaitForMetadataAsync(HttpClient http, TimeSpan limit, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (_process.HasExited) throw new InvalidOperationException($"the server exited with code {_process.ExitCode}; see {LogFile}");
            if (sw.Elapsed > limit) throw new TimeoutException($"no 200 from /metadata within {limit.TotalSeconds:0} s; see {LogFile}");
            try
            {
                using var resp = await http.GetAsync(new Uri(BaseAddress, "metadata"), ct);
                if (resp.StatusCode == HttpStatusCode.OK) return sw.Elapsed;
            }
            catch (HttpRequestException) { /* not listening yet */ }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested) { /* a slow first answer on a loaded machine: ask again */ }
            await Task.Delay(50, ct);
        }
    }

    /// <summary>
    /// Waits until the server log says every family it loaded ("Family … policy …") has been warmed ("Warmed … profiles of …"),
    /// reading the log the server writes; says how long it took, or that the limit passed.
    /// </summary>
    public async Task<string> WaitForWarmUpAsync(TimeSpan limit, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            var log = File.Exists(LogFile) ? await File.ReadAllLinesAsync(LogFile, ct) : [];
            int families = log.Count(l => l.Contains("Family ", StringComparison.Ordinal) && l.Contains(", policy ", StringComparison.Ordinal)),
                warmed = log.Count(l => l.Contains("Warmed ", StringComparison.Ordinal) && l.Contains(" profiles of ", StringComparison.Ordinal));
            if (families > 0 && warmed >= families) return $"{warmed} families warmed after {sw.Elapsed.TotalSeconds:F0} s more";
            if (sw.Elapsed > limit) return $"{warmed} of {families} families warmed after {limit.TotalSeconds:F0} s; measuring anyway";
            await Task.Delay(500, ct);
        }
    }

    /// <summary>SIGTERM and wait (the host stops its embedded PostgreSQL on the way out); SIGKILL only after the grace time.</summary>
    public async Task<string> StopAsync(TimeSpan grace)
    {
        if (_process.HasExited) return $"had already exited (code {_process.ExitCode})";
        var sw = Stopwatch.StartNew();
        kill(Pid, SigTerm);
        using (var cts = new CancellationTokenSource(grace))
        {
            try
            {
                await _process.WaitForExitAsync(cts.Token);
                return $"SIGTERM, exited with code {_process.ExitCode} after {sw.Elapsed.TotalSeconds:F1} s";
            }
            catch (OperationCanceledException) { }
        }
        kill(Pid, SigKill);
        await _process.WaitForExitAsync();
        return $"SIGTERM not obeyed within {grace.TotalSeconds:0} s: SIGKILL (PostgreSQL in {DataDirectory} may be left running)";
    }

    /// <summary>The data directory is removed after a clean stop; the log is kept when asked.</summary>
    public void DeleteData(bool keepLog)
    {
        try
        {
            if (keepLog) Directory.Delete(Path.Combine(DataDirectory, "pg"), recursive: true);
            else Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    static int FreeLoopbackPort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
