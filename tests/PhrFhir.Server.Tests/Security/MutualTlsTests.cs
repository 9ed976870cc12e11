using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Hl7.Fhir.Model;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace PhrFhir.Server.Tests.Security;

/// <summary>
/// Mutual TLS for institution nodes (ATNA node authentication, RFC 8705): the client "test-mtls" is
/// registered with the SHA-256 thumbprint of the test PKI's ClientA certificate. Over the fixture's https
/// address it gets a certificate-bound token only with that certificate, and the token works only with it.
/// </summary>
[Collection("server")]
public sealed class MutualTlsTests(ServerFixture server)
{
    HttpClient Tls(X509Certificate2? certificate) => server.Pki.Client(server.HttpsUrl, certificate);

    static async Task<HttpResponseMessage> TokenAsync(HttpClient client)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "auth/token")
        {
            Content = new FormUrlEncodedContent(new Dictionary<string, string> { ["grant_type"] = "client_credentials" }),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{ServerFixture.MtlsClient}:{ServerFixture.Secret}")));
        return await client.SendAsync(request);
    }

    static HttpRequestMessage Search(string token)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "Patient?_count=1");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return request;
    }

    async Task<string> BoundTokenAsync()
    {
        using var a = Tls(server.Pki.ClientA);
        var response = await TokenAsync(a);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
    }

    [Fact]
    public async System.Threading.Tasks.Task The_registered_certificate_gets_a_bound_token_that_works_over_that_certificate()
    {
        var token = await BoundTokenAsync();
        var cnf = new JsonWebToken(token).GetPayloadValue<JsonElement>("cnf");
        Assert.Equal(Base64UrlEncoder.Encode(System.Security.Cryptography.SHA256.HashData(server.Pki.ClientA.RawData)), cnf.GetProperty("x5t#S256").GetString());
        using var a = Tls(server.Pki.ClientA);
        var response = await a.SendAsync(Search(token));
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    [Fact]
    public async System.Threading.Tasks.Task Without_its_certificate_or_with_another_the_client_gets_no_token()
    {
        using var none = Tls(null);
        using var other = Tls(server.Pki.ClientB);
        foreach (var (name, client) in new[] { ("no certificate", none), ("another certificate", other) })
        {
            var response = await TokenAsync(client);
            var body = await response.Content.ReadAsStringAsync();
            Assert.False(response.IsSuccessStatusCode, $"{name}: a token was issued");
            Assert.Equal("invalid_client", JsonDocument.Parse(body).RootElement.GetProperty("error").GetString());
        }
        // Nor over plain HTTP, where no certificate can be presented.
        Assert.False((await TokenAsync(server.Anonymous)).IsSuccessStatusCode);
    }

    [Fact]
    public async System.Threading.Tasks.Task A_bound_token_is_refused_without_its_certificate()
    {
        var token = await BoundTokenAsync();
        using var none = Tls(null);
        using var other = Tls(server.Pki.ClientB);
        foreach (var (name, client) in new[] { ("https without a certificate", none), ("https with another certificate", other), ("plain http", server.Anonymous) })
        {
            var response = await client.SendAsync(Search(token));
            Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{name}: {(int)response.StatusCode}");
            Assert.Equal(OperationOutcome.IssueType.Login, (await Fhir.ReadAsync<OperationOutcome>(response)).Issue[0].Code);
        }
    }

    [Fact]
    public async System.Threading.Tasks.Task Clients_without_a_registered_certificate_work_over_https_as_before()
    {
        using var none = Tls(null);
        // Asked for over https, where it is used: a token's issuer is the base URL it was issued at (Auth:Issuer unset).
        var issued = await none.SendAsync(ServerFixture.TokenRequest(ServerFixture.OperatorClient, ServerFixture.Secret));
        var body = await issued.Content.ReadAsStringAsync();
        Assert.True(issued.IsSuccessStatusCode, body);
        var token = JsonDocument.Parse(body).RootElement.GetProperty("access_token").GetString()!;
        Assert.Equal(HttpStatusCode.OK, (await none.SendAsync(Search(token))).StatusCode);
        Assert.True((await none.GetAsync(".well-known/smart-configuration")).IsSuccessStatusCode);
    }
}
