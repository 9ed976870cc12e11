using Microsoft.Extensions.Logging;
using PhrFhir.Server.Rest;

namespace PhrFhir.Server.Tests;

/// <summary>
/// The access log's console sink (AccessLogConsole): the simple console's one-line form, written in batches
/// by its own thread, nothing lost when the server stops, and only the access category.
/// </summary>
public sealed class AccessLogConsoleTests
{
    static (ILoggerFactory Factory, AccessLogConsole Sink, StringWriter Output) Start()
    {
        var output = new StringWriter();
        var sink = new AccessLogConsole(TextWriter.Synchronized(output));
        var factory = LoggerFactory.Create(l => l.AddProvider(sink).SetMinimumLevel(LogLevel.Information));
        return (factory, sink, output);
    }

    [Fact]
    public void Every_access_line_is_written_in_the_simple_console_form_by_the_time_the_server_stops()
    {
        var (factory, sink, output) = Start();
        var log = factory.CreateLogger(AccessLogConsole.Category);
        for (var i = 0; i < 5000; i++) log.Log(LogLevel.Information, new EventId(7), "GET /Patient/{{id}} 200 {0} ms client=c", i);
        factory.CreateLogger("PhrFhir.Errors").LogWarning("not an access line");
        sink.Dispose(); // what the host's container does when it stops (the server registers the sink by type)

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(5000, lines.Length);
        Assert.Equal("info: PhrFhir.Access[7] GET /Patient/{id} 200 0 ms client=c", lines[0]);
        Assert.Equal("info: PhrFhir.Access[7] GET /Patient/{id} 200 4999 ms client=c", lines[^1]);
        Assert.DoesNotContain(lines, l => l.Contains("not an access line", StringComparison.Ordinal));
    }

    [Fact]
    public async System.Threading.Tasks.Task A_line_reaches_the_console_within_a_flush_interval_without_waiting_for_more()
    {
        var (factory, sink, output) = Start();
        try
        {
            factory.CreateLogger(AccessLogConsole.Category).LogInformation("POST /Patient 201 3.1 ms client=c");
            for (var i = 0; i < 50 && output.ToString().Length == 0; i++) await System.Threading.Tasks.Task.Delay(AccessLogConsole.FlushInterval / 5);
            Assert.Equal("info: PhrFhir.Access[0] POST /Patient 201 3.1 ms client=c\n", output.ToString());
        }
        finally { sink.Dispose(); }
    }

    /// <summary>A console that takes the first write only after <see cref="Release"/>: a full pipe.</summary>
    sealed class StuckConsole : StringWriter
    {
        public readonly ManualResetEventSlim Writing = new(), Released = new();
        public void Release() => Released.Set();
        public override void Write(string? value) { Writing.Set(); Released.Wait(); base.Write(value); }
    }

    [Fact]
    public void A_console_that_stops_reading_holds_a_bounded_queue_and_is_told_how_many_lines_were_dropped()
    {
        var output = new StuckConsole();
        var sink = new AccessLogConsole(output);
        using var factory = LoggerFactory.Create(l => l.AddProvider(sink).SetMinimumLevel(LogLevel.Information));
        var log = factory.CreateLogger(AccessLogConsole.Category);
        log.LogInformation("first");
        Assert.True(output.Writing.Wait(TimeSpan.FromSeconds(10))); // the writer holds "first" and is stuck in the console
        for (var i = 0; i < AccessLogConsole.MaxQueuedLines + 5; i++) log.LogInformation("GET /Patient/{{id}} 200");
        output.Release();
        sink.Dispose();

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("info: PhrFhir.Access[0] first", lines[0]);
        Assert.Equal("warn: PhrFhir.Access[0] 5 access log lines were dropped: the console did not keep up.", lines[1]);
        Assert.Equal(2 + AccessLogConsole.MaxQueuedLines, lines.Length);
    }
}
