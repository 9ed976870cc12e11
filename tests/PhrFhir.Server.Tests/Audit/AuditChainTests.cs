using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests.Audit;

/// <summary>
/// The audit trail is tamper-evident to anyone without the chain key, which never enters the database
/// (issue #11 finding 9, docs/audit.md "Threat model"); only the operator verifies it, incrementally or in
/// full (finding 4). Each case tampers as a database administrator would, with SQL alone, checks that
/// $verify-chain names the break, and puts the row back so the shared trail stays intact.
/// </summary>
[Collection("server")]
public sealed class AuditChainTests(ServerFixture server)
{
    readonly HttpClient _operator = server.Operator;
    FhirStore Store => server.Services.GetRequiredService<FhirStore>();

    async Task<OperationOutcome> VerifyAsync(bool full = true) =>
        await Fhir.ExpectAsync<OperationOutcome>(await _operator.GetAsync("AuditEvent/$verify-chain" + (full ? "?full=true" : "")), HttpStatusCode.OK);

    /// <summary>A fresh AuditEvent (a Patient's create, stored with it), sealed into the chain.</summary>
    async Task<string> SealedAuditAsync()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = Fhir.Unique("鎖") }] })), HttpStatusCode.Created);
        var found = await Fhir.ExpectAsync<Bundle>(await _operator.GetAsync($"AuditEvent?entity=Patient/{patient.Id}&action=C"), HttpStatusCode.OK);
        var id = Assert.Single(found.Entry).Resource.Id;
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity); // seals it
        return "AuditEvent/" + id;
    }

    async Task<int> SqlAsync(string sql, params object[] args)
    {
        await using var cmd = Store.DataSource.CreateCommand(sql);
        foreach (var a in args) cmd.Parameters.Add(new() { Value = a });
        return await cmd.ExecuteNonQueryAsync();
    }

    async System.Threading.Tasks.Task AssertBrokenAsync(string key, string because)
    {
        var broken = await VerifyAsync();
        Assert.True(broken.Issue[0].Severity == OperationOutcome.IssueSeverity.Error, $"{because}: {broken.Issue[0].Diagnostics}");
        if (key.Length > 0) Assert.Equal(key, broken.Issue[0].Expression.Single());
    }

    // Tampering a DBA can do with SQL: (what, the SQL).
    public static TheoryData<string, string> ColumnChanges => new()
    {
        { "the JSON rewritten", "update fhir.audit_event set json = replace(json, 'test-institution', 'someone-else') where id = $1" },
        { "moved out of the person's log", "update fhir.audit_event set person = 'nobody' where id = $1" },
        { "its outcome changed", "update fhir.audit_event set outcome = '4' where id = $1" },
        { "its entity changed (hidden from entity= searches)", "update fhir.audit_event set entity = array[]::text[] where id = $1" },
        { "its agent changed", "update fhir.audit_event set agent = array['urn:phrfhir:client|someone-else'] where id = $1" },
        { "its date moved", "update fhir.audit_event set recorded = recorded - interval '1 year' where id = $1" },
        // Recomputing every hash with SQL's own sha256() does not help without the key.
        { "rewritten and its MAC recomputed with sha256()", "update fhir.audit_event set json = replace(json, 'test-institution', 'someone-else'), row_mac = sha256(convert_to(replace(json, 'test-institution', 'someone-else'), 'UTF8')) where id = $1" },
    };

    [Theory]
    [MemberData(nameof(ColumnChanges))]
    public async System.Threading.Tasks.Task A_row_changed_with_SQL_is_found_at_that_row(string what, string tamper)
    {
        var key = await SealedAuditAsync();
        var saved = Assert.Single(await SaveAsync("id = $1", key));
        Assert.Equal(1, await SqlAsync(tamper, key));
        try { await AssertBrokenAsync(key, what); }
        finally
        {
            await SqlAsync("delete from fhir.audit_event where id = $1", key);
            await ReinsertAsync(saved);
        }
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);
    }

    [Fact]
    public async System.Threading.Tasks.Task Removing_a_row_from_the_middle_of_the_chain_is_found()
    {
        var key = await SealedAuditAsync();
        await SealedAuditAsync(); // key is no longer the newest
        await using var sealing = await HoldSealAsync();
        var saved = await SaveAsync("id = $1", key);
        Assert.Equal(1, await SqlAsync("delete from fhir.audit_event where id = $1", key));
        try { await AssertBrokenAsync("", "a row removed"); }
        finally { foreach (var row in saved) await ReinsertAsync(row); }
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);
    }

    [Fact]
    public async System.Threading.Tasks.Task Removing_the_newest_AuditEvents_is_found()
    {
        var key = await SealedAuditAsync();
        await using var sealing = await HoldSealAsync();
        // The end of the chain from that row on: what is left is a shorter chain, valid link by link.
        const string tail = "chain_pos >= (select chain_pos from fhir.audit_event where id = $1)";
        var saved = await SaveAsync(tail, key);
        Assert.Equal(saved.Count, await SqlAsync("delete from fhir.audit_event where " + tail, key));
        try { await AssertBrokenAsync("", "the newest rows removed"); }
        finally { foreach (var row in saved) await ReinsertAsync(row); }
        Assert.Equal(OperationOutcome.IssueSeverity.Information, (await VerifyAsync()).Issue[0].Severity);
    }

    /// <summary>Keeps the sealer away while rows are out (it would otherwise seal new events in their places).</summary>
    async Task<Npgsql.NpgsqlConnection> HoldSealAsync()
    {
        var conn = await Store.Sessions.OpenConnectionAsync(); // unpooled: the lock goes when this closes
        await using var cmd = new Npgsql.NpgsqlCommand($"select pg_advisory_lock({FhirStore.SealLock})", conn);
        await cmd.ExecuteNonQueryAsync();
        return conn; // closing the session releases the lock
    }

    [Fact]
    public async System.Threading.Tasks.Task Verification_goes_on_from_the_last_verified_point_unless_asked_for_a_full_check()
    {
        await SealedAuditAsync(); // a full verification: the verified point is now the head
        var incremental = await VerifyAsync(full: false);
        Assert.Equal(OperationOutcome.IssueSeverity.Information, incremental.Issue[0].Severity);
        Assert.Contains("from the last verified position", incremental.Issue[0].Diagnostics);
        Assert.Contains("from the start", (await VerifyAsync(full: true)).Issue[0].Diagnostics);
    }

    [Theory]
    [InlineData("test-person")]
    [InlineData("test-physician")]
    [InlineData("test-institution")]
    public async System.Threading.Tasks.Task Only_the_operator_verifies_the_trail(string client)
    {
        using var http = await server.ClientAsync(client);
        var response = await http.GetAsync("AuditEvent/$verify-chain");
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{client}: {(int)response.StatusCode} {body}");
        Assert.DoesNotContain("verified", body);
    }

    // Rows as stored, every column, to put back exactly.
    async Task<List<object[]>> SaveAsync(string where, string key)
    {
        await using var cmd = Store.DataSource.CreateCommand(
            "select seq, id, recorded, person, type_system, type_code, subtype, action, outcome, agent, altid, entity, json, row_mac, chain_pos, chain_mac from fhir.audit_event where " + where);
        cmd.Parameters.Add(new() { Value = key });
        await using var r = await cmd.ExecuteReaderAsync();
        var rows = new List<object[]>();
        while (await r.ReadAsync())
        {
            var values = new object[r.FieldCount];
            r.GetValues(values);
            rows.Add(values);
        }
        Assert.NotEmpty(rows);
        return rows;
    }

    System.Threading.Tasks.Task<int> ReinsertAsync(object[] saved) => SqlAsync(
        "insert into fhir.audit_event (seq, id, recorded, person, type_system, type_code, subtype, action, outcome, agent, altid, entity, json, row_mac, chain_pos, chain_mac) " +
        "values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)", saved);
}
