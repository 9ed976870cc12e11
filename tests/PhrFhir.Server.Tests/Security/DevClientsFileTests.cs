using Microsoft.AspNetCore.Identity;
using PhrFhir.Server.Security;

namespace PhrFhir.Server.Tests.Security;

/// <summary>examples/auth/clients.dev.json is what scripts/serve.sh and the README use: it must load, and its documented dev password must work.</summary>
public sealed class DevClientsFileTests
{
    static string DevFile() => Repository.File("examples", "auth", "clients.dev.json");

    [Fact]
    public void The_dev_person_signs_in_with_the_documented_password_through_the_dev_app()
    {
        var registry = ClientRegistry.Load(DevFile());
        var yamada = registry.FindPerson("yamada");
        Assert.NotNull(yamada);
        Assert.NotEqual(PasswordVerificationResult.Failed,
            new PasswordHasher<PersonRegistration>().VerifyHashedPassword(yamada, yamada.PasswordHash, "yamada-dev-password"));
        var app = registry.Find("dev-phr-app");
        Assert.NotNull(app);
        Assert.True(app.SignsInPersons);
        Assert.Contains("https://oauth.pstmn.io/v1/callback", app.RedirectUris);
    }

    [Theory]
    [InlineData("""{"clientId":"a","role":"operator","grantTypes":["authorization_code"],"redirectUris":["http://127.0.0.1/cb"],"scopes":"x"}""")]
    [InlineData("""{"clientId":"a","role":"person","grantTypes":["authorization_code"],"scopes":"x"}""")]
    [InlineData("""{"clientId":"a","role":"person","grantTypes":["authorization_code"],"redirectUris":["http://127.0.0.1/cb#f"],"scopes":"x"}""")]
    [InlineData("""{"clientId":"a","role":"person","grantTypes":["implicit"],"redirectUris":["http://127.0.0.1/cb"],"scopes":"x"}""")]
    [InlineData("""{"clientId":"a","role":"operator","scopes":"x"}""")]
    public void A_registration_that_could_not_work_safely_stops_the_start(string client)
    {
        var file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, $$"""{"clients":[{{client}}]}""");
            Assert.Throws<InvalidOperationException>(() => ClientRegistry.Load(file));
        }
        finally { File.Delete(file); }
    }
}
