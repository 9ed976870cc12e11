using System.Runtime.Versioning;
using Npgsql;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// A write's identifier checks are planned once per connection (a generic plan, issue #12), with the statistics of
/// that moment. A plan made while the identifier rows were few must still probe each value by the index when they
/// are many: session 7's generic plan, made on an empty database, scanned every Patient identifier row for each
/// check while the bench seeded 10,000 Patients.
/// </summary>
[UnsupportedOSPlatform("windows")]
public sealed class IdentityProbePlanTests : IAsyncLifetime
{
    OwnPostgres? _pg;

    const string System = "urn:oid:1.2.392.100495.20.3.51.11312345678";

    public async Task InitializeAsync() => _pg = await OwnPostgres.StartAsync(statementStatistics: true);

    public async Task DisposeAsync()
    {
        if (_pg is not null) await _pg.DisposeAsync();
    }

    static async Task<HashSet<(string System, string Value)>> HeldElsewhereAsync(FhirStore store, string value)
    {
        await using var tx = await store.BeginWriteAsync(CancellationToken.None);
        var (_, held) = await tx.IdentifierChecksAsync("Patient/new", [(System, value)], readAssigners: true, CancellationToken.None);
        return held;
    }

    async Task<object?> ScalarAsync(string sql)
    {
        await using var conn = new NpgsqlConnection(_pg!.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        return await cmd.ExecuteScalarAsync();
    }

    Task InsertIdentifiersAsync(string prefix, int count) => ScalarAsync(
        "insert into fhir.ix_token (rkey, person, writer, param, system, code) " +
        $"select 'Patient/{prefix}' || n, 'Patient/{prefix}' || n, 'kenshin-a', 'Patient.identifier', '{System}', '{prefix}' || n from generate_series(1, {count}) n");

    [Fact]
    public async Task Checks_planned_while_identifier_rows_were_few_probe_each_value_by_the_index_when_they_are_many()
    {
        // One connection, so that the checks below run the statements it prepared and planned while the table was small.
        var connection = new NpgsqlConnectionStringBuilder(_pg!.ConnectionString) { MaxPoolSize = 1 }.ConnectionString;
        await ScalarAsync("alter system set pg_stat_statements.track_planning = on");
        await ScalarAsync("select pg_reload_conf()");
        await using var store = await FhirStore.OpenAsync(connection, SearchParameters.CreateDefault(), CancellationToken.None);
        // The tables as autovacuum leaves them soon after the first writes: a few rows, analysed (without the analysed
        // person_link, the planner would assume it 10 pages long and probe by index anyway). Then no ANALYZE until the end
        // (autovacuum would make one within a minute, and so have the plans made again).
        await InsertIdentifiersAsync("early", 20);
        await ScalarAsync("insert into fhir.ix_token (rkey, param, system, code) " +
                          "select 'Patient/early' || n, p, 'http://hl7.org/fhir/administrative-gender', 'male' from generate_series(1, 20) n, " +
                          "unnest(array['Patient.gender', 'Patient.active', 'Patient.phone', 'Patient.telecom', 'Patient.language']) p");
        await ScalarAsync("analyze fhir.ix_token, fhir.person_link");
        await ScalarAsync("alter table fhir.ix_token set (autovacuum_enabled = false)");
        for (var i = 0; i < 3; i++) Assert.Empty(await HeldElsewhereAsync(store, "0000"));

        await InsertIdentifiersAsync("MRN", 60000);
        await ScalarAsync("select pg_stat_statements_reset()");

        Assert.Equal([(System, "MRN4242")], await HeldElsewhereAsync(store, "MRN4242"));
        Assert.Empty(await HeldElsewhereAsync(store, "MRN-none"));

        // The probe of the values held elsewhere: a few index pages per call, not the 60,000 rows' hundreds of pages.
        // And not planned again for these values: the plan made while the table was small.
        await using var conn = new NpgsqlConnection(_pg.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(
            "select sum(calls)::int, sum(plans)::int, sum(shared_blks_hit + shared_blks_read)::int from pg_stat_statements where query like '%from fhir.ix_token t%'", conn);
        await using var reader = await cmd.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        Assert.Equal(2, reader.GetInt32(0));
        Assert.Equal(0, reader.GetInt32(1));
        Assert.InRange(reader.GetInt32(2), 2, 2 * 30);
    }
}
