using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests;

/// <summary>
/// The request pool hands its connections back without Npgsql's reset (FhirStore.ForRequests, issue #12): that is
/// only safe while nothing a request runs leaves session state behind, and everything that holds session state
/// (the change LISTEN, the deliverer's and the start-up's session advisory locks) lives on the resetting
/// Sessions pool.
/// </summary>
[Collection("server")]
public sealed class ConnectionPoolTests(ServerFixture server)
{
    readonly HttpClient _http = server.Http;

    FhirStore Store => server.Services.GetRequiredService<FhirStore>();

    sealed record SessionState(int Pid, int Listening, int AdvisoryLocks, string PlanCacheMode, bool InTransaction);

    static async Task<SessionState> StateOfAsync(NpgsqlConnection conn)
    {
        await using var cmd = new NpgsqlCommand(
            "select pg_backend_pid(), (select count(*)::int from pg_listening_channels()), " +
            "(select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()), " +
            "current_setting('plan_cache_mode'), txid_current_if_assigned() is not null", conn);
        await using var reader = await cmd.ExecuteReaderAsync();
        await reader.ReadAsync();
        return new(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt32(2), reader.GetString(3), reader.GetBoolean(4));
    }

    [Fact]
    public async System.Threading.Tasks.Task Request_connections_come_back_from_the_pool_without_listeners_locks_or_changed_settings()
    {
        // Paths that take a transaction-level advisory lock (a Patient's identifier), search (planned for its
        // values), read, and a transaction that fails and is rolled back.
        var system = "urn:test:pool:" + Fhir.Unique();
        var patient = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Identifier = [new Identifier(system, "1")],
            Name = [new HumanName { Family = Fhir.Unique("プール") }],
        })), HttpStatusCode.Created);
        await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?identifier={system}|1&_total=accurate"), HttpStatusCode.OK);
        await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{patient.Id}"), HttpStatusCode.OK);
        var failing = new Bundle
        {
            Type = Bundle.BundleType.Transaction,
            Entry =
            [
                new() { Resource = new Patient { Identifier = [new Identifier(system, "2")] }, Request = new() { Method = Bundle.HTTPVerb.POST, Url = "Patient" } },
                new() { Request = new() { Method = Bundle.HTTPVerb.PUT, Url = $"Patient/{patient.Id}", IfMatch = "W/\"99\"" }, Resource = new Patient { Id = patient.Id } },
            ],
        };
        Assert.False((await _http.PostAsync("", Fhir.Json(failing))).IsSuccessStatusCode);

        // Every idle connection of the request pool (it hands idle ones out before opening new ones).
        var held = new List<NpgsqlConnection>();
        try
        {
            for (var i = 0; i < 30; i++) held.Add(await Store.DataSource.OpenConnectionAsync());
            var states = new List<SessionState>();
            foreach (var conn in held) states.Add(await StateOfAsync(conn));
            Assert.All(states, s =>
            {
                Assert.Equal(0, s.Listening);
                Assert.Equal(0, s.AdvisoryLocks);
                Assert.Equal("force_custom_plan", s.PlanCacheMode);
                Assert.False(s.InTransaction);
            });

            // The server's own session state is on connections of the other pool: the Consent cache's LISTEN
            // and every session advisory lock (the subscription deliverer's lead) are held by none of these.
            await using var look = await Store.Sessions.OpenConnectionAsync();
            await using var cmd = new NpgsqlCommand(
                "select pid from pg_locks where locktype = 'advisory' and granted and database = (select oid from pg_database where datname = current_database()) " +
                "union select pid from pg_stat_activity where query ilike 'listen %' and datname = current_database()", look);
            var holders = new List<int>();
            // The Consent cache listens for the whole life of the server; after another test restarts PostgreSQL
            // it listens again within its reconnect delay, so look for up to 15 s.
            for (var tries = 0; holders.Count == 0 && tries < 30; tries++)
            {
                if (tries > 0) await System.Threading.Tasks.Task.Delay(500);
                await using var reader = await cmd.ExecuteReaderAsync();
                while (await reader.ReadAsync()) holders.Add(reader.GetInt32(0));
            }
            Assert.NotEmpty(holders);
            Assert.DoesNotContain(states, s => holders.Contains(s.Pid));
        }
        finally
        {
            foreach (var conn in held) await conn.DisposeAsync();
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Session_state_taken_on_a_sessions_connection_ends_when_it_closes()
    {
        int pid;
        await using (var conn = await Store.Sessions.OpenConnectionAsync())
        {
            await using var cmd = new NpgsqlCommand("select pg_backend_pid(), pg_advisory_lock(7262999); listen pool_test", conn);
            pid = (int)(await cmd.ExecuteScalarAsync())!;
        }
        // Unpooled: the session ends with the connection (its backend exits a moment later).
        await using var look = await Store.DataSource.OpenConnectionAsync();
        await using var cmd2 = new NpgsqlCommand($"select (select count(*)::int from pg_stat_activity where pid = {pid}) + (select count(*)::int from pg_locks where locktype = 'advisory' and objid = 7262999)", look);
        var left = -1;
        for (var i = 0; i < 50 && left != 0; i++)
        {
            left = (int)(await cmd2.ExecuteScalarAsync())!;
            if (left != 0) await System.Threading.Tasks.Task.Delay(100);
        }
        Assert.Equal(0, left);
    }
}
