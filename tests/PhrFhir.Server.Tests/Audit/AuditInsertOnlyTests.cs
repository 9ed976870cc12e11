using System.Net;
using System.Security.Cryptography;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using PhrFhir.Storage;
using PhrFhir.Storage.Search;
using static PhrFhir.Server.Tests.Audit.PersonAccessLogTests;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// The audit table is insert-only (Schema/020, docs/audit.md "Tamper evidence"): an AuditEvent's row is written
/// once and the sealer appends its chain link to a narrow table of its own instead of updating the row (which
/// wrote every AuditEvent twice, issue #12). A trail sealed the old way (links in the audit rows) still verifies
/// after the upgrade, and the rows then pending are sealed the new way.
/// </summary>
[Collection("server")]
public sealed class AuditInsertOnlyTests(ServerFixture server)
{
    FhirStore Store => server.Services.GetRequiredService<FhirStore>();

    [Fact]
    public async System.Threading.Tasks.Task A_read_s_AuditEvent_is_written_once_and_linked_by_a_row_of_its_own()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("一度") }] })), HttpStatusCode.Created);
        for (var i = 0; i < 3; i++) Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync($"Patient/{patient.Id}")).StatusCode);
        var events = await PollAsync(server.Operator, $"patient=Patient/{patient.Id}", l => l.Count >= 4); // create + 3 reads (+ these searches)
        Assert.True(events.Count >= 4, $"{events.Count} AuditEvents");
        var outcome = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync("AuditEvent/$verify-chain"), HttpStatusCode.OK); // seals them
        Assert.Equal(OperationOutcome.IssueSeverity.Information, outcome.Issue[0].Severity);

        var ids = events.Select(e => "AuditEvent/" + e.Id).ToArray();
        Assert.Equal((long)ids.Length, await ScalarAsync("select count(*) from fhir.audit_event a join fhir.audit_chain_link c on c.seq = a.seq where a.id = any($1)", ids));
        Assert.Equal(0L, await ScalarAsync("select count(*) from fhir.audit_seal_queue q join fhir.audit_event a on a.seq = q.seq where a.id = any($1)", ids));
        // A row the sealer had updated would carry the sealer's transaction id, as its link does.
        Assert.Equal(0L, await ScalarAsync("select count(*) from fhir.audit_event a join fhir.audit_chain_link c on c.seq = a.seq where a.id = any($1) and a.xmin = c.xmin", ids));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_long_AuditEvent_is_stored_compressed_with_lz4_and_served_as_recorded()
    {
        // Schema/025: PostgreSQL compresses values of rows over ~2 kB; the audit JSON uses lz4 for it.
        var outcome = string.Concat(Enumerable.Repeat("健診結果の閲覧を記録しました。", 120)); // ~5 kB of UTF-8
        var posted = new AuditEvent
        {
            Type = new Coding("http://dicom.nema.org/resources/ontology/DCM", "110106", "Export"),
            Action = AuditEvent.AuditEventAction.R,
            Recorded = DateTimeOffset.UtcNow,
            Outcome = AuditEvent.AuditEventOutcome.N0,
            OutcomeDesc = outcome,
            Agent = [new AuditEvent.AgentComponent { Who = new ResourceReference { Display = "kiosk" }, Requestor = true }],
            Source = new AuditEvent.SourceComponent { Observer = new ResourceReference { Display = "kiosk" } },
        };
        var created = await Fhir.ExpectAsync<AuditEvent>(await server.Operator.PostAsync("AuditEvent", Fhir.Json(posted)), HttpStatusCode.Created);
        Assert.Equal("lz4", await ScalarAsync("select pg_column_compression(json) from fhir.audit_event where id = $1", "AuditEvent/" + created.Id));
        var served = await Fhir.ExpectAsync<AuditEvent>(await server.Operator.GetAsync($"AuditEvent/{created.Id}"), HttpStatusCode.OK);
        Assert.Equal(outcome, served.OutcomeDesc);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_row_taken_off_the_seal_queue_is_found_by_a_full_verification()
    {
        await using var sealing = await HoldSealAsync(Store);
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("列") }] })), HttpStatusCode.Created);
        var audit = "AuditEvent/" + Assert.Single(await PollAsync(server.Operator, $"entity=Patient/{patient.Id}&action=C", l => l.Count > 0)).Id;
        // Never sealed, it could later be removed unseen: a DBA takes it off the queue.
        var seq = (long)(await ScalarAsync("select seq from fhir.audit_event where id = $1", audit))!;
        Assert.Equal(1L, await ScalarAsync("with d as (delete from fhir.audit_seal_queue where seq = $1 returning 1) select count(*) from d", seq));
        try
        {
            var broken = await Fhir.ExpectAsync<OperationOutcome>(await server.Operator.GetAsync("AuditEvent/$verify-chain?full=true"), HttpStatusCode.OK);
            Assert.True(broken.Issue[0].Severity == OperationOutcome.IssueSeverity.Error, broken.Issue[0].Diagnostics);
            Assert.Equal(audit, broken.Issue[0].Expression.Single());
            Assert.Contains("neither in the chain nor awaiting its seal", broken.Issue[0].Diagnostics);
        }
        finally { await ScalarAsync("insert into fhir.audit_seal_queue (seq) values ($1) returning seq", seq); }
    }

    [Fact]
    public async System.Threading.Tasks.Task A_trail_sealed_the_old_way_still_verifies_after_the_upgrade_and_goes_on_insert_only()
    {
        var database = "audit_upgrade_" + Guid.NewGuid().ToString("N")[..8];
        var directory = Path.Combine(Path.GetTempPath(), database);
        Directory.CreateDirectory(directory);
        var connection = new NpgsqlConnectionStringBuilder(server.Postgres.ConnectionString) { Database = database }.ConnectionString;
        await AdminAsync($"create database {database}");
        var chain = new AuditChain(RandomNumberGenerator.GetBytes(32), Path.Combine(directory, AuditChain.CheckpointFileName));
        try
        {
            // The layout before Schema/020 (Schema/009's chain columns and partial index), with 5 AuditEvents, the
            // first 3 sealed as the sealer did then (an UPDATE of each row, the head in the checkpoint file).
            await using (var old = await FhirStore.OpenAsync(connection, SearchParameters.CreateDefault(), default, chain))
            {
                await ExecAsync(old, """
                    drop trigger audit_event_queued on fhir.audit_event;
                    drop function fhir.audit_event_queue_for_seal();
                    drop table fhir.audit_chain_link, fhir.audit_seal_queue;
                    alter table fhir.audit_event add column chain_pos bigint unique, add column chain_mac bytea;
                    create index audit_event_unsealed on fhir.audit_event (seq) where chain_pos is null;
                    delete from fhir.schema_scripts where name like '%020_audit_insert_only.sql';
                    """);
                await AppendAsync(old, 5);
                var previous = new byte[32];
                await using var sealedRows = old.DataSource.CreateCommand("select seq, row_mac from fhir.audit_event order by seq limit 3");
                var rows = new List<(long Seq, byte[] Mac)>();
                await using (var r = await sealedRows.ExecuteReaderAsync())
                    while (await r.ReadAsync()) rows.Add((r.GetInt64(0), r.GetFieldValue<byte[]>(1)));
                for (var pos = 1; pos <= rows.Count; pos++)
                {
                    previous = chain.Link(previous, rows[pos - 1].Mac, pos);
                    await using var update = old.DataSource.CreateCommand("update fhir.audit_event set chain_pos = $1, chain_mac = $2 where seq = $3");
                    update.Parameters.Add(new() { Value = (long)pos });
                    update.Parameters.Add(new() { Value = previous });
                    update.Parameters.Add(new() { Value = rows[pos - 1].Seq });
                    Assert.Equal(1, await update.ExecuteNonQueryAsync());
                }
                chain.WriteCheckpoint(head: new AuditChain.Point(rows.Count, previous));
            }

            // Opening the store again applies Schema/020.
            await using (var store = await FhirStore.OpenAsync(connection, SearchParameters.CreateDefault(), default, chain))
            {
                Assert.Equal(3L, await ScalarAsync(store, "select count(*) from fhir.audit_chain_link where chain_pos between 1 and 3"));
                Assert.Equal(2L, await ScalarAsync(store, "select count(*) from fhir.audit_seal_queue"));
                Assert.Equal(0L, await ScalarAsync(store, "select count(*) from information_schema.columns where table_schema = 'fhir' and table_name = 'audit_event' and column_name in ('chain_pos', 'chain_mac')"));
                Assert.Equal(2, await store.SealAuditChainAsync(default)); // the rows pending at the upgrade: positions 4 and 5
                var report = await store.VerifyAuditChainAsync(full: true, default);
                Assert.Null(report.FirstBreak);
                Assert.Equal(5, report.Checked);

                await AppendAsync(store, 3);
                Assert.Equal(3, await store.SealAuditChainAsync(default));
                var incremental = await store.VerifyAuditChainAsync(full: false, default);
                Assert.Null(incremental.FirstBreak);
                Assert.Equal((5L, 3L), (incremental.FromPosition, incremental.Checked));
                Assert.Equal(8L, await ScalarAsync(store, "select max(chain_pos) from fhir.audit_chain_link"));

                // Tampering with a row sealed the old way is still found after the upgrade.
                await ExecAsync(store, "update fhir.audit_event set outcome = '8' where seq = (select seq from fhir.audit_chain_link where chain_pos = 2)");
                var broken = await store.VerifyAuditChainAsync(full: true, default);
                Assert.Equal((long?)2, broken.FirstBreak?.Position);
            }

            // Since the upgrade nothing updated an audit row but that tampering: the 3 old-way seals and it are the only updates
            // (statistics are flushed when the store's connections close; wait until every insert is counted).
            var (inserted, updated) = (0L, 0L);
            for (var i = 0; i < 100 && inserted < 8; i++, await System.Threading.Tasks.Task.Delay(100))
                (inserted, updated) = await TableStatisticsAsync(connection);
            Assert.Equal((8L, 4L), (inserted, updated));
        }
        finally
        {
            await AdminAsync($"drop database if exists {database} with (force)"); // the stores closed their connections
            Directory.Delete(directory, recursive: true);
        }
    }

    static async System.Threading.Tasks.Task AppendAsync(FhirStore store, int count)
    {
        await using var tx = await store.BeginWriteAsync(default);
        var rows = Enumerable.Range(0, count).Select(i => new AuditRow(Guid.CreateVersion7().ToString(), DateTimeOffset.UtcNow, "upgrade-" + i, null, "rest", ["http://hl7.org/fhir/restful-interaction|read"],
            "R", "0", ["urn:phrfhir:client|upgrade"], [], ["Patient/upgrade-" + i], "{\"resourceType\":\"AuditEvent\"}")).ToList();
        await tx.AppendAuditsAsync(rows, default);
        await tx.CommitAsync(default);
    }

    static async Task<(long Inserted, long Updated)> TableStatisticsAsync(string connection)
    {
        await using var conn = new NpgsqlConnection(connection);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select n_tup_ins, n_tup_upd from pg_stat_user_tables where schemaname = 'fhir' and relname = 'audit_event'", conn);
        await using var r = await cmd.ExecuteReaderAsync();
        Assert.True(await r.ReadAsync());
        return (r.GetInt64(0), r.GetInt64(1));
    }

    async System.Threading.Tasks.Task AdminAsync(string sql)
    {
        await using var conn = new NpgsqlConnection(server.Postgres.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    static async System.Threading.Tasks.Task ExecAsync(FhirStore store, string sql)
    {
        await using var cmd = store.DataSource.CreateCommand(sql);
        await cmd.ExecuteNonQueryAsync();
    }

    Task<object?> ScalarAsync(string sql, object arg) => ScalarAsync(Store, sql, arg);

    static async Task<object?> ScalarAsync(FhirStore store, string sql, params object[] args)
    {
        await using var cmd = store.DataSource.CreateCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new() { Value = a });
        return await cmd.ExecuteScalarAsync();
    }

    /// <summary>Keeps the sealer away (it tries the the same advisory lock without waiting); closing the connection releases it.</summary>
    internal static async Task<NpgsqlConnection> HoldSealAsync(FhirStore store)
    {
        var conn = await store.Sessions.OpenConnectionAsync(); // unpooled: the lock goes when this closes
        await using var cmd = new NpgsqlCommand($"select pg_advisory_lock({FhirStore.SealLock})", conn);
        await cmd.ExecuteNonQueryAsync();
        return conn;
    }
}
