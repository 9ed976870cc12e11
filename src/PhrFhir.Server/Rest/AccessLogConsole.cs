using System.Collections.Concurrent;
using System.Text;

namespace PhrFhir.Server.Rest;

/// <summary>
/// The console sink of the access log (category <c>PhrFhir.Access</c> only; every other category stays on the
/// simple console logger): lines in the simple console's single-line form, written in batches. The console
/// logger hands each line to its writer thread under a lock and wakes it (Monitor.PulseAll), and that thread
/// writes and flushes one line at a time: at one line per request this was a third of a read's managed CPU
/// (docs/performance.md, "Read"). Here a request only formats its line and adds it to a lock-free queue; a
/// writer thread wakes every <see cref="FlushInterval"/> (or early when <see cref="EarlyFlushLines"/> wait)
/// and writes what has gathered in one call. A line reaches the console at most that much later; lines still
/// queued are written when the server stops (a process killed outright loses at most that interval's lines).
/// Levels come from the usual configuration: <c>Logging:LogLevel:PhrFhir.Access</c> (or, for this sink alone,
/// <c>Logging:AccessConsole:LogLevel:PhrFhir.Access</c>).
/// </summary>
[ProviderAlias("AccessConsole")]
public sealed class AccessLogConsole : ILoggerProvider
{
    public const string Category = "PhrFhir.Access";
    public static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);
    const int EarlyFlushLines = 1024;
    // A console that stops reading (a full pipe) must not grow the queue without end: beyond this many waiting
    // lines new ones are dropped and counted, and the count is written when the console takes lines again.
    public const int MaxQueuedLines = 100_000;

    readonly ConcurrentQueue<string> _lines = new();
    readonly SemaphoreSlim _wake = new(0);
    readonly TextWriter _out;
    readonly Thread _writer;
    volatile bool _stopping;
    int _queued;
    long _dropped;

    public AccessLogConsole() : this(Console.Out) { }

    public AccessLogConsole(TextWriter output)
    {
        _out = output;
        _writer = new Thread(WriteLoop) { IsBackground = true, Name = "Access log console writer" };
        _writer.Start();
    }

    /// <summary>Sends the access category here and keeps it off the simple console logger.</summary>
    public static void Add(ILoggingBuilder logging)
    {
        logging.Services.AddSingleton<ILoggerProvider, AccessLogConsole>();
        logging.AddFilter<Microsoft.Extensions.Logging.Console.ConsoleLoggerProvider>(Category, LogLevel.None);
    }

    public ILogger CreateLogger(string categoryName) =>
        categoryName == Category ? new Logger(this) : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    void Enqueue(string line)
    {
        if (Volatile.Read(ref _queued) >= MaxQueuedLines) { Interlocked.Increment(ref _dropped); return; }
        _lines.Enqueue(line);
        if (Interlocked.Increment(ref _queued) == EarlyFlushLines) _wake.Release();
    }

    void WriteLoop()
    {
        var batch = new StringBuilder();
        while (true)
        {
            _wake.Wait(FlushInterval);
            var last = _stopping;
            if (Interlocked.Exchange(ref _dropped, 0) is > 0 and var dropped)
                batch.Append($"warn: {Category}[0] {dropped} access log lines were dropped: the console did not keep up.\n");
            while (_lines.TryDequeue(out var line))
            {
                Interlocked.Decrement(ref _queued);
                batch.Append(line).Append('\n');
            }
            if (batch.Length > 0)
            {
                try { _out.Write(batch.ToString()); _out.Flush(); }
                catch (IOException) { } // stdout closed: the lines are lost, the server goes on
                batch.Clear();
            }
            if (last) return;
        }
    }

    public void Dispose()
    {
        if (_stopping) return;
        _stopping = true;
        _wake.Release();
        _writer.Join(TimeSpan.FromSeconds(5));
    }

    sealed class Logger(AccessLogConsole sink) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            // The simple console's single-line form: "info: PhrFhir.Access[id] GET /Patient/{id} 200 1.2 ms client=…".
            var line = $"{Level(logLevel)}: {Category}[{eventId.Id}] {formatter(state, exception)}";
            sink.Enqueue(exception is null ? line : line + " " + exception.ToString().ReplaceLineEndings(" "));
        }

        static string Level(LogLevel level) => level switch
        {
            LogLevel.Trace => "trce",
            LogLevel.Debug => "dbug",
            LogLevel.Information => "info",
            LogLevel.Warning => "warn",
            LogLevel.Error => "fail",
            _ => "crit",
        };
    }
}
