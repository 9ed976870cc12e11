using System.Collections.Concurrent;

namespace PhrFhir.Validation;

/// <summary>
/// The families' warm-ups, one after another on one thread of their own.
/// </summary>
/// <remarks>
/// Why (docs/validation.md, "Start-up under load"): five families warming at once on thread-pool
/// threads, each blocking on Firely's <c>Task.Run</c>-and-wait for every resolver call, starved the
/// pool; on a loaded 2-core machine the pool grows by about one thread a second, so the first
/// answer waited 22–55 s. One dedicated thread leaves the pool to requests and uses at most one core,
/// and requests no longer wait for any warm-up.
/// </remarks>
internal sealed class WarmUpLine : IDisposable
{
    private readonly BlockingCollection<Action> _work = new();
    private readonly Thread _thread;

    public WarmUpLine()
    {
        _thread = new Thread(() =>
        {
            foreach (var warmUp in _work.GetConsumingEnumerable()) warmUp();
        })
        { IsBackground = true, Name = "PhrFhir validation warm-up", Priority = ThreadPriority.BelowNormal };
        _thread.Start();
    }

    public void Add(Action warmUp)
    {
        if (!_work.IsAddingCompleted) _work.Add(warmUp);
    }

    public void Dispose() => _work.CompleteAdding();
}
