using System.Net;
using Hl7.Fhir.Model;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PhrFhir.Storage;

namespace PhrFhir.Server.Tests;

/// <summary>
/// What the server logs: an expected refusal (4xx) is no error and carries no stack; a fault of ours
/// (500) is one error line with its stack; every request leaves one access line that says nothing about
/// the person (no query values, no ids).
/// </summary>
[Collection("server")]
public sealed class LoggingTests(ServerFixture server)
{
    readonly HttpClient _http = server.Operator;

    /// <summary>The lines logged since <paramref name="from"/>, once <paramref name="accessLines"/> access lines are among them.</summary>
    async Task<List<LogCapture.Line>> LinesSinceAsync(int from, int accessLines)
    {
        for (var i = 0; i < 50; i++)
        {
            var lines = server.Logs.Lines.Skip(from).ToList();
            if (lines.Count(l => l.Category == "PhrFhir.Access") >= accessLines) return lines;
            await System.Threading.Tasks.Task.Delay(100); // the access line is written as the response completes
        }
        return [.. server.Logs.Lines.Skip(from)];
    }

    static bool HasStack(LogCapture.Line l) => l.Exception is not null || l.Message.Contains("   at ", StringComparison.Ordinal);

    [Fact]
    public async System.Threading.Tasks.Task A_404_a_400_and_a_422_leave_no_error_line_and_no_stack()
    {
        var patient = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient
        {
            Name = [new HumanName { Family = Fhir.Unique("ログ") }, new HumanName { Family = Fhir.Unique("ログ") }],
        })), HttpStatusCode.Created);
        var from = server.Logs.Lines.Count;

        await Fhir.ExpectAsync<OperationOutcome>(await _http.GetAsync($"Patient/{Guid.NewGuid()}"), HttpStatusCode.NotFound);
        await Fhir.ExpectAsync<OperationOutcome>(await _http.PostAsync("Patient", Fhir.Json("{\"resourceType\":\"Patient\",\"gender\":\"robot\"}")), HttpStatusCode.BadRequest);
        // A FHIRPath Patch whose path matches both names: 422.
        var patch = new HttpRequestMessage(HttpMethod.Patch, $"Patient/{patient.Id}")
        {
            Content = Fhir.Json("{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"operation\",\"part\":[{\"name\":\"type\",\"valueCode\":\"replace\"},{\"name\":\"path\",\"valueString\":\"Patient.name.family\"},{\"name\":\"value\",\"valueString\":\"x\"}]}]}"),
        };
        await Fhir.ExpectAsync<OperationOutcome>(await _http.SendAsync(patch), HttpStatusCode.UnprocessableEntity);

        var lines = await LinesSinceAsync(from, 3);
        Assert.DoesNotContain(lines, l => l.Level >= LogLevel.Error);
        Assert.DoesNotContain(lines, HasStack);
        Assert.DoesNotContain(lines, l => l.Message.Contains("An unhandled exception", StringComparison.Ordinal));
        // The refusals are there for whoever turns on debug logging, one line each.
        Assert.Equal(3, lines.Count(l => l.Category == "PhrFhir.Errors" && l.Level == LogLevel.Debug));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_fault_of_the_server_is_one_error_line_with_its_stack()
    {
        // A stored Patient whose JSON the server cannot read back (written past the server, as a damaged
        // row would be): an XML read must parse it, and fails.
        var id = Guid.NewGuid().ToString();
        var marten = server.Services.GetRequiredService<FhirStore>().Marten;
        await using (var session = marten.LightweightSession())
        {
            session.Store(new ResourceDocument
            {
                Id = ResourceDocument.Key("Patient", id),
                ResourceType = "Patient",
                Version = 1,
                LastUpdated = DateTimeOffset.UtcNow,
                Json = "{\"resourceType\":\"Patient\",\"id\":\"" + id + "\",\"nickname\":\"not FHIR\"}",
            });
            await session.SaveChangesAsync();
        }
        var from = server.Logs.Lines.Count;

        HttpResponseMessage response;
        try
        {
            response = await _http.GetAsync($"Patient/{id}?_format=xml");
        }
        finally
        {
            // Other tests share the database: the damaged row goes again.
            await using var session = marten.LightweightSession();
            session.Delete<ResourceDocument>(ResourceDocument.Key("Patient", id));
            await session.SaveChangesAsync();
        }
        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        var text = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain("nickname", text, StringComparison.Ordinal); // the exception stays in the log

        var lines = await LinesSinceAsync(from, 1);
        var error = Assert.Single(lines, l => l.Level >= LogLevel.Error);
        Assert.Equal("PhrFhir.Errors", error.Category);
        Assert.NotNull(error.Exception);
        Assert.Contains("   at ", error.Exception!.ToString(), StringComparison.Ordinal);
        var access = Assert.Single(lines, l => l.Category == "PhrFhir.Access");
        Assert.Contains(" 500 ", access.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async System.Threading.Tasks.Task Each_request_leaves_one_access_line_with_its_route_template_and_nothing_personal()
    {
        var family = Fhir.Unique("アクセス");
        var from = server.Logs.Lines.Count;

        var patient = await Fhir.ExpectAsync<Patient>(await _http.PostAsync("Patient", Fhir.Json(new Patient { Name = [new HumanName { Family = family }] })), HttpStatusCode.Created);
        await Fhir.ExpectAsync<Bundle>(await _http.GetAsync($"Patient?family={Uri.EscapeDataString(family)}&birthdate=1980-04-01"), HttpStatusCode.OK);
        await Fhir.ExpectAsync<Patient>(await _http.GetAsync($"Patient/{patient.Id}"), HttpStatusCode.OK);
        await Fhir.ExpectAsync<OperationOutcome>(await server.Anonymous.GetAsync($"Patient/{patient.Id}"), HttpStatusCode.Unauthorized);

        var access = (await LinesSinceAsync(from, 4)).Where(l => l.Category == "PhrFhir.Access").ToList();
        Assert.Equal(4, access.Count);
        Assert.All(access, l => Assert.Equal(LogLevel.Information, l.Level));
        Assert.Equal($"POST /Patient 201", Prefix(access[0]));
        Assert.Equal($"GET /Patient 200", Prefix(access[1]));
        Assert.Equal("GET /Patient/{id} 200", Prefix(access[2]));
        Assert.Equal("GET /Patient/{id} 401", Prefix(access[3]));
        Assert.All(access[..3], l => Assert.EndsWith("client=" + ServerFixture.OperatorClient, l.Message, StringComparison.Ordinal));
        Assert.EndsWith("client=-", access[3].Message, StringComparison.Ordinal);
        foreach (var personal in new[] { family, Uri.EscapeDataString(family), "1980-04-01", patient.Id!, "family=" })
            Assert.All(access, l => Assert.DoesNotContain(personal, l.Message, StringComparison.Ordinal));
    }

    static string Prefix(LogCapture.Line l) => string.Join(' ', l.Message.Split(' ').Take(3));
}
