using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

/// <summary>A bearer token of the development operator client (examples/auth/clients.dev.json), by client_credentials.</summary>
static class Token
{
    public static async Task<string> GetAsync(HttpClient http, CancellationToken ct)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "auth/token")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["grant_type"] = "client_credentials" }),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(Encoding.UTF8.GetBytes("kenshin-a:kenshin-a-secret-change-me")));
        var response = await http.SendAsync(request, ct);
        var body = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode) throw new InvalidOperationException($"token request failed: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
    }

    /// <summary>
    /// Peer mode: <c>--token</c> as given, or the trimmed standard output of <c>--token-command</c> (run by
    /// /bin/sh once), or null for a server without authorisation (HAPI's default image).
    /// </summary>
    public static async Task<string?> FromOptionsAsync(PhrFhir.Bench.BenchOptions o, CancellationToken ct)
    {
        if (o.TokenCommand is null) return o.Token;
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(o.TokenCommand);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("--token-command: could not start /bin/sh");
        var output = (await p.StandardOutput.ReadToEndAsync(ct)).Trim();
        await p.WaitForExitAsync(ct);
        if (p.ExitCode != 0 || output.Length == 0 || output.Any(char.IsWhiteSpace))
            throw new InvalidOperationException($"--token-command exited {p.ExitCode} and printed {(output.Length == 0 ? "nothing" : "more than one token")}");
        return output;
    }
}
