using System.Collections.Concurrent;

namespace PhrFhir.Validation;

/// <summary>
/// Work taken in order by threads of its own: the families' warm-ups (one thread, below normal priority) and
/// the validations themselves (one thread per core, <see cref="DocumentValidator"/>).
/// </summary>
/// <remarks>
/// Why (docs/validation.md, "Start-up under load"): five families warming at once on thread-pool
/// threads, each blocking on Firely's <c>Task.Run</c>-and-wait for every resolver call, starved the
/// pool; on a loaded 2-core machine the pool grows by about one thread a second, so the first
/// answer waited 22–55 s. One dedicated thread leaves the pool to requests and uses at most one core,
/// and requests no longer wait for any warm-up. Validations block the same way on the terminology calls
/// Firely still makes, so they too run off the pool, on threads started once (a new thread per
/// validation cost ~3 % of an ITI-65's thread time: docs/performance.md, "ITI-65").
/// </remarks>
internal sealed class WarmUpLine : IDisposable
{
    private readonly BlockingCollection<Action> _work = new();

    public WarmUpLine(int threads = 1, string name = "PhrFhir validation warm-up", ThreadPriority priority = ThreadPriority.BelowNormal)
    {
        for (var i = 0; i < threads; i++)
            new Thread(() =>
            {
                foreach (var work in _work.GetConsumingEnumerable()) work();
            })
            { IsBackground = true, Name = name, Priority = priority }.Start();
    }

    /// <summary>Queues the work; false once the line is disposed (the work will not run).</summary>
    public bool Add(Action work)
    {
        try { return _work.TryAdd(work); }
        catch (InvalidOperationException) { return false; } // disposed: adding completed
    }

    public void Dispose() => _work.CompleteAdding();
}
