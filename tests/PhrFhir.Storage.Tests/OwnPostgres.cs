using System.Runtime.Versioning;
using Microsoft.Extensions.Logging.Abstractions;
using PhrFhir.Storage.Embedded;

namespace PhrFhir.Storage.Tests;

/// <summary>A test's own embedded PostgreSQL in a directory of its own, stopped and removed when disposed.</summary>
[UnsupportedOSPlatform("windows")]
sealed class OwnPostgres : IAsyncDisposable
{
    // Not Directory.CreateTempSubdirectory: 0700, which the 'postgres' OS user (tests running as root) could not enter.
    readonly string _root = Path.Combine(Path.GetTempPath(), "phrfhir-owntest-" + Guid.NewGuid().ToString("N")[..12]);
    EmbeddedPostgres? _pg;

    public string ConnectionString => _pg!.ConnectionString;

    public static async Task<OwnPostgres> StartAsync(bool statementStatistics = false)
    {
        var own = new OwnPostgres();
        Directory.CreateDirectory(own._root);
        own._pg = await EmbeddedPostgres.StartAsync(Path.Combine(own._root, "pgdata"), 0, NullLogger.Instance,
            new CancellationTokenSource(TimeSpan.FromMinutes(4)).Token, statementStatistics);
        return own;
    }

    public async ValueTask DisposeAsync()
    {
        if (_pg is not null) await _pg.DisposeAsync();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
