using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

/// <summary>A bearer token of the development operator client (examples/auth/clients.dev.json), by client_credentials.</summary>
// Linked by the MatchBench and Iti67Bench projects: what needs BenchOptions is in PeerToken.cs.
static partial class Token
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
}
