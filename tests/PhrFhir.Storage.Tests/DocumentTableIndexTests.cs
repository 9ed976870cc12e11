using System.Runtime.Versioning;
using Npgsql;
using PhrFhir.Storage.Search;

namespace PhrFhir.Storage.Tests;

/// <summary>
/// The document table belongs to Marten, which drops the mt_… indexes it was not told about each time the store opens;
/// the covering access index of Schema/005 (searches under an access filter join keys to it) must survive a restart.
/// </summary>
[UnsupportedOSPlatform("windows")]
public sealed class DocumentTableIndexTests : IAsyncLifetime
{
    OwnPostgres? _pg;

    public async Task InitializeAsync() => _pg = await OwnPostgres.StartAsync();

    public async Task DisposeAsync()
    {
        if (_pg is not null) await _pg.DisposeAsync();
    }

    async Task<string[]> DocumentIndexesAsync()
    {
        await using var conn = new NpgsqlConnection(_pg!.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand("select indexname from pg_indexes where schemaname = 'fhir' and tablename = 'mt_doc_resourcedocument' order by 1", conn);
        var names = new List<string>();
        await using var reader = await cmd.ExecuteReaderAsync();
        while (await reader.ReadAsync()) names.Add(reader.GetString(0));
        return [.. names];
    }

    [Fact]
    public async Task The_covering_access_index_survives_the_store_opening_again()
    {
        for (var open = 1; open <= 2; open++)
        {
            await using (await FhirStore.OpenAsync(_pg!.ConnectionString, SearchParameters.CreateDefault(), CancellationToken.None)) { }
            Assert.Contains("mt_doc_resourcedocument_access", await DocumentIndexesAsync());
        }
    }
    [Fact]
    public async Task The_deleted_column_has_no_index_of_its_own_and_one_made_by_earlier_versions_goes()
    {
        await using (await FhirStore.OpenAsync(_pg!.ConnectionString, SearchParameters.CreateDefault(), CancellationToken.None)) { }
        Assert.DoesNotContain("mt_doc_resourcedocument_idx_deleted", await DocumentIndexesAsync());
        await using (var conn = new NpgsqlConnection(_pg.ConnectionString))
        {
            await conn.OpenAsync();
            // What Marten's Duplicate made in databases written before (issue #12: no statement reads rows by it).
            await using var make = new NpgsqlCommand("create index mt_doc_resourcedocument_idx_deleted on fhir.mt_doc_resourcedocument (deleted)", conn);
            await make.ExecuteNonQueryAsync();
        }
        await using (await FhirStore.OpenAsync(_pg.ConnectionString, SearchParameters.CreateDefault(), CancellationToken.None)) { }
        var indexes = await DocumentIndexesAsync();
        Assert.DoesNotContain("mt_doc_resourcedocument_idx_deleted", indexes);
        Assert.Contains("mt_doc_resourcedocument_access", indexes);
        await using (var conn = new NpgsqlConnection(_pg.ConnectionString))
        {
            await conn.OpenAsync();
            await using var column = new NpgsqlCommand(
                "select is_nullable || ' ' || data_type from information_schema.columns where table_schema = 'fhir' and table_name = 'mt_doc_resourcedocument' and column_name = 'deleted'", conn);
            Assert.Equal("NO boolean", await column.ExecuteScalarAsync());
        }
    }
}
