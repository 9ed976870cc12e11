using System.Diagnostics;
using System.Net;
using Hl7.Fhir.Model;
using Microsoft.Extensions.DependencyInjection;
using PhrFhir.Storage.Embedded;

namespace PhrFhir.Server.Tests;

/// <summary>
/// The embedded PostgreSQL killed under a running server (kill -9 of its postmaster, as the OOM killer
/// does): meanwhile requests are 503 with Retry-After and /readyz says so; the server restarts its
/// PostgreSQL by itself and answers again, with the data committed before.
/// </summary>
/// <remarks>
/// On the shared server: tests of the "server" collection run one at a time, so none sees the crash, and
/// the ones after it run on the recovered database. (A second server in the same process cannot be
/// started: the authorisation server's in-memory store is shared by name.)
/// </remarks>
[Collection("server")]
public sealed class DatabaseCrashTests(ServerFixture server)
{
    [Fact]
    public async System.Threading.Tasks.Task After_the_database_is_killed_requests_are_503_until_it_is_back_by_itself_with_the_data()
    {
        var family = Fhir.Unique("障害");
        var patient = await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = family }] })), HttpStatusCode.Created);
        var embedded = server.Postgres;
        var postmaster = embedded.PostmasterPid;

        Process.GetProcessById(postmaster).Kill();

        var seen = new List<string>();
        var sawUnavailable = false;
        var sawNotReady = false;
        var clock = Stopwatch.StartNew();
        HttpResponseMessage read;
        while (true)
        {
            read = await server.Http.GetAsync($"Patient/{patient.Id}");
            seen.Add(((int)read.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (read.StatusCode == HttpStatusCode.OK && sawUnavailable) break;
            Assert.True(read.StatusCode is HttpStatusCode.OK or HttpStatusCode.ServiceUnavailable, $"after {clock.Elapsed}: {string.Join(',', seen)}: {await read.Content.ReadAsStringAsync()}");
            if (read.StatusCode == HttpStatusCode.ServiceUnavailable)
            {
                sawUnavailable = true;
                Assert.Equal(TimeSpan.FromSeconds(5), read.Headers.RetryAfter?.Delta);
                var oo = await Fhir.ReadAsync<OperationOutcome>(read);
                Assert.Equal(OperationOutcome.IssueType.Transient, oo.Issue[0].Code);
                var ready = await server.Anonymous.GetAsync("readyz");
                if (ready.StatusCode == HttpStatusCode.ServiceUnavailable)
                {
                    sawNotReady = true;
                    Assert.NotNull(ready.Headers.RetryAfter);
                }
            }
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(90), $"not back within 90 s: {string.Join(',', seen)}");
            await System.Threading.Tasks.Task.Delay(50);
        }

        Assert.True(sawUnavailable, $"never saw a 503 while PostgreSQL was down: {string.Join(',', seen)}");
        Assert.True(sawNotReady, "/readyz never said the database was unreachable");
        // The supervisor notes the new postmaster's pid just after it accepts connections: a request may be first.
        for (var i = 0; i < 100 && embedded.PostmasterPid == postmaster; i++) await System.Threading.Tasks.Task.Delay(50);
        Assert.NotEqual(postmaster, embedded.PostmasterPid);
        Assert.Equal(family, (await Fhir.ReadAsync<Patient>(read)).Name[0].Family);
        Assert.Equal("ready", await (await server.Anonymous.GetAsync("readyz")).Content.ReadAsStringAsync());
        // Writes work again too.
        await Fhir.ExpectAsync<Patient>(await server.Http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = family }] })), HttpStatusCode.Created);
    }
}
