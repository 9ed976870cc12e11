using System.Collections.Concurrent;
using System.Globalization;
using Hl7.Fhir.Model;
using Hl7.Fhir.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PhrFhir.Server.Tests.Subscriptions;

/// <summary>
/// A rest-hook endpoint for the tests: Kestrel on 127.0.0.1 at a free port, recording every notification
/// Bundle it accepts. <see cref="Answer"/> sets the status it answers (503 = an outage: nothing is recorded).
/// </summary>
public sealed class NotificationReceiver : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly ConcurrentQueue<(DateTimeOffset At, Bundle Bundle)> _received = new();
    static readonly FhirJsonDeserializer Parser = new(new DeserializerSettings());

    /// <summary>The status answered to every notification (2xx: recorded).</summary>
    public int Answer { get; set; } = 200;
    /// <summary>The status answered to handshakes.</summary>
    public int HandshakeAnswer { get; set; } = 200;
    public string Endpoint { get; private set; } = "";

    NotificationReceiver(WebApplication app) => _app = app;

    public static async Task<NotificationReceiver> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var receiver = new NotificationReceiver(app);
        app.MapPost("/hook/{name}", async (HttpContext ctx) =>
        {
            var body = await new StreamReader(ctx.Request.Body).ReadToEndAsync();
            var bundle = (Bundle)Parser.DeserializeResource(body);
            var status = Status(bundle);
            var answer = Type(status) == "handshake" ? receiver.HandshakeAnswer : receiver.Answer;
            if (answer is >= 200 and < 300) receiver._received.Enqueue((DateTimeOffset.UtcNow, bundle));
            else Interlocked.Increment(ref receiver._refused);
            return Results.StatusCode(answer);
        });
        await app.StartAsync();
        receiver.Endpoint = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/') + "/hook/";
        return receiver;
    }

    public IReadOnlyList<(DateTimeOffset At, Bundle Bundle)> Received => [.. _received];

    int _refused;
    /// <summary>How many notifications were answered with a non-2xx status (an outage's attempts).</summary>
    public int Refused => Volatile.Read(ref _refused);

    /// <summary>The accepted notifications of one Subscription (its id), in arrival order.</summary>
    public List<Bundle> Of(string subscriptionId) =>
        Received.Select(r => r.Bundle).Where(b => Status(b).GetSingleValue<ResourceReference>("subscription")?.Reference?.EndsWith("/Subscription/" + subscriptionId, StringComparison.Ordinal) == true).ToList();

    public static Parameters Status(Bundle b) => (Parameters)b.Entry[0].Resource;
    public static string Type(Parameters status) => status.GetSingleValue<Code>("type")!.Value!;

    /// <summary>(event number, focus reference) of each notification-event of the event notifications, in arrival order.</summary>
    public List<(long Number, string? Focus)> Events(string subscriptionId) =>
        Of(subscriptionId).Select(Status).Where(s => Type(s) == "event-notification")
            .SelectMany(s => s.Parameter.Where(p => p.Name == "notification-event"))
            .Select(p => (long.Parse(((FhirString)p.Part.First(x => x.Name == "event-number").Value).Value, CultureInfo.InvariantCulture),
                          (p.Part.FirstOrDefault(x => x.Name == "focus")?.Value as ResourceReference)?.Reference)).ToList();

    /// <summary>Waits (up to <paramref name="seconds"/>) until <paramref name="done"/> holds.</summary>
    public static async Task<bool> WaitAsync(Func<bool> done, double seconds = 20)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < until)
        {
            if (done()) return true;
            await System.Threading.Tasks.Task.Delay(50);
        }
        return done();
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
