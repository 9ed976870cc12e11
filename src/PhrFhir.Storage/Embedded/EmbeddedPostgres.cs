using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace PhrFhir.Storage.Embedded;

/// <summary>
/// Runs a private PostgreSQL server from the operating system's PostgreSQL binaries
/// (Debian's <c>postgresql</c> package), with its cluster in a directory chosen by the caller.
/// </summary>
/// <remarks>
/// <para>
/// Layout: the cluster lives in <c>dataDirectory</c>; the server log is written to
/// <c>dataDirectory/../postgres.log</c>; the generated superuser password is kept in
/// <c>dataDirectory/phrfhir.password</c> (mode 0600) so that restarts reuse it. The Unix socket
/// (for <c>psql -h &lt;dataDirectory&gt;</c> debugging) is also placed in the data directory;
/// the application itself connects over TCP on 127.0.0.1 only.
/// </para>
/// <para>
/// initdb and postgres refuse to run as root. When this process is root, both run as the
/// unprivileged <c>postgres</c> OS user (created with <c>useradd --system</c> if missing) through
/// <c>runuser</c>, and the data directory is owned by that user. If that user cannot reach the
/// requested directory (e.g. it is below <c>/root</c>, mode 0700), the cluster is put in
/// <c>/var/tmp/phrfhir-&lt;first 12 hex digits of SHA-256(full requested path)&gt;/data</c>
/// instead and a warning is logged.
/// </para>
/// <para>
/// Leftovers from a killed run: if <c>postmaster.pid</c> names a postmaster that is still running
/// on the same data directory (e.g. the previous application process was SIGKILLed and its
/// server survived), that server is stopped (<c>pg_ctl stop -m fast</c>) and a new one is
/// started, so that the port and options are always the ones asked for now. If the pid in the
/// file belongs to some unrelated live process (pid reuse after a container restart), the stale
/// file is removed, since postgres would otherwise refuse to start; if the pid is dead, postgres
/// itself recognises the file as stale.
/// </para>
/// <para>
/// Supervision: while it runs, the postmaster is checked every second. If it died without shutting
/// down (killed, e.g. by the OOM killer: its <c>postmaster.pid</c> stays behind), it is started again
/// on the same port, PostgreSQL replays its WAL (crash recovery: committed data is kept), and
/// <see cref="Restarted"/> is raised so the owner can drop pooled connections to the dead server. A
/// server stopped cleanly from outside (no <c>postmaster.pid</c>) is left stopped, and so is a
/// directory another launcher has taken over (its <c>postmaster.pid</c> names another process; a
/// postmaster it started there is adopted).
/// </para>
/// </remarks>
public sealed class EmbeddedPostgres : IAsyncDisposable
{
    private const string DatabaseName = "phrfhir";
    private const string SuperUser = "phrfhir";
    private const string OsUser = "postgres";
    private const string PasswordFileName = "phrfhir.password";

    private static readonly TimeSpan ShortTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan InitDbTimeout = TimeSpan.FromMinutes(3);
    private static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(3);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(90);
    private const int PgCtlWaitSeconds = 150;

    private static readonly TimeSpan SupervisionInterval = TimeSpan.FromSeconds(1);

    private readonly Runner _runner;
    private readonly string _dataDirectory;
    private readonly string _logFile;
    private readonly int _port;
    private readonly bool _statementStatistics;
    private readonly ILogger _logger;
    private volatile int _postmasterPid;
    private bool _restartPending; // only the supervisor's loop reads and writes it
    private int _disposed;
    private readonly CancellationTokenSource _stopSupervising = new();
    private readonly Task _supervisor;

    private EmbeddedPostgres(Runner runner, string dataDirectory, string logFile, int port, string password, int postmasterPid, ILogger logger, bool statementStatistics)
    {
        _statementStatistics = statementStatistics;
        _runner = runner;
        _dataDirectory = dataDirectory;
        _logFile = logFile;
        _port = port;
        _postmasterPid = postmasterPid;
        _logger = logger;
        ConnectionString = BuildConnectionString(port, password, DatabaseName, pooling: true);
        AppDomain.CurrentDomain.ProcessExit += OnProcessExit;
        _supervisor = Task.Run(() => SuperviseAsync(_stopSupervising.Token));
    }

    /// <summary>
    /// Raised after the supervisor restarted a postmaster that had died: connections pooled before
    /// belong to the dead server and should be dropped (NpgsqlDataSource.Clear).
    /// </summary>
    public event Action? Restarted;

    /// <summary>The process id of the running postmaster (changes when the supervisor restarts it).</summary>
    public int PostmasterPid => _postmasterPid;

    /// <summary>Npgsql connection string for the <c>phrfhir</c> database on this server.</summary>
    public string ConnectionString { get; }

