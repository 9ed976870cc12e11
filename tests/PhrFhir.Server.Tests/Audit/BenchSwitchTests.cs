using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using PhrFhir.Server.Audit;

namespace PhrFhir.Server.Tests.Audit;

#if BENCH
/// <summary>
/// The Bench build (dotnet test -c Bench tests/PhrFhir.Server.Tests): Bench:AuthAndAuditOff is for
/// benchmarks on loopback only, anything else refuses to start.
/// </summary>
public sealed class BenchSwitchTests
{
    static bool Off(params (string Key, string Value)[] settings) => BenchSwitch.AuthAndAuditOff(
        new ConfigurationBuilder().AddInMemoryCollection(settings.Select(s => KeyValuePair.Create(s.Key, (string?)s.Value))).Build(), NullLogger.Instance);

    [Theory]
    [InlineData("http://0.0.0.0:8080")]
    [InlineData("http://+:8080")]
    [InlineData("http://*:8080")]
    [InlineData("http://192.0.2.10:8080")]
    [InlineData("http://127.0.0.1:8080;http://0.0.0.0:8081")]
    public void Off_is_refused_unless_every_address_is_loopback(string urls) =>
        Assert.Throws<InvalidOperationException>(() => Off((BenchSwitch.Key, "true"), ("urls", urls)));

    [Fact]
    public void Off_is_refused_when_the_addresses_are_not_known_to_be_loopback() =>
        Assert.Throws<InvalidOperationException>(() => Off((BenchSwitch.Key, "true")));

    [Theory]
    [InlineData("http://127.0.0.1:8080")]
    [InlineData("http://localhost:5000;http://[::1]:5001")]
    public void Off_is_allowed_on_loopback(string urls) => Assert.True(Off((BenchSwitch.Key, "true"), ("urls", urls)));

    [Fact]
    public void On_by_default() => Assert.False(Off(("urls", "http://0.0.0.0:8080")));

    [Fact]
    public async System.Threading.Tasks.Task The_server_refuses_to_start_with_it_on_a_public_address() =>
        await Assert.ThrowsAsync<InvalidOperationException>(() => PhrFhirApp.BuildAsync(["--Bench:AuthAndAuditOff", "true", "--urls", "http://0.0.0.0:0"]));
}
#else
/// <summary>
/// The server as built for use (Release, Debug) has no switch that turns authorisation off: asked for
/// Bench:AuthAndAuditOff it refuses to start, on loopback too (a server behind a reverse proxy listens
/// there), before it opens any storage.
/// </summary>
public sealed class BenchSwitchTests
{
    [Theory]
    [InlineData("http://127.0.0.1:0")]
    [InlineData("http://localhost:0")]
    [InlineData("http://0.0.0.0:0")]
    public async System.Threading.Tasks.Task A_server_not_built_for_benchmarks_refuses_to_start_with_authorisation_off(string urls)
    {
        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => PhrFhirApp.BuildAsync(["--Bench:AuthAndAuditOff", "true", "--urls", urls]));
        Assert.Contains("-c Bench", refused.Message, StringComparison.Ordinal);
    }
}
#endif
