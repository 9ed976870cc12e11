using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.Versioning;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Npgsql;
using PhrFhir.Storage.Embedded;
using Xunit.Abstractions;

namespace PhrFhir.Storage.Tests;

// The launcher targets Linux (Debian's PostgreSQL packages, runuser, /proc).
[UnsupportedOSPlatform("windows")]
public sealed class EmbeddedPostgresTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly CollectingLogger _logger;
    private readonly string _root;
    private readonly List<string> _extraCleanup = [];

    public EmbeddedPostgresTests(ITestOutputHelper output)
    {
        _output = output;
        _logger = new CollectingLogger(output);
        // Not Directory.CreateTempSubdirectory: that makes a 0700 directory, which the 'postgres'
        // OS user (used when the tests run as root) could not enter.
        _root = Path.Combine(Path.GetTempPath(), "phrfhir-pgtest-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_root);
    }

    private string DataDir => Path.Combine(_root, "pgdata");

    private static CancellationToken Timeout() => new CancellationTokenSource(TimeSpan.FromMinutes(4)).Token;

    [Fact]
    public async Task EmbeddedPostgres_StartsQueriesAndKeepsDataAndPasswordAcrossRestart()
    {
        string firstPassword;
        await using (var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout()))
        {
            var csb = new NpgsqlConnectionStringBuilder(pg.ConnectionString);
            Assert.Equal("127.0.0.1", csb.Host);
            Assert.Equal("phrfhir", csb.Database);
            Assert.False(string.IsNullOrEmpty(csb.Password));
            Assert.NotEqual(0, csb.Port);
            firstPassword = csb.Password!;

            await using var conn = new NpgsqlConnection(pg.ConnectionString);
            await conn.OpenAsync();
            var version = (string?)await new NpgsqlCommand("select version()", conn).ExecuteScalarAsync();
            _output.WriteLine(version);
            Assert.StartsWith("PostgreSQL", version);

            var encoding = (string?)await new NpgsqlCommand("show server_encoding", conn).ExecuteScalarAsync();
            Assert.Equal("UTF8", encoding);

            await new NpgsqlCommand("create table survivor(id int primary key, name text not null)", conn).ExecuteNonQueryAsync();
            await new NpgsqlCommand("insert into survivor values (1, 'Zoë')", conn).ExecuteNonQueryAsync();
        }

        Assert.True(File.Exists(Path.Combine(DataDir, "PG_VERSION")));
        Assert.False(File.Exists(Path.Combine(DataDir, "postmaster.pid")), "the server should be stopped after DisposeAsync");
        var passwordFile = Path.Combine(DataDir, "phrfhir.password");
        Assert.True(File.Exists(passwordFile));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(passwordFile));
        Assert.DoesNotContain(_logger.Messages, m => m.Contains(firstPassword, StringComparison.Ordinal));

        await using (var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout()))
        {
            Assert.Equal(firstPassword, new NpgsqlConnectionStringBuilder(pg.ConnectionString).Password);

            await using var conn = new NpgsqlConnection(pg.ConnectionString);
            await conn.OpenAsync();
            var name = (string?)await new NpgsqlCommand("select name from survivor where id = 1", conn).ExecuteScalarAsync();
            Assert.Equal("Zoë", name);
        }
        Assert.DoesNotContain(_logger.Messages, m => m.Contains(firstPassword, StringComparison.Ordinal));
    }

    [Fact]
    public async Task EmbeddedPostgres_ListensOnlyOnLoopbackIPv4()
    {
        await using var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout());
        var port = new NpgsqlConnectionStringBuilder(pg.ConnectionString).Port;

        await using (var conn = new NpgsqlConnection(pg.ConnectionString))
        {
            await conn.OpenAsync();
            var listen = (string?)await new NpgsqlCommand("show listen_addresses", conn).ExecuteScalarAsync();
            Assert.Equal("127.0.0.1", listen);
        }

        // Every listening TCP socket on that port in this network namespace is bound to 127.0.0.1.
        var listeners = ListeningSockets(port);
        Assert.NotEmpty(listeners);
        Assert.All(listeners, l => Assert.Equal("0100007F", l));

        if (Socket.OSSupportsIPv6)
        {
            using var client = new TcpClient(AddressFamily.InterNetworkV6);
            await Assert.ThrowsAnyAsync<SocketException>(() => client.ConnectAsync(IPAddress.IPv6Loopback, port));
        }
    }

    [Fact]
    public async Task EmbeddedPostgres_RunsWithTheSettingsDocsStorageNames()
    {
        // docs/storage.md, "PostgreSQL settings of the embedded server": a commit is durable, statistics are kept.
        await using var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout());
        await using var conn = new NpgsqlConnection(pg.ConnectionString);
        await conn.OpenAsync();
        async Task<string?> Show(string setting) => (string?)await new NpgsqlCommand("show " + setting, conn).ExecuteScalarAsync();
        Assert.Equal("on", await Show("fsync"));
        Assert.Equal("on", await Show("synchronous_commit"));
        Assert.Equal("on", await Show("autovacuum"));
        Assert.Equal("15min", await Show("checkpoint_timeout"));
        Assert.Equal("off", await Show("jit"));
    }

    [Fact]
    public async Task EmbeddedPostgres_ExplicitPortIsUsed()
    {
        var port = FreePort();
        await using var pg = await EmbeddedPostgres.StartAsync(DataDir, port, _logger, Timeout());
        Assert.Equal(port, new NpgsqlConnectionStringBuilder(pg.ConnectionString).Port);
        await using var conn = new NpgsqlConnection(pg.ConnectionString);
        await conn.OpenAsync();
        Assert.Equal(1, (int)(await new NpgsqlCommand("select 1", conn).ExecuteScalarAsync())!);
    }

    [Fact]
    public async Task EmbeddedPostgres_RecoversFromLeftoverServerAndStalePidFile()
    {
        // A server whose owner went away without disposing it (as after a SIGKILL of the app).
        var orphan = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout());
        var orphanPort = new NpgsqlConnectionStringBuilder(orphan.ConnectionString).Port;

        await using (var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout()))
        {
            Assert.Contains(_logger.Messages, m => m.Contains("still running", StringComparison.Ordinal));
            await using var conn = new NpgsqlConnection(pg.ConnectionString);
            await conn.OpenAsync();
            Assert.Equal(1, (int)(await new NpgsqlCommand("select 1", conn).ExecuteScalarAsync())!);

            using var old = new TcpClient();
            if (new NpgsqlConnectionStringBuilder(pg.ConnectionString).Port != orphanPort)
            {
                await Assert.ThrowsAnyAsync<SocketException>(() => old.ConnectAsync(IPAddress.Loopback, orphanPort));
            }
        }

        // A postmaster.pid naming a live process that is not postgres (pid reuse after a restart).
        var pidFile = Path.Combine(DataDir, "postmaster.pid");
        await File.WriteAllTextAsync(pidFile, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n" + DataDir + "\n");
        await using (var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout()))
        {
            await using var conn = new NpgsqlConnection(pg.ConnectionString);
            await conn.OpenAsync();
            Assert.Equal(1, (int)(await new NpgsqlCommand("select 1", conn).ExecuteScalarAsync())!);
        }
        // The orphan's own DisposeAsync would stop whatever runs on the directory now; there is none.
        await orphan.DisposeAsync();
    }

    [Fact]
    public async Task EmbeddedPostgres_RestartsByItselfAfterPostmasterWasKilled()
    {
        await using var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout());
        var restarted = 0;
        pg.Restarted += () => Interlocked.Increment(ref restarted);
        await using (var conn = new NpgsqlConnection(pg.ConnectionString))
        {
            await conn.OpenAsync();
            await new NpgsqlCommand("create table crashed(x int); insert into crashed values (42)", conn).ExecuteNonQueryAsync();
        }

        // SIGKILL the postmaster (as the OOM killer would): postmaster.pid stays behind, naming a dead
        // (or, where PID 1 does not reap, a zombie) process.
        var pid = pg.PostmasterPid;
        Assert.Equal(pid, int.Parse(File.ReadLines(Path.Combine(DataDir, "postmaster.pid")).First(), CultureInfo.InvariantCulture));
        System.Diagnostics.Process.GetProcessById(pid).Kill();

        // Nobody calls StartAsync again: the same connection string works again within a bounded time.
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (true)
        {
            NpgsqlConnection.ClearAllPools();
            try
            {
                await using var conn = new NpgsqlConnection(pg.ConnectionString);
                await conn.OpenAsync();
                Assert.Equal(42, (int)(await new NpgsqlCommand("select x from crashed", conn).ExecuteScalarAsync())!);
                break;
            }
            catch (NpgsqlException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
        }
        // A client can connect a moment before the supervisor has recorded the new postmaster (its next round
        // when pg_ctl gave up waiting for a server that came up after all).
        for (var settle = DateTime.UtcNow.AddSeconds(30); Volatile.Read(ref restarted) == 0 && DateTime.UtcNow < settle;)
            await Task.Delay(100);
        Assert.NotEqual(pid, pg.PostmasterPid);
        Assert.True(IsGoneOrZombie(pid));
        Assert.Equal(1, Volatile.Read(ref restarted));
        Assert.Contains(_logger.Messages, m => m.Contains("died; restarting", StringComparison.Ordinal));
    }

    [Fact]
    public async Task EmbeddedPostgres_LeavesAServerStoppedFromOutsideStopped()
    {
        await using var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout());
        var pid = pg.PostmasterPid;
        // A clean shutdown (pg_ctl stop, or another launcher taking over) removes postmaster.pid.
        NativeKill(pid, 2); // SIGINT: fast shutdown
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline && !IsGoneOrZombie(pid)) await Task.Delay(100);
        await Task.Delay(3000); // three rounds of supervision
        Assert.False(File.Exists(Path.Combine(DataDir, "postmaster.pid")), "restarted a server that was stopped on purpose");
        Assert.Contains(_logger.Messages, m => m.Contains("shut down from outside", StringComparison.Ordinal));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill")]
    private static extern int NativeKill(int pid, int signal);

    [Fact]
    public async Task EmbeddedPostgres_DisposeStopsServerEvenIfDataDirectoryWasDeleted()
    {
        var pg = await EmbeddedPostgres.StartAsync(DataDir, 0, _logger, Timeout());
        var pid = int.Parse(File.ReadLines(Path.Combine(DataDir, "postmaster.pid")).First(), CultureInfo.InvariantCulture);
        Directory.Delete(_root, recursive: true);

        await pg.DisposeAsync();
        Assert.True(IsGoneOrZombie(pid), $"postmaster {pid} still running");
    }

    private static bool IsGoneOrZombie(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2] is 'Z' or 'X';
        }
        catch (IOException)
        {
            return true;
        }
    }

    [Fact]
    public async Task EmbeddedPostgres_AsRoot_FallsBackWhenPostgresUserCannotReachDirectory()
    {
        if (Environment.UserName != "root")
        {
            return; // only meaningful when the launcher has to switch to the 'postgres' OS user
        }
        var locked = Path.Combine(_root, "locked");
        Directory.CreateDirectory(locked, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var requested = Path.Combine(locked, "pgdata");

        await using (var pg = await EmbeddedPostgres.StartAsync(requested, 0, _logger, Timeout()))
        {
            var warning = Assert.Single(_logger.Messages, m => m.Contains("not reachable", StringComparison.Ordinal));
            var match = Regex.Match(warning, "/var/tmp/phrfhir-[0-9a-f]{12}");
            Assert.True(match.Success, warning);
            _extraCleanup.Add(match.Value);

            await using var conn = new NpgsqlConnection(pg.ConnectionString);
            await conn.OpenAsync();
            Assert.Equal(1, (int)(await new NpgsqlCommand("select 1", conn).ExecuteScalarAsync())!);
            await new NpgsqlCommand("create table kept(x int)", conn).ExecuteNonQueryAsync();
        }

        // The same requested path maps to the same fallback directory next time.
        await using (var pg = await EmbeddedPostgres.StartAsync(requested, 0, _logger, Timeout()))
        {
            await using var conn = new NpgsqlConnection(pg.ConnectionString);
            await conn.OpenAsync();
            Assert.Equal(0L, (long)(await new NpgsqlCommand("select count(*) from kept", conn).ExecuteScalarAsync())!);
        }
        Assert.False(Directory.Exists(requested));
    }

    public void Dispose()
    {
        foreach (var dir in _extraCleanup.Append(_root))
        {
            try
            {
                if (Directory.Exists(dir))
                {
                    Directory.Delete(dir, recursive: true);
                }
            }
            catch (Exception ex)
            {
                _output.WriteLine($"cleanup of {dir} failed: {ex.Message}");
            }
        }
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Hex local addresses of sockets in state LISTEN on <paramref name="port"/>, from /proc/net/tcp{,6}.</summary>
    private static List<string> ListeningSockets(int port)
    {
        var result = new List<string>();
        var portHex = port.ToString("X4", CultureInfo.InvariantCulture);
        foreach (var file in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            if (!File.Exists(file))
            {
                continue;
            }
            foreach (var line in File.ReadLines(file).Skip(1))
            {
                var cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (cols.Length < 4)
                {
                    continue;
                }
                var local = cols[1].Split(':');
                if (local[1] == portHex && cols[3] == "0A")
                {
                    result.Add(local[0]);
                }
            }
        }
        return result;
    }

    private sealed class CollectingLogger(ITestOutputHelper output) : ILogger
    {
        private readonly ConcurrentQueue<string> _messages = new();

        public IReadOnlyCollection<string> Messages => _messages.ToArray();

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var text = $"{logLevel}: {formatter(state, exception)}" + (exception is null ? string.Empty : $"\n{exception}");
            _messages.Enqueue(text);
            try
            {
                output.WriteLine(text);
            }
            catch (InvalidOperationException)
            {
                // test already finished (e.g. ProcessExit safety net)
            }
        }
    }
}