    /// <summary>
    /// Starts (initialising if needed) a PostgreSQL server for <paramref name="dataDirectory"/> on
    /// 127.0.0.1:<paramref name="port"/> (0 = pick a free port) and makes sure the <c>phrfhir</c>
    /// database exists. <paramref name="statementStatistics"/> (configuration Storage:StatementStatistics) loads
    /// pg_stat_statements and creates its view in that database: statements and round trips per request
    /// (docs/performance.md); off by default, since it costs a little on every statement.
    /// </summary>
    public static async Task<EmbeddedPostgres> StartAsync(string dataDirectory, int port, ILogger logger, CancellationToken ct, bool statementStatistics = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dataDirectory);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentOutOfRangeException.ThrowIfNegative(port);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("The embedded PostgreSQL launcher supports Linux only; configure a connection string instead.");
        }

        var binDir = FindBinDirectory();
        var asRoot = IsRoot();
        var runner = new Runner(binDir, asRoot, logger);

        var requested = Path.GetFullPath(dataDirectory).TrimEnd('/');
        if (requested.Length == 0)
        {
            throw new ArgumentException("The data directory must not be the file system root.", nameof(dataDirectory));
        }

        string dataDir = requested;
        if (asRoot)
        {
            await runner.EnsureOsUserAsync(ct).ConfigureAwait(false);
            dataDir = await ChooseDirectoryReachableByOsUserAsync(runner, requested, logger, ct).ConfigureAwait(false);
        }

        var parent = Path.GetDirectoryName(dataDir)!;
        Directory.CreateDirectory(parent);
        var logFile = Path.Combine(parent, "postgres.log");

        if (!File.Exists(Path.Combine(dataDir, "PG_VERSION")))
        {
            await InitDbAsync(runner, dataDir, logger, ct).ConfigureAwait(false);
        }
        else if (asRoot)
        {
            await runner.ChownToOsUserIfNeededAsync(dataDir, ct).ConfigureAwait(false);
        }

        var password = ReadPassword(dataDir);

        if (!File.Exists(logFile))
        {
            await File.WriteAllTextAsync(logFile, string.Empty, ct).ConfigureAwait(false);
        }
        if (asRoot)
        {
            await runner.ChownAsync(logFile, recursive: false, ct).ConfigureAwait(false);
        }

        await HandleLeftoverServerAsync(runner, dataDir, logger, ct).ConfigureAwait(false);

        // With port 0 there is a small race between probing a free port and postgres binding it;
        // retry with another port a couple of times if the start fails.
        var attempts = port == 0 ? 3 : 1;
        int actualPort = port;
        for (var attempt = 1; ; attempt++)
        {
            actualPort = port == 0 ? PickFreeLoopbackPort() : port;
            try
            {
                await StartServerAsync(runner, dataDir, logFile, actualPort, statementStatistics, logger, ct).ConfigureAwait(false);
                break;
            }
            catch (InvalidOperationException ex) when (attempt < attempts && !ct.IsCancellationRequested)
            {
                logger.LogWarning("PostgreSQL did not start on port {Port} ({Reason}); retrying with another port", actualPort, FirstLine(ex.Message));
            }
        }

        var server = new EmbeddedPostgres(runner, dataDir, logFile, actualPort, password, ReadPostmasterPid(dataDir), logger, statementStatistics);
        try
        {
            await EnsureDatabaseAsync(actualPort, password, statementStatistics, ct).ConfigureAwait(false);
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        logger.LogInformation("Embedded PostgreSQL is listening on 127.0.0.1:{Port} (data directory {DataDirectory}, log {LogFile})", actualPort, dataDir, logFile);
        return server;
    }

    /// <summary>Stops the server (<c>pg_ctl stop -m fast</c>) and waits for it to exit.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        AppDomain.CurrentDomain.ProcessExit -= OnProcessExit;
        await StopSupervisingAsync().ConfigureAwait(false);

        try
        {
            // Close our idle pooled connections politely before the server goes away.
            using (var conn = new NpgsqlConnection(ConnectionString))
            {
                NpgsqlConnection.ClearPool(conn);
            }
        }
        catch (Exception ex)
        {
            SafeLog(() => _logger.LogDebug(ex, "Clearing the Npgsql pool failed"));
        }

        try
        {
            await StopAsync().ConfigureAwait(false);
            SafeLog(() => _logger.LogInformation("Embedded PostgreSQL stopped (data directory {DataDirectory})", _dataDirectory));
        }
        catch (Exception ex)
        {
            SafeLog(() => _logger.LogError(ex, "Stopping embedded PostgreSQL failed (data directory {DataDirectory})", _dataDirectory));
        }
    }

    private async Task StopAsync()
    {
        Exception? pgCtlFailure = null;
        try
        {
            await StopServerAsync(_runner, _dataDirectory, _logger, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException)
        {
            pgCtlFailure = ex;
        }

        // pg_ctl finds the server through postmaster.pid; if the data directory was removed or
        // moved under the running server (e.g. a test deleting its temp folder), signal the
        // postmaster we started directly: SIGINT = fast shutdown, SIGQUIT = immediate.
        if (IsOurPostmasterAlive())
        {
            SafeLog(() => _logger.LogWarning("pg_ctl could not stop PostgreSQL (pid {Pid}); signalling it directly", _postmasterPid));
            foreach (var signal in new[] { SigInt, SigQuit })
            {
                _ = NativeKill(_postmasterPid, signal);
                var deadline = DateTime.UtcNow.AddSeconds(30);
                while (DateTime.UtcNow < deadline && IsOurPostmasterAlive())
                {
                    await Task.Delay(100).ConfigureAwait(false);
                }
                if (!IsOurPostmasterAlive())
                {
                    return;
                }
            }
            throw new InvalidOperationException($"PostgreSQL (pid {_postmasterPid}) did not stop.", pgCtlFailure);
        }
        if (pgCtlFailure is not null)
        {
            throw pgCtlFailure;
        }
    }

    private async Task StopSupervisingAsync()
    {
        await _stopSupervising.CancelAsync().ConfigureAwait(false);
        try
        {
            await _supervisor.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // stopped while restarting: DisposeAsync stops whatever runs on the directory
        }
    }

    private async Task SuperviseAsync(CancellationToken ct)
    {
        var stoppedFromOutside = false;
        while (!ct.IsCancellationRequested)
        {
            await Task.Delay(SupervisionInterval, ct).ConfigureAwait(false);
            try
            {
                stoppedFromOutside = await CheckAsync(stoppedFromOutside, ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                SafeLog(() => _logger.LogError(ex, "Supervising PostgreSQL failed; checking again in {Interval} s", SupervisionInterval.TotalSeconds));
            }
        }
    }

    /// <summary>One round of supervision; returns whether the server is (still) known to be stopped on purpose.</summary>
    private async Task<bool> CheckAsync(bool stoppedFromOutside, CancellationToken ct)
    {
        if (IsOurPostmasterAlive())
        {
            return false;
        }
        if (_restartPending)
        {
            // A failed attempt may have removed postmaster.pid already: it is still our crash.
            await RestartAsync(ct).ConfigureAwait(false);
            return false;
        }
        if (!File.Exists(Path.Combine(_dataDirectory, "postmaster.pid")))
        {
            // A clean shutdown removes the file: someone stopped the server on purpose.
            if (!stoppedFromOutside)
            {
                SafeLog(() => _logger.LogWarning("PostgreSQL on {DataDirectory} was shut down from outside; it is not restarted", _dataDirectory));
            }
            return true;
        }
        var pid = ReadPostmasterPid(_dataDirectory);
        if (pid != _postmasterPid)
        {
            // Another launcher manages the directory now: adopt its postmaster, or leave it to it.
            var proc = $"/proc/{pid.ToString(CultureInfo.InvariantCulture)}";
            if (pid > 0 && Directory.Exists(proc) && !IsZombie(proc) && IsPostmasterFor(proc, _dataDirectory))
            {
                _postmasterPid = pid;
                if (_restartPending)
                {
                    // Our own restart that pg_ctl reported as failed came up after all (it gave up waiting):
                    // a restart like any other, so the owner drops its connections to the dead server.
                    _restartPending = false;
                    SafeLog(() => _logger.LogWarning("PostgreSQL restarted on port {Port} (pid {Pid})", _port, _postmasterPid));
                    Restarted?.Invoke();
                }
            }
            return false;
        }
        // Our postmaster died and left its postmaster.pid behind: a crash.
        await RestartAsync(ct).ConfigureAwait(false);
        return false;
    }

    private async Task RestartAsync(CancellationToken ct)
    {
        if (!_restartPending)
        {
            SafeLog(() => _logger.LogError("PostgreSQL (pid {Pid}) on {DataDirectory} died; restarting it on port {Port} (crash recovery replays its WAL)", _postmasterPid, _dataDirectory, _port));
        }
        _restartPending = true;
        try
        {
            await HandleLeftoverServerAsync(_runner, _dataDirectory, _logger, ct).ConfigureAwait(false);
            await StartServerAsync(_runner, _dataDirectory, _logFile, _port, _statementStatistics, _logger, ct).ConfigureAwait(false);
            _postmasterPid = ReadPostmasterPid(_dataDirectory);
            _restartPending = false;
            SafeLog(() => _logger.LogWarning("PostgreSQL restarted on port {Port} (pid {Pid})", _port, _postmasterPid));
            Restarted?.Invoke();
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // E.g. backends of the dead postmaster still hold its shared memory: try again next round
            // (whatever failed, supervision must go on).
            SafeLog(() => _logger.LogError("Restarting PostgreSQL failed; trying again in {Interval} s: {Reason}", SupervisionInterval.TotalSeconds, ex.Message));
        }
    }

    private bool IsOurPostmasterAlive()
    {
        if (_postmasterPid <= 0)
        {
            return false;
        }
        var proc = $"/proc/{_postmasterPid.ToString(CultureInfo.InvariantCulture)}";
        try
        {
            if (!Directory.Exists(proc) || IsZombie(proc))
            {
                return false;
            }
            // argv of the postmaster is "<bin>/postgres -D <dataDir> ...", NUL-separated.
            var argv = File.ReadAllText(Path.Combine(proc, "cmdline")).Split('\0');
            var d = Array.IndexOf(argv, "-D");
            return d >= 0 && d + 1 < argv.Length && argv[d + 1] == _dataDirectory;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static int ReadPostmasterPid(string dataDir)
    {
        try
        {
            var first = File.ReadLines(Path.Combine(dataDir, "postmaster.pid")).FirstOrDefault();
            return int.TryParse(first?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : 0;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
    }

    // The logger may belong to a factory that was disposed before we are (or the process is exiting).
    private static void SafeLog(Action log)
    {
        try
        {
            log();
        }
        catch (Exception ex) when (ex is ObjectDisposedException or InvalidOperationException or IOException)
        {
            // nowhere left to log to
        }
    }

    // Safety net: if the owner never disposes us (e.g. the host is torn down without disposing its
    // services), still stop the server when the process exits so it is not orphaned.
    private void OnProcessExit(object? sender, EventArgs e)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        try
        {
            StopSupervisingAsync().GetAwaiter().GetResult();
            StopAsync().GetAwaiter().GetResult();
        }
        catch
        {
            // Nothing sensible left to do while the process exits.
        }
    }

    // ---------------------------------------------------------------------------------------
    // Locating binaries and the OS user
    // ---------------------------------------------------------------------------------------

    private static string FindBinDirectory()
    {
        const string debianRoot = "/usr/lib/postgresql";
        if (Directory.Exists(debianRoot))
        {
            var best = Directory.EnumerateDirectories(debianRoot)
                .Select(d => (Dir: d, Version: ParseVersion(Path.GetFileName(d))))
                .Where(x => x.Version is not null
                            && File.Exists(Path.Combine(x.Dir, "bin", "initdb"))
                            && File.Exists(Path.Combine(x.Dir, "bin", "pg_ctl"))
                            && File.Exists(Path.Combine(x.Dir, "bin", "postgres")))
                .OrderByDescending(x => x.Version)
                .Select(x => Path.Combine(x.Dir, "bin"))
                .FirstOrDefault();
            if (best is not null)
            {
                return best;
            }
        }

        var initdb = FindOnPath("initdb");
        var pgCtl = FindOnPath("pg_ctl");
        if (initdb is not null && pgCtl is not null && Path.GetDirectoryName(initdb) == Path.GetDirectoryName(pgCtl))
        {
            return Path.GetDirectoryName(initdb)!;
        }

        throw new InvalidOperationException(
            "PostgreSQL is not installed: apt-get install postgresql " +
            "(looked for initdb and pg_ctl under /usr/lib/postgresql/*/bin and on PATH).");
    }

    private static Version? ParseVersion(string name)
    {
        if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var major))
        {
            return new Version(major, 0);
        }
        return Version.TryParse(name, out var v) ? v : null;
    }

    private static string? FindOnPath(string program)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? string.Empty;
        var dirs = path.Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
        foreach (var dir in dirs)
        {
            var candidate = Path.Combine(dir, program);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    [DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint NativeGetEuid();

    private const int SigInt = 2;
    private const int SigQuit = 3;

    [DllImport("libc", EntryPoint = "kill")]
    private static extern int NativeKill(int pid, int signal);

    private static bool IsRoot()
    {
        if (string.Equals(Environment.UserName, "root", StringComparison.Ordinal))
        {
            return true;
        }
        try
        {
            return OperatingSystem.IsLinux() && NativeGetEuid() == 0;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [UnsupportedOSPlatform("windows")]
    private static async Task<string> ChooseDirectoryReachableByOsUserAsync(Runner runner, string requested, ILogger logger, CancellationToken ct)
    {
        var parent = Path.GetDirectoryName(requested)!;
        try
        {
            // Creates missing ancestors with the process umask (normally 0755).
            Directory.CreateDirectory(parent);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new InvalidOperationException($"Cannot create the parent directory '{parent}' of the PostgreSQL data directory: {ex.Message}", ex);
        }

        // 'test -x' goes through access(2), so it fails when any ancestor is not searchable.
        var probe = await runner.RunAsync("test", ["-x", parent], asOsUser: true, ShortTimeout, ct).ConfigureAwait(false);
        if (probe.ExitCode == 0)
        {
            return requested;
        }

        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(requested)))[..12];
        var fallbackRoot = $"/var/tmp/phrfhir-{hash}";
        var fallback = Path.Combine(fallbackRoot, "data");
        logger.LogWarning(
            "The PostgreSQL data directory {Requested} is not reachable by the unprivileged '{OsUser}' OS user " +
            "(PostgreSQL refuses to run as root, and a parent directory is not searchable by that user); " +
            "using {Fallback} instead. Make the parent directories searchable (chmod o+x) to use the requested location.",
            requested, OsUser, fallback);

        Directory.CreateDirectory(fallbackRoot, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        await runner.ChownAsync(fallbackRoot, recursive: false, ct).ConfigureAwait(false);
        var check = await runner.RunAsync("test", ["-x", fallbackRoot, "-a", "-w", fallbackRoot], asOsUser: true, ShortTimeout, ct).ConfigureAwait(false);
        if (check.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"Neither the requested PostgreSQL data directory '{requested}' nor the fallback '{fallback}' is accessible to the '{OsUser}' OS user.");
        }
        return fallback;
    }

    // ---------------------------------------------------------------------------------------
    // initdb
    // ---------------------------------------------------------------------------------------

    [UnsupportedOSPlatform("windows")]
    private static async Task InitDbAsync(Runner runner, string dataDir, ILogger logger, CancellationToken ct)
    {
        if (Directory.Exists(dataDir) && Directory.EnumerateFileSystemEntries(dataDir).Any())
        {
            throw new InvalidOperationException(
                $"The PostgreSQL data directory '{dataDir}' exists and is not empty but holds no cluster (no PG_VERSION). " +
                "Remove it or point Storage:DataDirectory somewhere else.");
        }

        // initdb runs into a scratch directory that is renamed into place only once it has
        // succeeded and the password file is written, so a killed initdb never leaves a
        // half-made cluster (or a cluster without its password) at the real path.
        var parent = Path.GetDirectoryName(dataDir)!;
        var name = Path.GetFileName(dataDir);
        var scratch = Path.Combine(parent, $".{name}.initdb-tmp");
        var pwFile = Path.Combine(parent, $".{name}.initdb-pw");
        if (Directory.Exists(scratch))
        {
            Directory.Delete(scratch, recursive: true);
        }
        File.Delete(pwFile);

        var password = RandomNumberGenerator.GetString("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 32);
        var ownerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        var ownerOnlyDir = ownerOnly | UnixFileMode.UserExecute;

        Directory.CreateDirectory(scratch, ownerOnlyDir);
        try
        {
            await WriteSecretFileAsync(pwFile, password, ownerOnly, ct).ConfigureAwait(false);
            if (runner.AsRoot)
            {
                await runner.ChownAsync(scratch, recursive: false, ct).ConfigureAwait(false);
                await runner.ChownAsync(pwFile, recursive: false, ct).ConfigureAwait(false);
            }

            var locale = await PickLocaleAsync(runner, ct).ConfigureAwait(false);
            logger.LogInformation("Initialising a new PostgreSQL cluster in {DataDirectory} (locale {Locale})", dataDir, locale);
            var result = await runner.RunAsync(
                runner.Bin("initdb"),
                [
                    "--pgdata", scratch,
                    "--username", SuperUser,
                    "--encoding", "UTF8",
                    "--locale", locale,
                    "--auth", "scram-sha-256",
                    "--pwfile", pwFile,
                ],
                asOsUser: true, InitDbTimeout, ct).ConfigureAwait(false);
            result.ThrowIfFailed("initdb");

            await WriteSecretFileAsync(Path.Combine(scratch, PasswordFileName), password, ownerOnly, ct).ConfigureAwait(false);
            if (runner.AsRoot)
            {
                await runner.ChownAsync(Path.Combine(scratch, PasswordFileName), recursive: false, ct).ConfigureAwait(false);
            }

            if (Directory.Exists(dataDir))
            {
                Directory.Delete(dataDir); // empty, checked above
            }
            Directory.Move(scratch, dataDir);
        }
        finally
        {
            TryDeleteFile(pwFile);
            if (Directory.Exists(scratch))
            {
                try
                {
                    Directory.Delete(scratch, recursive: true);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    logger.LogDebug(ex, "Could not remove {Scratch}", scratch);
                }
            }
        }
    }

    private static async Task<string> PickLocaleAsync(Runner runner, CancellationToken ct)
    {
        // C.UTF-8 sorts like C (by code point) but gives upper()/lower() full Unicode case mapping.
        try
        {
            var locales = await runner.RunAsync("locale", ["-a"], asOsUser: false, ShortTimeout, ct).ConfigureAwait(false);
            if (locales.ExitCode == 0 && locales.StdOut
                    .Split('\n', StringSplitOptions.TrimEntries)
                    .Any(l => l.Equals("C.utf8", StringComparison.OrdinalIgnoreCase) || l.Equals("C.UTF-8", StringComparison.OrdinalIgnoreCase)))
            {
                return "C.UTF-8";
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // no 'locale' program: fall through to C
        }
        return "C";
    }

    [UnsupportedOSPlatform("windows")]
    private static async Task WriteSecretFileAsync(string path, string content, UnixFileMode mode, CancellationToken ct)
    {
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = mode,
        };
        await using var stream = new FileStream(path, options);
        await using var writer = new StreamWriter(stream, new UTF8Encoding(false));
        await writer.WriteAsync(content.AsMemory(), ct).ConfigureAwait(false);
    }

    private static string ReadPassword(string dataDir)
    {
        var file = Path.Combine(dataDir, PasswordFileName);
        if (!File.Exists(file))
        {
            throw new InvalidOperationException(
                $"The PostgreSQL cluster in '{dataDir}' has no password file '{PasswordFileName}' (it was not created by PhrFhir). " +
                "Remove the directory to let PhrFhir initialise a new cluster, or configure an explicit connection string.");
        }
        var password = File.ReadAllText(file).Trim();
        if (password.Length == 0)
        {
            throw new InvalidOperationException($"The PostgreSQL password file in '{dataDir}' is empty.");
        }
        return password;
    }

    private static void TryDeleteFile(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // best effort
        }
    }

    // ---------------------------------------------------------------------------------------
    // start / stop
    // ---------------------------------------------------------------------------------------

    private static async Task HandleLeftoverServerAsync(Runner runner, string dataDir, ILogger logger, CancellationToken ct)
    {
        var pidFile = Path.Combine(dataDir, "postmaster.pid");
        if (!File.Exists(pidFile))
        {
            return;
        }

        string? firstLine;
        try
        {
            firstLine = File.ReadLines(pidFile).FirstOrDefault();
        }
        catch (IOException)
        {
            return;
        }
        if (!int.TryParse(firstLine?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
        {
            return; // let postgres judge an unreadable pid file
        }
        var proc = $"/proc/{pid.ToString(CultureInfo.InvariantCulture)}";
        if (!Directory.Exists(proc))
        {
            return; // dead pid: postgres recognises the stale file by itself
        }

        if (IsZombie(proc))
        {
            // An exited postmaster that nobody reaped (PID 1 in some containers does not reap).
            // kill(pid, 0) still succeeds on it, so postgres would refuse to start.
            logger.LogWarning("Removing stale {PidFile}: pid {Pid} is a defunct (zombie) process", pidFile, pid);
            File.Delete(pidFile);
            return;
        }

        if (IsPostmasterFor(proc, dataDir))
        {
            logger.LogWarning("A PostgreSQL server (pid {Pid}) from an earlier run is still running on {DataDirectory}; stopping it before starting a new one", pid, dataDir);
            await StopServerAsync(runner, dataDir, logger, ct).ConfigureAwait(false);
            return;
        }

        logger.LogWarning("Removing stale {PidFile}: pid {Pid} is alive but is not a PostgreSQL server for this data directory", pidFile, pid);
        File.Delete(pidFile);
    }

    private static bool IsZombie(string proc)
    {
        try
        {
            // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces and parentheses.
            var stat = File.ReadAllText(Path.Combine(proc, "stat"));
            var close = stat.LastIndexOf(')');
            var state = close >= 0 && close + 2 < stat.Length ? stat[close + 2] : '?';
            return state is 'Z' or 'X' or 'x';
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static bool IsPostmasterFor(string proc, string dataDir)
    {
        try
        {
            var comm = File.ReadAllText(Path.Combine(proc, "comm")).Trim();
            if (comm is not ("postgres" or "postmaster"))
            {
                return false;
            }
            // The postmaster chdirs into its data directory.
            var cwd = new DirectoryInfo(Path.Combine(proc, "cwd")).LinkTarget;
            if (cwd is null)
            {
                return true; // cannot tell: assume it is ours rather than deleting a live server's pid file
            }
            var real = ResolveRealPath(dataDir);
            return string.Equals(cwd.TrimEnd('/'), real.TrimEnd('/'), StringComparison.Ordinal);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return true; // same conservative choice as above
        }
    }

    private static string ResolveRealPath(string path)
    {
        var info = new DirectoryInfo(path);
        var target = info.ResolveLinkTarget(returnFinalTarget: true);
        return target?.FullName ?? info.FullName;
    }

    private static async Task StartServerAsync(Runner runner, string dataDir, string logFile, int port, bool statementStatistics, ILogger logger, CancellationToken ct)
    {
        // Unix socket paths are limited to 107 bytes; without room for ".s.PGSQL.<port>" we run
        // TCP-only (the application never uses the socket).
        var socketDir = dataDir.Length + "/.s.PGSQL.65535".Length < 100 ? dataDir : string.Empty;
        var options = string.Join(' ',
            "-c listen_addresses=127.0.0.1",
            $"-p {port.ToString(CultureInfo.InvariantCulture)}",
            $"-k {ShellQuote(socketDir)}",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
            // A committed health record must survive a crash of PostgreSQL itself: synchronous_commit=off
            // could lose the last ~0.6 s of commits. Concurrent commits still share one fsync; commit_delay
            // stays 0 (measured: 2,500 µs halved 8-client commit throughput, docs/storage.md).
            "-c fsync=on",
            "-c synchronous_commit=on",
            // Fewer checkpoints under a write load: the first change of a page after each one is logged whole.
            "-c checkpoint_timeout=15min",
            "-c max_wal_size=2GB",
            // Short statements never repay compiling their plan to machine code (tens of ms when a large
            // search's cost estimate crosses jit_above_cost).
            "-c jit=off",
            statementStatistics ? "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" : "");

        logger.LogDebug("Starting PostgreSQL: pg_ctl start -D {DataDirectory} -o {Options}", dataDir, options);
        var result = await runner.RunAsync(
            runner.Bin("pg_ctl"),
            ["start", "-w", "-t", PgCtlWaitSeconds.ToString(CultureInfo.InvariantCulture), "-D", dataDir, "-l", logFile, "-o", options],
            asOsUser: true, StartTimeout, ct).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"pg_ctl start failed (exit code {result.ExitCode}) for data directory '{dataDir}' on port {port}.\n" +
                $"{result.Describe()}\n--- last lines of {logFile} ---\n{Tail(logFile, 30)}");
        }
    }

    private static async Task StopServerAsync(Runner runner, string dataDir, ILogger logger, CancellationToken ct)
    {
        var result = await runner.RunAsync(
            runner.Bin("pg_ctl"),
            ["stop", "-w", "-t", "60", "-m", "fast", "-D", dataDir],
            asOsUser: true, StopTimeout, ct).ConfigureAwait(false);
        if (result.ExitCode == 0)
        {
            return;
        }

        // pg_ctl stop fails harmlessly when no server is running ("PID file ... does not exist").
        if (!File.Exists(Path.Combine(dataDir, "postmaster.pid")))
        {
            return;
        }

        SafeLog(() => logger.LogWarning("pg_ctl stop -m fast failed ({Reason}); trying -m immediate", FirstLine(result.Describe())));
        var immediate = await runner.RunAsync(
            runner.Bin("pg_ctl"),
            ["stop", "-w", "-t", "60", "-m", "immediate", "-D", dataDir],
            asOsUser: true, StopTimeout, ct).ConfigureAwait(false);
        immediate.ThrowIfFailed("pg_ctl stop -m immediate");
    }

    private static async Task EnsureDatabaseAsync(int port, string password, bool statementStatistics, CancellationToken ct)
    {
        await CreateDatabaseAsync(port, password, ct).ConfigureAwait(false);
        if (!statementStatistics)
        {
            return;
        }
        await using var conn = new NpgsqlConnection(BuildConnectionString(port, password, DatabaseName, pooling: false));
        await conn.OpenAsync(ct).ConfigureAwait(false);
        await using var create = new NpgsqlCommand("create extension if not exists pg_stat_statements", conn);
        await create.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    private static async Task CreateDatabaseAsync(int port, string password, CancellationToken ct)
    {
        await using var conn = new NpgsqlConnection(BuildConnectionString(port, password, "postgres", pooling: false));
        await conn.OpenAsync(ct).ConfigureAwait(false);

        await using (var exists = new NpgsqlCommand("select 1 from pg_database where datname = @name", conn))
        {
            exists.Parameters.AddWithValue("name", DatabaseName);
            if (await exists.ExecuteScalarAsync(ct).ConfigureAwait(false) is not null)
            {
                return;
            }
        }

        try
        {
            await using var create = new NpgsqlCommand($"create database \"{DatabaseName}\" encoding 'UTF8' template template0", conn);
            await create.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.DuplicateDatabase)
        {
            // created concurrently: fine
        }
    }

    private static string BuildConnectionString(int port, string password, string database, bool pooling)
    {
        var builder = new NpgsqlConnectionStringBuilder
        {
            Host = "127.0.0.1",
            Port = port,
            Username = SuperUser,
            Password = password,
            Database = database,
            Pooling = pooling,
        };
        return builder.ConnectionString;
    }

    private static int PickFreeLoopbackPort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }
        finally
        {
            listener.Stop();
        }
    }

    private static string ShellQuote(string value) => "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static string FirstLine(string text)
    {
        var i = text.IndexOf('\n', StringComparison.Ordinal);
        return i < 0 ? text : text[..i];
    }

    private static string Tail(string file, int lines)
    {
        try
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            var all = reader.ReadToEnd().Split('\n');
            return string.Join('\n', all.Skip(Math.Max(0, all.Length - lines)));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"(could not read: {ex.Message})";
        }
    }

    // ---------------------------------------------------------------------------------------
    // Process running
    // ---------------------------------------------------------------------------------------

    private sealed record ProcessResult(string Command, int ExitCode, string StdOut, string StdErr)
    {
        public string Describe()
        {
            var sb = new StringBuilder();
            sb.Append(CultureInfo.InvariantCulture, $"command: {Command}\nexit code: {ExitCode}");
            if (!string.IsNullOrWhiteSpace(StdErr))
            {
                sb.Append("\nstderr:\n").Append(StdErr.TrimEnd());
            }
            if (!string.IsNullOrWhiteSpace(StdOut))
            {
                sb.Append("\nstdout:\n").Append(StdOut.TrimEnd());
            }
            return sb.ToString();
        }

        public void ThrowIfFailed(string what)
        {
            if (ExitCode != 0)
            {
                throw new InvalidOperationException($"{what} failed.\n{Describe()}");
            }
        }
    }

    private sealed class Runner(string binDir, bool asRoot, ILogger logger)
    {
        public bool AsRoot { get; } = asRoot;

        public string Bin(string program) => Path.Combine(binDir, program);

        public async Task EnsureOsUserAsync(CancellationToken ct)
        {
            var id = await RunAsync("id", ["-u", OsUser], asOsUser: false, ShortTimeout, ct).ConfigureAwait(false);
            if (id.ExitCode == 0)
            {
                return;
            }
            logger.LogWarning("Creating the system user '{OsUser}' to run PostgreSQL (it refuses to run as root)", OsUser);
            var useradd = FindOnPath("useradd") ?? "useradd";
            var created = await RunAsync(
                useradd,
                ["--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/postgresql", "--shell", "/usr/sbin/nologin", OsUser],
                asOsUser: false, ShortTimeout, ct).ConfigureAwait(false);
            created.ThrowIfFailed($"Creating the '{OsUser}' OS user");
        }

        public async Task ChownAsync(string path, bool recursive, CancellationToken ct)
        {
            string[] args = recursive ? ["-R", $"{OsUser}:", path] : [$"{OsUser}:", path];
            var result = await RunAsync("chown", args, asOsUser: false, ShortTimeout, ct).ConfigureAwait(false);
            result.ThrowIfFailed($"chown of '{path}' to '{OsUser}'");
        }

        public async Task ChownToOsUserIfNeededAsync(string dataDir, CancellationToken ct)
        {
            var stat = await RunAsync("stat", ["-c", "%U", dataDir], asOsUser: false, ShortTimeout, ct).ConfigureAwait(false);
            if (stat.ExitCode == 0 && stat.StdOut.Trim() == OsUser)
            {
                return;
            }
            logger.LogWarning("The PostgreSQL data directory {DataDirectory} is not owned by '{OsUser}'; changing its owner", dataDir, OsUser);
            await ChownAsync(dataDir, recursive: true, ct).ConfigureAwait(false);
        }

        public async Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> args, bool asOsUser, TimeSpan timeout, CancellationToken ct)
        {
            var psi = new ProcessStartInfo
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
                // The postgres user may not be able to read the caller's working directory.
                WorkingDirectory = "/",
            };
            if (asOsUser && AsRoot)
            {
                psi.FileName = FindOnPath("runuser") ?? "runuser";
                psi.ArgumentList.Add("-u");
                psi.ArgumentList.Add(OsUser);
                psi.ArgumentList.Add("--");
                psi.ArgumentList.Add(program);
            }
            else
            {
                psi.FileName = program;
            }
            foreach (var arg in args)
            {
                psi.ArgumentList.Add(arg);
            }
            // Keep client settings of the caller's environment from leaking into our tools.
            foreach (var name in new[] { "PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGPASSWORD", "PGOPTIONS", "PGDATABASE" })
            {
                psi.Environment.Remove(name);
            }
            psi.Environment["LC_MESSAGES"] = "C";

            var command = string.Join(' ', psi.ArgumentList.Prepend(psi.FileName));
            using var process = new Process { StartInfo = psi };
            try
            {
                process.Start();
            }
            catch (System.ComponentModel.Win32Exception ex)
            {
                throw new InvalidOperationException($"Could not run '{psi.FileName}': {ex.Message}", ex);
            }
            process.StandardInput.Close();

            var stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            var stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);

            using var timeoutCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeoutCts.CancelAfter(timeout);
            try
            {
                await process.WaitForExitAsync(timeoutCts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                try
                {
                    process.Kill(entireProcessTree: true);
                }
                catch (InvalidOperationException)
                {
                    // already exited
                }
                ct.ThrowIfCancellationRequested();
                var partialErr = await ReadWithin(stderr, TimeSpan.FromSeconds(2)).ConfigureAwait(false);
                throw new InvalidOperationException(
                    $"'{command}' did not finish within {timeout.TotalSeconds:0} s and was killed.\nstderr:\n{partialErr}");
            }

            var output = await ReadWithin(stdout, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            var error = await ReadWithin(stderr, TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            return new ProcessResult(command, process.ExitCode, output, error);
        }

        // A daemon child that kept our pipe open must not make us hang.
        private static async Task<string> ReadWithin(Task<string> read, TimeSpan limit)
        {
            var done = await Task.WhenAny(read, Task.Delay(limit)).ConfigureAwait(false);
            return done == read ? await read.ConfigureAwait(false) : string.Empty;
        }
    }
}
