using System.Diagnostics;
using Hl7.Fhir.Model;

namespace PhrFhir.Server.Tests;

/// <summary>
/// examples/quickstart/person-app.sh, the README's copy-paste quick start for a person's app, run as a user
/// runs it (bash, curl, openssl) against a started server: sign-in by code + PKCE, an HS037 pushed by ITI-65,
/// a broken one refused at its element, the person's documents listed and the new one retrieved byte for byte.
/// </summary>
[Collection("server")]
public sealed class QuickStartTests(ServerFixture server)
{
    [Fact]
    public async System.Threading.Tasks.Task The_person_app_quick_start_signs_in_pushes_an_HS037_and_finds_it()
    {
        // The person's Patient, registered by their checkup institution (README "Try it" does this for yamada).
        var request = new HttpRequestMessage(HttpMethod.Post, "Patient")
        {
            Content = Fhir.Json(new Patient { Identifier = [new Identifier("urn:oid:1.2.392.100495.20.3.51.11312345678", ServerFixture.PersonIdentifier)] }),
        };
        request.Headers.Add("If-None-Exist", $"identifier=urn:oid:1.2.392.100495.20.3.51.11312345678|{ServerFixture.PersonIdentifier}");
        var patient = await Fhir.ReadAsync<Patient>(await server.Http.SendAsync(request));

        var start = new ProcessStartInfo("bash", [Repository.File("examples", "quickstart", "person-app.sh")]) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["BASE"] = server.BaseUrl.AbsoluteUri.TrimEnd('/');
        start.Environment["CLIENT_ID"] = ServerFixture.WritingAppClient;
        start.Environment["REDIRECT_URI"] = ServerFixture.AppRedirectUri;
        start.Environment["PHR_USERNAME"] = ServerFixture.PersonUsername;
        start.Environment["PHR_PASSWORD"] = ServerFixture.PersonPassword;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(3));

        var lines = (await output).Split('\n');
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{await output}\n{await errors}");
        Assert.Contains($"signed in: Patient/{patient.Id}", lines);
        Assert.Contains(lines, l => l.StartsWith("pushed: DocumentReference/", StringComparison.Ordinal));
        // The broken report is refused at its Composition's type, the element the profile fixes.
        Assert.Contains("refused at: Bundle.entry[0].resource.type[0].coding[0].code[0]", lines);
        Assert.Contains(lines, l => l.StartsWith("listed: ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("retrieved: ", StringComparison.Ordinal) && l.EndsWith("(the same bytes)", StringComparison.Ordinal));
    }
}
