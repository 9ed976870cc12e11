using System.Net;
using System.Net.Http.Headers;
using Hl7.Fhir.Model;
using static PhrFhir.Server.Tests.Identity.PatientLinkTests;

namespace PhrFhir.Server.Tests.Identity;

/// <summary>
/// The person proves an institution's number by typing it (Patient/$link, docs/identity.md "Links"): guessing
/// is bounded — at most Identity:LinkAttempts:Limit (5) attempts without success per person in the window,
/// counted in PostgreSQL so that every server instance agrees — and a wrong number answers the same whether
/// or not anyone holds it.
/// </summary>
[Collection("server")]
public sealed class LinkThrottleTests(ServerFixture server)
{
    const string Client = "test-person-throttled";
    const string Value = "00099980"; // its actor identifier in PersonSystem
    const int Limit = 5; // Identity:LinkAttempts:Limit's default

    [Fact]
    public async System.Threading.Tasks.Task The_persons_link_attempts_are_bounded_across_instances_and_a_wrong_number_answers_alike_whether_it_exists()
    {
        var since = "ge" + Uri.EscapeDataString(DateTimeOffset.UtcNow.AddSeconds(-1).ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier(PersonSystem, Value)], BirthDate = BirthDate, Name = [new HumanName { Family = "試行" }] }),
        };
        request.Headers.TryAddWithoutValidation("If-None-Exist", $"identifier={PersonSystem}|{Value}");
        Assert.True((await server.Operator.SendAsync(request)).IsSuccessStatusCode);
        var system = "urn:test:throttle:" + Fhir.Unique();
        await InstitutionRecordAsync(server.Http, system, "RIGHT");
        await InstitutionRecordAsync(server.Http, system, "SOMEONE-ELSES", birthDate: "1990-01-01"); // exists, not theirs

        var token = await server.TokenAsync(Client);
        await using var second = await server.StartInstanceAsync(); // another server process on the same database
        async Task<HttpResponseMessage> LinkAsync(HttpClient via, string number)
        {
            var message = new HttpRequestMessage(HttpMethod.Post, "Patient/$link") { Content = Link(("identifier", new Identifier(system, number))) };
            message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            return await via.SendAsync(message);
        }

        // A wrong number: the same answer whether someone holds it or nobody does.
        var unknown = await Fhir.ExpectAsync<OperationOutcome>(await LinkAsync(server.Anonymous, "NO-SUCH"), HttpStatusCode.NotFound);
        var existing = await Fhir.ExpectAsync<OperationOutcome>(await LinkAsync(server.Anonymous, "SOMEONE-ELSES"), HttpStatusCode.NotFound);
        Assert.Equal(unknown.Issue[0].Diagnostics, existing.Issue[0].Diagnostics);
        Assert.Equal(unknown.Issue[0].Code, existing.Issue[0].Code);
        // Below the limit the right number links (and a success does not count).
        await Fhir.ExpectAsync<Parameters>(await LinkAsync(server.Anonymous, "RIGHT"), HttpStatusCode.OK);
        // The other instance counts the same attempts: 2 + 2 + 1 = the limit.
        for (var i = 0; i < 2; i++)
            await Fhir.ExpectAsync<OperationOutcome>(await LinkAsync(second.Anonymous, "GUESS-" + i), HttpStatusCode.NotFound);
        await Fhir.ExpectAsync<OperationOutcome>(await LinkAsync(server.Anonymous, "GUESS-2"), HttpStatusCode.NotFound);

        // Past the limit: 429 with Retry-After, whatever the number and whichever instance.
        foreach (var (via, number) in new[] { (server.Anonymous, "GUESS-3"), (second.Anonymous, "RIGHT"), (server.Anonymous, "RIGHT") })
        {
            var response = await LinkAsync(via, number);
            var throttled = await Fhir.ExpectAsync<OperationOutcome>(response, HttpStatusCode.TooManyRequests);
            Assert.Equal(OperationOutcome.IssueType.Throttled, throttled.Issue[0].Code);
            Assert.Matches("[\u3040-\u30ff]", throttled.Issue[0].Diagnostics);
            var wait = response.Headers.RetryAfter?.Delta;
            Assert.True(wait > TimeSpan.Zero && wait <= TimeSpan.FromMinutes(15), $"Retry-After {wait}");
        }

        // Failures and the throttle are audited, as the person's requests.
        var audited = await PhrFhir.Server.Tests.Audit.PersonAccessLogTests.PollAsync(server.Operator, $"outcome=4&date={since}&_count=500",
            found => found.Count(a => PhrFhir.Server.Tests.Audit.PersonAccessLogTests.ClientOf(a) == Client && a.OutcomeDesc?.Contains("(番号の入力回数") == true) >= 3);
        var mine = audited.Where(a => PhrFhir.Server.Tests.Audit.PersonAccessLogTests.ClientOf(a) == Client).ToList();
        Assert.True(mine.Count(a => a.OutcomeDesc?.Contains("(番号の入力回数") == true) >= 3, "throttled attempts audited");
        Assert.True(mine.Count(a => a.OutcomeDesc == unknown.Issue[0].Diagnostics) >= Limit, "failed attempts audited");
    }
}
